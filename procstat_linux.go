package recluster

import (
	"os"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat; the kernel
// reports them in USER_HZ, which is 100 on every Linux architecture.
const userHZ = 100

// treeUsage reads, for each pid, the resident memory and CPU time of its
// whole process tree: a server that forks (gunicorn, `npm start`) holds
// its memory and spends its CPU in its children.
func treeUsage(pids []int) []procFigures {
	r := newProcFS()
	out := make([]procFigures, len(pids))
	for i, pid := range pids {
		for j, p := range r.tree(pid) {
			rss, cpu, ok := r.usage(p)
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

// usage reads one process's resident memory and the CPU time it and the
// children it has reaped have used.
func (r *procFS) usage(pid int) (rssBytes int64, cpu time.Duration, ok bool) {
	st, ok := r.stat(pid)
	if !ok {
		return 0, 0, false
	}
	return st.rssPages * int64(os.Getpagesize()), time.Duration(st.cpuTicks) * time.Second / userHZ, true
}
