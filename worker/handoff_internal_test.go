package worker

import (
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"

	"github.com/recluster-go/recluster/internal/proto"
	"golang.org/x/sys/unix"
)

// A connection handed over while Listen is making the listener for its
// socket (the master sends it right after the listen reply) ends up in
// that listener's queue, whichever of the two goes first, never in a
// queue that nobody takes any more.
func TestHandoffWhileTheListenerIsMade(t *testing.T) {
	for i := range 500 {
		address := fmt.Sprintf("127.0.0.1:%d", 10000+i) // a key per round
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.CloseOnExec(fds[0])
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var ln net.Listener
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			takeHandoff(proto.Message{Cmd: proto.CmdHandoff, Network: "tcp", Address: address}, fds[0])
		}()
		go func() {
			defer wg.Done()
			ln = newHandoffListener(tcp, "tcp", address)
		}()
		wg.Wait()
		l := ln.(*handoffListener)
		l.mu.Lock()
		queued := len(l.queue)
		l.mu.Unlock()
		handoffListeners.mu.Lock()
		stranded := len(handoffListeners.pending[handoffKey{"tcp", address}])
		handoffListeners.mu.Unlock()
		ln.Close()
		unix.Close(fds[1])
		if queued != 1 || stranded != 0 {
			t.Fatalf("round %d: %d queued for the listener, %d waiting for a listener that exists", i, queued, stranded)
		}
	}
}

// A worker names an inherited socket before it makes a listener of it,
// and the name must be the one the listener's Addr gives, which the
// master's registry uses too: handed connections are routed by it.
func TestSocketNameIsTheListenersAddr(t *testing.T) {
	for _, c := range []struct{ network, address string }{
		{"tcp", "127.0.0.1:0"},
		{"tcp6", "[::1]:0"},
		{"unix", t.TempDir() + "/s"},
		{"unixpacket", t.TempDir() + "/p"},
	} {
		ln, err := net.Listen(c.network, c.address)
		if err != nil {
			if c.network == "tcp6" {
				continue // no IPv6 loopback here
			}
			t.Fatal(err)
		}
		defer ln.Close()
		raw, err := ln.(interface {
			SyscallConn() (syscall.RawConn, error)
		}).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var network, address string
		var ok bool
		raw.Control(func(fd uintptr) { network, address, ok = socketName(int(fd)) })
		want := ln.Addr()
		if !ok || network != want.Network() || address != want.String() {
			t.Errorf("%s %s: socketName says %q %q (%v), the listener %q %q", c.network, c.address, network, address, ok, want.Network(), want.String())
		}
	}
}
