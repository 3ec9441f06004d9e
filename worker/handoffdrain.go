package worker

import (
	"crypto/tls"
	"net"
	"time"
)

// handoffAccepter wraps every accepted connection, so that the drain can
// hand it over (handoffconn.go).
type handoffAccepter struct {
	net.Listener
	d *drainer
}

func (a handoffAccepter) Accept() (net.Conn, error) {
	c, err := a.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newHandoffConn(c, a.d), nil
}

// handOver wakes every idle connection so that it goes to the master, and
// waits until each one that may still go has gone, or until the bound;
// connections still busy then drain as before. It reports to the master
// what could not be handed over, by reason.
func (d *drainer) handOver(until time.Time) {
	fallbacks := map[string]int{"hijacked": int(d.hijacked.Load())}
	counted := map[net.Conn]bool{}
	count := func(c net.Conn, reason string) {
		if !counted[c] {
			counted[c] = true
			fallbacks[reason]++
		}
	}
	d.conns.Range(func(key, _ any) bool {
		switch c := key.(type) {
		case *handoffConn:
			c.wake()
			if reason := c.fallbackReason(); reason != "" {
				count(c, reason)
			}
		case *tls.Conn:
			// Its keys live in this process; HTTP/2 over TLS gets GOAWAY
			// from Shutdown.
			if c.ConnectionState().NegotiatedProtocol == "h2" {
				count(c, "h2")
			} else {
				count(c, "tls")
			}
		default:
			count(key.(net.Conn), "unsupported")
		}
		return true
	})
	timer := time.NewTimer(time.Until(until))
	defer timer.Stop()
wait:
	for d.pendingHandoffs() > 0 {
		select {
		case <-d.changed:
		case <-timer.C:
			break wait
		}
	}
	d.keepAlive.Store(false)
	d.conns.Range(func(key, _ any) bool {
		if c, ok := key.(*handoffConn); ok && !c.handedOff.Load() {
			if reason := c.fallbackReason(); reason != "" {
				count(c, reason)
			} else {
				count(c, "busy")
			}
		}
		return true
	})
	sendFallbacks(fallbacks)
}

// pendingHandoffs counts the open connections that may still be handed
// over.
func (d *drainer) pendingHandoffs() int {
	n := 0
	d.conns.Range(func(key, _ any) bool {
		if c, ok := key.(*handoffConn); ok && c.candidate() {
			n++
		}
		return true
	})
	return n
}
