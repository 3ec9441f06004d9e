package recluster

import (
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat; the kernel
// reports them in USER_HZ, which is 100 on every Linux architecture.
const userHZ = 100

// procUsage reads a process's resident memory and the CPU time it has used.
func procUsage(pid int) (rssBytes int64, cpu time.Duration, ok bool) {
	fields, ok := statFields(pid)
	// utime, stime and rss are fields 14, 15 and 24 of proc(5).
	if !ok || len(fields) < 22 {
		return 0, 0, false
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	rssPages, err3 := strconv.ParseInt(fields[21], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, false
	}
	cpu = time.Duration(utime+stime) * time.Second / userHZ
	return rssPages * int64(os.Getpagesize()), cpu, true
}
