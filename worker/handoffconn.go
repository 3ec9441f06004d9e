package worker

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Connection handoff, the sending side: how a draining worker takes an
// idle HTTP/1.1 connection away from net/http without losing a byte, and
// without the client noticing.
//
// The race. net/http reads a connection through a bufio.Reader (4 KiB)
// over its connReader (which holds one more byte: the background read
// that watches for a client going away while a handler runs). Between two
// requests it parks in bufio's Peek(4), blocked in our Read. A client may
// send its next request at any moment. Handing the socket over is safe
// only if every byte the client sent is still in the kernel, so that the
// new worker reads all of it; a byte that net/http already holds would be
// lost with the old process.
//
// Counting the bytes returned since the connection went idle is not
// enough: the background read may have taken the first byte of the next
// request before the connection went idle, and a pipelining client may
// have had part of its next request read together with the previous one.
// Both stay in net/http's buffers. So a Read counts as "clean" only if
//
//  1. the connection is at a request boundary: new, or ConnState said
//     StateIdle, and nothing was returned since (a request whose headers
//     span a buffer refill reads with an empty buffer while net/http has
//     not said StateActive yet); and
//  2. net/http asks for as many bytes as its first Read on the connection
//     did: bufio's fill passes the free tail of its buffer, so a full-size
//     request means bufio holds nothing, and connReader calls us only
//     when its saved byte is gone.
//
// A clean Read is the whole of net/http's state: nothing is buffered and
// nothing is parsed. While draining with handoff, a clean Read does not
// read at all: it duplicates the descriptor, sends the duplicate to the
// master, and returns io.EOF, on which net/http ends the connection
// without writing (an EOF between requests is a client that left). A
// clean Read already blocked in the kernel when the drain begins is woken
// by a past read deadline; if it returns bytes, they arrived first and
// are served here (the connection is handed over at its next idle point);
// if it returns nothing, nothing was consumed, and it is handed over.
// Deadlines are set under the connection's mutex, and net/http's own read
// deadline is restored before any byte reaches it.
//
// The old worker never writes a byte after the handover (Write fails),
// never shuts the socket down (CloseWrite is a no-op), and its Close
// releases only its own descriptor: the duplicate sent to the master keeps
// the socket open, so no FIN or reset leaves while another process holds
// it (a socket is torn down when its last descriptor is closed).
type handoffConn struct {
	net.Conn
	raw syscall.Conn
	d   *drainer

	handedOff atomic.Bool
	closed    atomic.Bool

	mu            sync.Mutex
	atBoundary    bool      // new, or idle between requests
	sinceBoundary int64     // bytes returned since then
	emptyRead     int       // len(p) of the first Read: net/http's buffers are empty
	parked        bool      // a clean Read is blocked in the kernel
	woken         bool      // the past read deadline is ours
	readDeadline  time.Time // net/http's, restored after a wake
	started       bool      // a byte has been read
	fallback      string    // why it is never handed over: "h2", "hijacked", "failed"
}

func newHandoffConn(c net.Conn, d *drainer) net.Conn {
	raw, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	return &handoffConn{Conn: c, raw: raw, d: d, atBoundary: true}
}

// h2Preface starts every prior-knowledge HTTP/2 connection (h2c): its
// state is the HTTP/2 server's, not net/http's HTTP/1 reader, so it drains
// with GOAWAY through Shutdown.
var h2Preface = []byte("PRI * HTTP/2.0")

func (c *handoffConn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.handedOff.Load() {
			c.mu.Unlock()
			return 0, io.EOF
		}
		if c.emptyRead == 0 {
			c.emptyRead = len(p)
		}
		clean := c.atBoundary && c.sinceBoundary == 0 && len(p) == c.emptyRead && c.fallback == ""
		if clean && c.d.handingOff.Load() {
			if c.handOver() {
				c.mu.Unlock()
				return 0, io.EOF
			}
			clean = false
		}
		c.parked = clean
		c.mu.Unlock()

		n, err := c.Conn.Read(p)

		c.mu.Lock()
		c.parked = false
		if c.woken {
			c.woken = false
			c.Conn.SetReadDeadline(c.readDeadline)
			if n == 0 && isTimeout(err) && (c.readDeadline.IsZero() || time.Now().Before(c.readDeadline)) {
				c.mu.Unlock()
				continue // our wake, and nothing consumed: hand it over now
			}
		}
		if n > 0 {
			if !c.started {
				c.started = true
				if k := min(n, len(h2Preface)); bytes.Equal(p[:k], h2Preface[:k]) {
					c.fallback = "h2"
				}
			}
			c.sinceBoundary += int64(n)
		}
		c.mu.Unlock()
		return n, err
	}
}

// handOver sends a duplicate of the descriptor to the master; c.mu is
// held. On failure the connection stays here, served as usual.
func (c *handoffConn) handOver() bool {
	dup, err := dupConn(c.raw)
	if err == nil {
		err = sendHandoff(c.d.key, dup)
		unix.Close(dup)
	}
	if err != nil {
		c.fallback = "failed"
		return false
	}
	c.handedOff.Store(true)
	return true
}

// wake interrupts a clean Read blocked in the kernel, so that it hands the
// connection over.
func (c *handoffConn) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.parked && !c.woken {
		c.woken = true
		c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// setState follows net/http's view of the connection.
func (c *handoffConn) setState(state http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch state {
	case http.StateIdle:
		c.atBoundary, c.sinceBoundary = true, 0
	case http.StateActive:
		c.atBoundary = false
	case http.StateHijacked:
		c.fallback = "hijacked"
		c.d.hijacked.Add(1)
	}
}

// candidate reports whether the connection may still be handed over.
func (c *handoffConn) candidate() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fallback == "" && !c.handedOff.Load()
}

func (c *handoffConn) fallbackReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fallback
}

func (c *handoffConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	if c.woken {
		return nil // applied when the woken Read returns
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *handoffConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	if c.woken {
		return c.Conn.SetWriteDeadline(t)
	}
	return c.Conn.SetDeadline(t)
}

func (c *handoffConn) Write(p []byte) (int, error) {
	if c.handedOff.Load() {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps sendfile and splice for responses.
func (c *handoffConn) ReadFrom(r io.Reader) (int64, error) {
	if c.handedOff.Load() {
		return 0, net.ErrClosed
	}
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// Close releases this process's descriptor only; after a handover the
// master's duplicate keeps the socket open.
func (c *handoffConn) Close() error {
	if c.fallbackReason() == "hijacked" && c.closed.CompareAndSwap(false, true) {
		c.d.hijacked.Add(-1)
	}
	return c.Conn.Close()
}

// CloseWrite is net/http's half-close after an oversized request body; a
// connection handed over must never be shut down.
func (c *handoffConn) CloseWrite() error {
	if c.handedOff.Load() {
		return nil
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
