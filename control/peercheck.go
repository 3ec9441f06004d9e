package control

import (
	"fmt"
	"net"
	"os"
)

// allowedUID reports whether a peer running as uid may use the socket of a
// process running as this one: the same user, or root.
func allowedUID(uid int) bool { return uid == os.Geteuid() || uid == 0 }

// checkPeer refuses a peer of another user.
func checkPeer(conn net.Conn) error {
	uid, pid, err := peerUID(conn)
	if err != nil {
		return fmt.Errorf("permission denied: %v", err)
	}
	if !allowedUID(uid) {
		return fmt.Errorf("permission denied: the client (uid %d, pid %d) is not the master's user (uid %d) or root", uid, pid, os.Geteuid())
	}
	return nil
}
