//go:build !linux

package proto

// fionread is the BSDs' (and macOS's) FIONREAD, _IOR('f', 127, int),
// which golang.org/x/sys/unix does not define there.
const fionread = 0x4004667f

// recvmsgFlags is 0 where there is no MSG_CMSG_CLOEXEC: receive marks the
// descriptors close-on-exec itself, under syscall.ForkLock.
const recvmsgFlags = 0
