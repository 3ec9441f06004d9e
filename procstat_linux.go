package recluster

import (
	"os"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat; the kernel
// reports them in USER_HZ, which is 100 on every Linux architecture.
const userHZ = 100

// procUsage reads a process's resident memory and the CPU time it has used.
func procUsage(pid int) (rssBytes int64, cpu time.Duration, ok bool) {
	var buf [statBufSize]byte
	stat := readStat(pid, buf[:])
	utime, ok1 := statInt(stat, statUtime)
	stime, ok2 := statInt(stat, statStime)
	rssPages, ok3 := statInt(stat, statRSS)
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, false
	}
	cpu = time.Duration(utime+stime) * time.Second / userHZ
	return rssPages * int64(os.Getpagesize()), cpu, true
}
