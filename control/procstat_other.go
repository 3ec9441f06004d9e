//go:build !linux

package control

type procStat struct {
	rss int64
	cpu float64
}

// readProcStat has no /proc to read on this system.
func readProcStat(pid int) (procStat, bool) { return procStat{}, false }
