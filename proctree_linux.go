package recluster

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// procTree is a snapshot of every process's parent. Servers that fork
// (gunicorn's arbiter, `npm start`, a shell) do their serving in children,
// so what a worker is and holds is its whole tree. The kernel has no cheap
// list of a process's children unless it was built with
// CONFIG_PROC_CHILDREN, so the tree is found from every process's parent
// in /proc/*/stat: the accept watcher shares one snapshot among all the
// workers it looks at, and reads it again at most every acceptPollMax.
type procTree struct {
	children map[int][]int
	taken    time.Time
}

// descendants returns the processes descended from pid, as the snapshot
// knows them; it reads the snapshot again when it is older than
// acceptPollMax at now.
func (t *procTree) descendants(pid int, now time.Time) []int {
	if t.children == nil || now.Sub(t.taken) >= acceptPollMax {
		t.children, t.taken = readChildren(), now
	}
	tree := append([]int(nil), t.children[pid]...)
	for i := 0; i < len(tree); i++ {
		tree = append(tree, t.children[tree[i]]...)
	}
	return tree
}

// readChildren maps every process to its children.
func readChildren() map[int][]int {
	children := map[int][]int{}
	dir, err := os.Open("/proc")
	if err != nil {
		return children
	}
	names, _ := dir.Readdirnames(-1)
	dir.Close()
	buf := make([]byte, statBufSize)
	for _, name := range names {
		child, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if ppid, ok := statInt(readStat(child, buf), statPPID); ok {
			children[int(ppid)] = append(children[int(ppid)], child)
		}
	}
	return children
}

// statBufSize holds any /proc/PID/stat line: 52 numbers and a command name
// of at most 64 bytes.
const statBufSize = 1024

// Fields of /proc/PID/stat, numbered as in proc(5).
const (
	statPPID  = 4
	statUtime = 14
	statStime = 15
	statRSS   = 24
)

// readStat reads /proc/PID/stat into buf and returns what it holds, or nil
// if the process has gone. It allocates nothing of its own: it runs for
// every process on the machine.
func readStat(pid int, buf []byte) []byte {
	fd, err := syscall.Open("/proc/"+strconv.Itoa(pid)+"/stat", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer syscall.Close(fd)
	n, err := syscall.Read(fd, buf)
	if err != nil || n <= 0 {
		return nil
	}
	return buf[:n]
}

// statInt returns field n (n >= 3, as numbered in proc(5)) of a stat line.
// The command name, field 2, may hold spaces and parentheses, so the
// fields are counted from its closing parenthesis, the last one.
func statInt(stat []byte, n int) (int64, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	rest := stat[i+1:]
	for field := 3; ; field++ {
		rest = bytes.TrimLeft(rest, " ")
		end := bytes.IndexByte(rest, ' ')
		if end < 0 {
			end = len(rest)
		}
		if field == n {
			v, err := strconv.ParseInt(string(bytes.TrimSpace(rest[:end])), 10, 64)
			return v, err == nil
		}
		if end == len(rest) {
			return 0, false
		}
		rest = rest[end:]
	}
}
