package recluster

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// endedChild returns the pid of a child that has ended, without reaping
// it, or 0 when none has; ok is false when the kernel could not say.
func endedChild() (pid int, ok bool) {
	var info unix.Siginfo
	const pAll = 0 // idtype_t P_ALL: any child
	err := unix.Waitid(pAll, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	switch {
	case errors.Is(err, unix.ECHILD):
		return 0, true // no child at all
	case err != nil:
		return 0, false
	}
	return int(siginfoPID(&info)), true
}

// siginfoPID reads si_pid, the first field of the union that follows
// si_signo, si_errno and si_code (three ints) at pointer alignment; the
// kernel leaves it 0 when WNOHANG found no child that has ended.
func siginfoPID(info *unix.Siginfo) int32 {
	const ptr = unsafe.Sizeof(uintptr(0))
	const offset = (3*unsafe.Sizeof(int32(0)) + ptr - 1) &^ (ptr - 1)
	return *(*int32)(unsafe.Add(unsafe.Pointer(info), offset))
}
