package control

import (
	"os"
	"strconv"
	"strings"
)

type procStat struct {
	rss int64   // bytes
	cpu float64 // seconds, user + system
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc.
const clockTicks = 100

// readProcStat reads a process's CPU time and resident size from
// /proc/PID/stat.
func readProcStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after its last ')' start with field 3, the state.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 {
		return procStat{}, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	rss, err3 := strconv.ParseInt(f[21], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, false
	}
	return procStat{rss: rss * int64(os.Getpagesize()), cpu: float64(utime+stime) / clockTicks}, true
}
