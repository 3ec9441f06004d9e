//go:build linux || darwin

package control

import (
	"errors"
	"fmt"
	"net"
)

// peerUID returns the uid of the process at the other end of conn, and its
// pid where the system tells (0 otherwise), from the kernel's record of
// the peer's credentials (peerCred, per system).
func peerUID(conn net.Conn) (uid, pid int, err error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return -1, 0, errors.New("not a Unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1, 0, err
	}
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		uid, pid, credErr = peerCred(int(fd))
	}); err != nil {
		return -1, 0, err
	}
	if credErr != nil {
		return -1, 0, fmt.Errorf("reading the peer's credentials: %w", credErr)
	}
	return uid, pid, nil
}
