//go:build linux || darwin || freebsd || netbsd || openbsd

package loadgen

import (
	"net"
	"strconv"
	"syscall"
	"testing"
)

// refusedAddr returns a 127.0.0.1 address that refuses connections for the
// rest of the test: a TCP socket is bound to the port but never listens,
// so no other process (tests running in parallel) can take the port over
// and connections to it are answered with a reset (ECONNREFUSED).
func refusedAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
