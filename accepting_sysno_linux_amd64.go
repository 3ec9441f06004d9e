package recluster

import "golang.org/x/sys/unix"

// waitSyscalls are the system calls a thread waits for a connection in.
var waitSyscalls = map[int]waitKind{
	unix.SYS_ACCEPT: waitAccept, unix.SYS_ACCEPT4: waitAccept,
	unix.SYS_POLL: waitPoll, unix.SYS_PPOLL: waitPoll,
	unix.SYS_SELECT: waitSelect, unix.SYS_PSELECT6: waitSelect,
}
