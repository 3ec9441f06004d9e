package recluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketInode returns the inode that names a socket in /proc/PID/fd
// ("socket:[INODE]") and in epoll's fdinfo ("ino:HEX"): every process
// holding a duplicate of the master's socket sees the same one.
func socketInode(fd int) (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// maxWaitFDs bounds how many pollfd entries or select bits are read from
// a worker's memory per blocked thread.
const maxWaitFDs = 1 << 16

// acceptingOn reports whether a process of pid's tree waits for
// connections on one of the sockets: a socket in one of its epoll sets
// (Go, Node/libuv, Python asyncio, nginx, Java NIO), or a thread blocked in
// accept, poll or select on it (blocking servers, gunicorn's sync workers).
// The worker itself is looked at first, its descendants (from tree) only
// if it does not accept. It returns an *undetectable error when /proc does
// not let the master see this, and errProcessGone when pid has exited.
func acceptingOn(pid int, inodes map[uint64]bool, tree *procTree, now time.Time) (bool, error) {
	r := tree.reader()
	if ok, err := processAccepting(r, pid, inodes); ok || err != nil {
		return ok, err
	}
	// processAccepting reads no tree, so the reader's slice stays valid.
	for _, p := range tree.descendants(pid, now) {
		ok, err := processAccepting(r, p, inodes)
		if errors.Is(err, errProcessGone) {
			continue // a child that exited meanwhile
		}
		if ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

// processAccepting looks into one process. It runs for every starting
// worker that does not say it listens, up to every acceptPollMax, so it
// reads /proc through r's buffers.
func processAccepting(r *procFS, pid int, inodes map[uint64]bool) (bool, error) {
	r.fds = r.fds[:0]
	if err := r.numericEntries(r.procPath(pid, 0, "/fd"), func(fd int) { r.fds = append(r.fds, fd) }); err != nil {
		return false, procError(err)
	}
	fds := map[int]bool{} // the process's descriptors for one of the sockets
	var epolls []int
	for _, fd := range r.fds {
		link, err := r.readLink(r.fdPath(pid, "fd", fd))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := bytes.CutPrefix(link, []byte("socket:[")); ok {
			if n, ok := parseDecimal(ino); ok && inodes[uint64(n)] {
				fds[fd] = true
			}
		} else if string(link) == "anon_inode:[eventpoll]" {
			epolls = append(epolls, fd)
		}
	}
	if len(fds) == 0 {
		return false, nil // it does not hold the sockets (any more)
	}
	for _, fd := range epolls {
		b, err := r.readFile(r.fdPath(pid, "fdinfo", fd))
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return false, procError(err)
			}
			continue
		}
		if epollWatches(string(b), fds, inodes) {
			return true, nil
		}
	}
	return blockedOn(r, pid, fds)
}

// epollWatches parses an eventpoll's fdinfo: one "tfd: N events: E data: D
// pos: P ino: I sdev: S" line per watched descriptor. The inode is the
// surer match (a descriptor number may have been reused since it was
// added); kernels before 3.18 give only the number.
func epollWatches(fdinfo string, fds map[int]bool, inodes map[uint64]bool) bool {
	for line := range strings.Lines(fdinfo) {
		rest, ok := strings.CutPrefix(line, "tfd:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		inoKnown := false
		for _, kv := range f {
			if hex, ok := strings.CutPrefix(kv, "ino:"); ok {
				if n, err := strconv.ParseUint(hex, 16, 64); err == nil {
					if inodes[n] {
						return true
					}
					inoKnown = true
				}
			}
		}
		if n, err := strconv.Atoi(f[0]); !inoKnown && err == nil && fds[n] {
			return true
		}
	}
	return false
}

// blockedOn reports whether a thread of the process is blocked in a
// system call that waits for a connection on one of fds.
func blockedOn(r *procFS, pid int, fds map[int]bool) (bool, error) {
	tids, err := r.threads(pid)
	if err != nil {
		return false, procError(err)
	}
	var mem *os.File
	defer func() {
		if mem != nil {
			mem.Close()
		}
	}()
	for _, tid := range tids {
		b, err := r.readFile(r.procPath(pid, tid, "/syscall"))
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return false, procError(err)
			}
			continue // the thread ended meanwhile
		}
		nr, args, ok := parseSyscall(string(b))
		if !ok {
			continue // running, or not in a system call
		}
		kind, waits := waitSyscalls[nr]
		if !waits {
			continue
		}
		if kind == waitAccept {
			if fds[int(int32(args[0]))] {
				return true, nil
			}
			continue
		}
		if mem == nil {
			if mem, err = os.Open(r.procPath(pid, 0, "/mem")); err != nil {
				mem = nil
				return false, procError(err)
			}
		}
		if waitsIn(mem, kind, args, fds) {
			return true, nil
		}
	}
	return false, nil
}

