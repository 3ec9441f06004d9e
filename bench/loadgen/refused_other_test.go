//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package loadgen

import (
	"net"
	"testing"
)

// refusedAddr returns a 127.0.0.1 address that nothing listens on (a port
// that was just released; another process could in principle take it).
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
