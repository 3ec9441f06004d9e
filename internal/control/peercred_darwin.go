package control

import "golang.org/x/sys/unix"

// peerCred reads LOCAL_PEERCRED: the peer's uid; the pid is not known (0).
func peerCred(fd int) (uid, pid int, err error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1, 0, err
	}
	return int(cred.Uid), 0, nil
}