// parseSyscall parses /proc/PID/task/TID/syscall: "NR ARG0 .. ARG5 SP PC"
// while blocked in a system call, "running" or "-1 SP PC" otherwise.
func parseSyscall(s string) (nr int, args [6]uint64, ok bool) {
	f := strings.Fields(s)
	if len(f) < 7 {
		return 0, args, false
	}
	nr, err := strconv.Atoi(f[0])
	if err != nil || nr < 0 {
		return 0, args, false
	}
	for i := range args {
		v, err := strconv.ParseUint(strings.TrimPrefix(f[i+1], "0x"), 16, 64)
		if err != nil {
			return 0, args, false
		}
		args[i] = v
	}
	return nr, args, true
}

type waitKind int

const (
	waitAccept waitKind = iota // accept(fd, ...), accept4(fd, ...)
	waitPoll                   // poll(fds, nfds, ...), ppoll
	waitSelect                 // select(nfds, readfds, ...), pselect6
)

// waitsIn reads the descriptors a blocked poll or select waits on from the
// process's memory.
func waitsIn(mem *os.File, kind waitKind, args [6]uint64, fds map[int]bool) bool {
	switch kind {
	case waitPoll:
		n := min(args[1], maxWaitFDs)
		buf := make([]byte, 8*n) // struct pollfd { int fd; short events, revents; }
		if _, err := mem.ReadAt(buf, int64(args[0])); err != nil || args[0] == 0 {
			return false
		}
		for i := uint64(0); i < n; i++ {
			fd := int32(binary.NativeEndian.Uint32(buf[8*i:]))
			events := binary.NativeEndian.Uint16(buf[8*i+4:])
			if events&unix.POLLIN != 0 && fds[int(fd)] {
				return true
			}
		}
	case waitSelect:
		if args[1] == 0 {
			return false // no read set
		}
		n := min(args[0], maxWaitFDs)
		word := uint64(unsafe.Sizeof(uintptr(0))) // fd_set is an array of longs
		words := (n + 8*word - 1) / (8 * word)
		buf := make([]byte, words*word)
		if _, err := mem.ReadAt(buf, int64(args[1])); err != nil {
			return false
		}
		for fd := range fds {
			if uint64(fd) >= n {
				continue
			}
			i := uint64(fd) / (8 * word)
			var w uint64
			if word == 8 {
				w = binary.NativeEndian.Uint64(buf[i*8:])
			} else {
				w = uint64(binary.NativeEndian.Uint32(buf[i*4:]))
			}
			if w>>(uint64(fd)%(8*word))&1 != 0 {
				return true
			}
		}
	}
	return false
}

// procError sorts an error reading /proc/PID: the process has gone, or
// the master may not look.
func procError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ESRCH):
		return errProcessGone
	case errors.Is(err, fs.ErrPermission):
		return &undetectable{"the master may not read the worker's /proc entries (" + err.Error() + "): it runs as another user, or ptrace access is restricted"}
	default:
		return &undetectable{"reading the worker's /proc entries failed: " + err.Error()}
	}
}
