//go:build !linux && !darwin

package control

import (
	"errors"
	"net"
)

// peerUID is not implemented on this system; connections are refused.
func peerUID(conn net.Conn) (uid, pid int, err error) {
	return -1, 0, errors.New("checking a control client's uid is not supported on this system")
}
