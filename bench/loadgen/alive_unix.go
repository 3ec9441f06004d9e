//go:build linux || darwin || freebsd || netbsd || openbsd

package loadgen

import (
	"net"
	"syscall"
)

// connAlive reports whether an idle kept-alive connection can carry another
// request: it has not been closed by the peer and holds no unsolicited
// data. It peeks at the socket without blocking and without consuming
// anything, so no request is involved; a connection the peer closes after
// this check is still caught (as a failure) by the request itself.
func connAlive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK || rerr == syscall.EINTR:
			// Nothing to read: the connection is idle and open.
		default:
			// An error (e.g. ECONNRESET), end of stream or data
			// nobody asked for: not reusable.
			alive = false
		}
		return true // never wait for readability
	})
	return alive && err == nil
}
