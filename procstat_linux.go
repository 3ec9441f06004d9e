package recluster

import (
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat; the kernel
// reports them in USER_HZ, which is 100 on every Linux architecture.
const userHZ = 100

// treeUsage reads, for each pid, the resident memory and CPU time of its
// whole process tree: a server that forks (gunicorn, `npm start`) holds
// its memory and spends its CPU in its children.
func treeUsage(pids []int) []procFigures {
	tree := treeReader()
	out := make([]procFigures, len(pids))
	for i, pid := range pids {
		for j, p := range tree(pid) {
			rss, cpu, ok := procUsage(p)
			if !ok {
				if j == 0 {
					break // the worker itself is gone
				}
				continue // a child that exited meanwhile
			}
			out[i].rssBytes += rss
			out[i].cpu += cpu
			out[i].ok = true
		}
	}
	return out
}

// procUsage reads one process's resident memory and the CPU time it and
// the children it has reaped have used.
func procUsage(pid int) (rssBytes int64, cpu time.Duration, ok bool) {
	fields, ok := statFields(pid)
	// utime, stime, cutime, cstime and rss are fields 14 to 17 and 24 of
	// proc(5).
	if !ok || len(fields) < 22 {
		return 0, 0, false
	}
	var ticks int64
	for _, f := range fields[11:15] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		ticks += n
	}
	rssPages, err := strconv.ParseInt(fields[21], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	cpu = time.Duration(ticks) * time.Second / userHZ
	return rssPages * int64(os.Getpagesize()), cpu, true
}
