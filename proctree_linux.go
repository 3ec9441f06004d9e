package recluster

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Servers that fork (gunicorn's arbiter, `npm start`, a shell) do their
// serving in children, so what a worker is and holds is its whole tree.

// procFS reads the small files and directories of /proc through buffers
// it keeps, with a few system calls per process and next to no garbage:
// status, `recluster top` and every metrics scrape read each worker's
// tree, and on a master whose live heap is about a megabyte, garbage of
// the order of the heap is what its resident memory grows by. One procFS
// serves one goroutine.
type procFS struct {
	file  []byte // the contents of the last file read
	link  []byte // the target of the last link read
	dents []byte // directory entries, getdents64's format
	path  []byte
	pids  []int // the last tree returned
	tids  []int
	fds   []int
	// table is set when the kernel lacks the children files: the parents
	// of every process, read at once.
	table procTable
}

func newProcFS() *procFS {
	r := &procFS{file: make([]byte, 0, 1024), link: make([]byte, 0, 128), dents: make([]byte, 8192), path: make([]byte, 0, 64)}
	if !haveChildrenFiles() {
		r.table = r.readProcTable()
	}
	return r
}

// threads lists pid's threads into r.tids, which it returns; the slice is
// valid until the next call.
func (r *procFS) threads(pid int) ([]int, error) {
	r.tids = r.tids[:0]
	err := r.numericEntries(r.procPath(pid, 0, "/task"), func(tid int) { r.tids = append(r.tids, tid) })
	return r.tids, err
}

var haveChildrenFiles = sync.OnceValue(func() bool {
	var st unix.Stat_t
	return unix.Stat("/proc/thread-self/children", &st) == nil
})

// procPath is /proc/PID, or /proc/PID/task/TID when tid is not 0,
// followed by rest.
func (r *procFS) procPath(pid, tid int, rest string) string {
	r.path = append(r.path[:0], "/proc/"...)
	r.path = strconv.AppendInt(r.path, int64(pid), 10)
	if tid != 0 {
		r.path = append(r.path, "/task/"...)
		r.path = strconv.AppendInt(r.path, int64(tid), 10)
	}
	r.path = append(r.path, rest...)
	return string(r.path)
}

// fdPath is /proc/PID/DIR/FD: a descriptor's link (fd) or its
// description (fdinfo).
func (r *procFS) fdPath(pid int, dir string, fd int) string {
	r.path = append(r.path[:0], "/proc/"...)
	r.path = strconv.AppendInt(r.path, int64(pid), 10)
	r.path = append(append(append(r.path, '/'), dir...), '/')
	r.path = strconv.AppendInt(r.path, int64(fd), 10)
	return string(r.path)
}

// readFile reads a whole /proc file into r.file, which it returns; the
// bytes are valid until the next read.
func (r *procFS) readFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	r.file = r.file[:0]
	for {
		if len(r.file) == cap(r.file) {
			r.file = append(r.file, 0)[:len(r.file)]
		}
		n, err := unix.Read(fd, r.file[len(r.file):cap(r.file)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return r.file, nil
		}
		r.file = r.file[:len(r.file)+n]
	}
}

// readLink reads a symbolic link of /proc (a descriptor's target) into a
// buffer of r's; the bytes are valid until the next readLink.
func (r *procFS) readLink(path string) ([]byte, error) {
	for {
		n, err := unix.Readlink(path, r.link[:cap(r.link)])
		if err != nil {
			return nil, err
		}
		if n < cap(r.link) {
			return r.link[:n], nil
		}
		r.link = make([]byte, 2*cap(r.link))
	}
}

// numericEntries calls f with each entry of a directory whose name is a
// number (the processes of /proc, the threads of /proc/PID/task).
func (r *procFS) numericEntries(dir string, f func(int)) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Getdents(fd, r.dents)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		// struct linux_dirent64: ino (8), off (8), reclen (2), type (1),
		// then the name, NUL-terminated.
		for b := r.dents[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			if id, ok := parseDecimal(b[19:reclen]); ok {
				f(int(id))
			}
			b = b[reclen:]
		}
	}
}

