//go:build linux && !amd64

package recluster

import "golang.org/x/sys/unix"

// waitSyscalls are the system calls a thread waits for a connection in;
// newer architectures have no accept, poll or select of their own, and
// the C library calls the ones below.
var waitSyscalls = map[int]waitKind{
	unix.SYS_ACCEPT4: waitAccept, unix.SYS_PPOLL: waitPoll, unix.SYS_PSELECT6: waitSelect,
}
