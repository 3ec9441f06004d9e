package control

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// allowedUID reports whether a peer running as uid may use the socket of a
// process running as this one: the same user, or root.
func allowedUID(uid int) bool { return uid == os.Geteuid() || uid == 0 }

// rootMayTrust lets root operate the master of another user (sudo
// recluster reload --control /run/app/control.sock) when that user owns
// the socket and no third user could have put it there: its directory is
// not writable by others.
func rootMayTrust(path string, peerUID int) bool {
	if os.Geteuid() != 0 {
		return false
	}
	sock, err1 := os.Lstat(path)
	dir, err2 := os.Stat(filepath.Dir(path))
	if err1 != nil || err2 != nil || dir.Mode().Perm()&0o002 != 0 {
		return false
	}
	owner, ok := fileOwner(sock)
	return ok && owner == peerUID
}

func fileOwner(fi os.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

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
