package recluster

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// stickySupported reports why Sticky cannot work here, or nil.
func stickySupported() error { return nil }

// attachSticky gives the reuseport group of fd the program for t. Any
// socket of the group carries the group's program, and attaching replaces
// the previous one atomically: a SYN sees the old table or the new one.
// Classic BPF on a reuseport group needs no privilege.
func attachSticky(fd int, t *stickyTable) error {
	raw, err := stickyProgram(t, skfNetOff)
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &prog); err != nil {
		return fmt.Errorf("recluster: attaching the sticky program (SO_ATTACH_REUSEPORT_CBPF): %w", err)
	}
	return nil
}

// acceptQueue returns how many connections wait in a listening socket's
// accept queue: for a listener, the kernel reports it in tcpi_unacked.
func acceptQueue(fd int) (int, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, err
	}
	return int(info.Unacked), nil
}
