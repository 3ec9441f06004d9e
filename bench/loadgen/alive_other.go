//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package loadgen

import "net"

// connAlive reports whether an idle kept-alive connection can carry another
// request. On this platform it cannot tell without blocking, so it always
// reports true and a closed connection shows up as a failure of the next
// request.
func connAlive(net.Conn) bool { return true }