// parseDecimal reads the unsigned decimal number at the start of b, up to
// its first byte that is not a digit (a NUL, a space, a closing bracket).
func parseDecimal(b []byte) (int64, bool) {
	var n int64
	digits := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
		digits++
	}
	return n, digits > 0
}

// tree returns pid and its descendants, pid first. The slice is valid
// until the next call.
func (r *procFS) tree(pid int) []int {
	r.pids = append(r.pids[:0], pid)
	for i := 0; i < len(r.pids); i++ {
		if r.table != nil {
			r.pids = append(r.pids, r.table[r.pids[i]]...)
			continue
		}
		parent := r.pids[i]
		// A child is listed in the children file of the thread that
		// forked it.
		tids, _ := r.threads(parent)
		for _, tid := range tids {
			b, err := r.readFile(r.procPath(parent, tid, "/children"))
			if err != nil {
				continue
			}
			for len(b) > 0 {
				if child, ok := parseDecimal(b); ok {
					r.pids = append(r.pids, int(child))
				}
				next := bytes.IndexByte(b, ' ')
				if next < 0 {
					break
				}
				b = b[next+1:]
			}
		}
	}
	return r.pids
}

// procTable is one reading of every process's parent: children by parent
// pid.
type procTable map[int][]int

func (r *procFS) readProcTable() procTable {
	children := procTable{}
	var pids []int
	r.numericEntries("/proc", func(pid int) { pids = append(pids, pid) })
	for _, pid := range pids {
		if st, ok := r.stat(pid); ok {
			children[st.ppid] = append(children[st.ppid], pid)
		}
	}
	return children
}

// procStat is what the master reads of /proc/PID/stat.
type procStat struct {
	ppid     int
	cpuTicks int64 // utime + stime + cutime + cstime, in USER_HZ
	rssPages int64
}

// stat reads /proc/PID/stat. Its fields are counted from the last ')',
// since the command name before it may hold spaces and parentheses: the
// state is field 3 of proc(5), the parent 4, the CPU times 14 to 17, the
// resident pages 24.
func (r *procFS) stat(pid int) (procStat, bool) {
	b, err := r.readFile(r.procPath(pid, 0, "/stat"))
	if err != nil {
		return procStat{}, false
	}
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return procStat{}, false
	}
	var st procStat
	field := 2 // the command name's
	seen := 0
	for i := end + 1; i < len(b); i++ {
		if b[i] != ' ' {
			continue
		}
		field++ // the field that starts after this space
		n, ok := parseDecimal(b[i+1:])
		switch {
		case field == 4:
			st.ppid = int(n)
		case field >= 14 && field <= 17:
			st.cpuTicks += n
		case field == 24:
			st.rssPages = n
		default:
			continue
		}
		if !ok {
			return procStat{}, false
		}
		if seen++; seen == 6 {
			return st, true
		}
	}
	return procStat{}, false
}

// procTree is what the accept watcher knows of the process trees: one
// reader shared by every worker it looks at, read again at most every
// acceptPollMax, so that many starting workers do not each scan /proc.
type procTree struct {
	r     *procFS
	taken time.Time
}

// reader returns the reader of the watcher's goroutine.
func (t *procTree) reader() *procFS {
	if t.r == nil {
		t.r, t.taken = newProcFS(), time.Now()
	}
	return t.r
}

// descendants returns the processes descended from pid, reading the trees
// again when what it holds is older than acceptPollMax at now. The slice
// is valid until the next call.
func (t *procTree) descendants(pid int, now time.Time) []int {
	r := t.reader()
	if now.Sub(t.taken) >= acceptPollMax {
		if r.table != nil {
			r.table = r.readProcTable()
		}
		t.taken = now
	}
	return r.tree(pid)[1:]
}
