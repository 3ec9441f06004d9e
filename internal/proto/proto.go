// Package proto is the wire protocol between a recluster master and its
// workers: JSON lines over an inherited Unix stream socket (the channel),
// with listening sockets passed as SCM_RIGHTS ancillary data. It is shared
// by the master (package recluster) and the worker package so that the two
// sides cannot drift apart; docs/protocol.md describes it for workers in
// other languages.
package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables that the master sets for every worker.
const (
	// EnvWorkerID is the worker's slot, 0..N-1 (WORKER_ID, as in the Node.js recluster).
	EnvWorkerID = "WORKER_ID"
	// EnvGeneration counts reloads: 1 for the first generation.
	EnvGeneration = "RECLUSTER_GENERATION"
	// EnvChannelFD names the inherited file descriptor of the channel.
	EnvChannelFD = "RECLUSTER_CHANNEL_FD"
	// EnvTimeout is how long the worker may drain once told to disconnect
	// before the master kills it, as a Go duration ("1s"). Workers size
	// their keep-alive grace period from it.
	EnvTimeout = "RECLUSTER_TIMEOUT"
	// EnvTimeoutMS is EnvTimeout in whole milliseconds, for workers in
	// languages without a Go-duration parser (Node, Python).
	EnvTimeoutMS = "RECLUSTER_TIMEOUT_MS"
	// EnvHeartbeat, when set, is the interval (a Go duration) at which the
	// master expects a heartbeat message from the worker.
	EnvHeartbeat = "RECLUSTER_HEARTBEAT"
)

// Commands carried in Message.Cmd.
const (
	// CmdListen from a worker asks for a listening socket; the master's
	// answer carries the same Cmd and ID, with one fd attached or an Error.
	CmdListen = "listen"
	// CmdListening from a worker says it listens on a socket it inherited
	// (LISTEN_FDS), which the master cannot see (ReadyWhen=listening).
	CmdListening = "listening"
	// CmdReady from a worker says it is ready to serve (ReadyWhen=ready).
	CmdReady = "ready"
	// CmdDisconnect from the master tells a worker to stop accepting, finish
	// in-flight work and exit; from a worker it asks to be replaced.
	CmdDisconnect = "disconnect"
	// CmdHeartbeat from a worker says it is alive and not hung.
	CmdHeartbeat = "heartbeat"
	// CmdStatus from a worker carries a free-form status line for operators.
	CmdStatus = "status"
	// CmdHandoff carries one idle HTTP/1.1 connection, as its attached fd:
	// from a draining worker to the master, and from the master to a worker
	// that said it takes them (Message.Handoff in its listen request), whose
	// listener for Network/Address yields it from Accept. See
	// docs/protocol.md, "Connection handoff".
	CmdHandoff = "handoff"
	// CmdHandoffFallback from a draining worker counts connections it could
	// not hand over (Count of them, for Reason: "tls", "h2", "hijacked").
	CmdHandoffFallback = "handoff_fallback"
)

// maxQueuedFDs bounds the descriptors received and not yet claimed.
const maxQueuedFDs = 64

// MaxLine bounds one message, so that a confused peer cannot make the
// other side buffer without limit.
const MaxLine = 64 << 10

// Message is one JSON line on the channel. Unknown fields are ignored and
// unknown commands are skipped by both sides, so the protocol can grow.
type Message struct {
	Cmd     string `json:"cmd"`
	ID      uint64 `json:"id,omitempty"`
	Network string `json:"network,omitempty"`
	Address string `json:"address,omitempty"`
	Error   string `json:"error,omitempty"`
	Status  string `json:"status,omitempty"`
	// Handoff, in a listen request, says the worker takes handed-over
	// connections on that listener; in the master's disconnect, that the
	// worker may hand its idle connections over (a worker of a newer
	// generation takes them).
	Handoff bool   `json:"handoff,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Count   int    `json:"count,omitempty"`
	// ListenPID, in a listening message, is ListenPIDOptional when the
	// worker takes its passed sockets (LISTEN_FDS) without LISTEN_PID.
	ListenPID string `json:"listen_pid,omitempty"`
}

// ListenPIDOptional is the Message.ListenPID of a worker that takes the
// sockets passed to it whether LISTEN_PID is set or not: the channel tells
// it that they are its own. The master may then start later workers of
// the same program file without the exec trampoline that sets LISTEN_PID
// (docs/protocol.md, section 3.1).
const ListenPIDOptional = "optional"

// ErrMalformed wraps a line that is not a valid message; the connection
// stays usable after it.
var ErrMalformed = errors.New("malformed message")

// Conn is one end of a channel. Send may be called from several goroutines;
// Receive from one at a time.
type Conn struct {
	// DiscardFDs closes every descriptor that arrives, for a side that
	// expects none.
	DiscardFDs bool

	// WriteTimeout, when set, bounds each Send, so that a peer that stops
	// reading cannot block the sender.
	WriteTimeout time.Duration

	uc      *net.UnixConn
	writeMu sync.Mutex

	buf     []byte // received bytes not yet returned as lines
	fds     []int  // received descriptors not yet claimed by a listen reply
	readErr error
	// skipping is set while the rest of an overlong line is dropped.
	skipping bool

	// pendingMu orders fill's receive against Unhandled: a receive that
	// takes bytes sets unhandled in the same critical section, so that
	// Unhandled sees either the bytes in the kernel or the flag.
	pendingMu sync.Mutex
	unhandled bool // bytes received whose lines the caller has not all handled

	closeAfterRead atomic.Bool  // see CloseAfterReading
	readIdle       atomic.Int64 // CloseAfterReading's bound, in nanoseconds
	interrupted    atomic.Bool  // see Interrupt
	closeBy        atomic.Int64 // CloseAfterReading's deadline, in Unix nanoseconds
}

// NewConn takes ownership of fd, a connected Unix stream socket.
func NewConn(fd int, name string) (*Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	if f == nil {
		return nil, fmt.Errorf("channel fd %d is not valid", fd)
	}
	defer f.Close() // net.FileConn dups it
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("channel fd %d: %w", fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("channel fd %d is not a Unix socket", fd)
	}
	return &Conn{uc: uc}, nil
}

// Pair makes a connected pair of close-on-exec stream sockets: the first is
// for this process, the second (a raw fd) is meant for a child.
func Pair() (*Conn, int, error) {
	syscall.ForkLock.RLock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, -1, fmt.Errorf("socketpair: %w", err)
	}
	c, err := NewConn(fds[0], "recluster-channel")
	if err != nil {
		unix.Close(fds[1])
		return nil, -1, err
	}
	return c, fds[1], nil
}

// Send writes m as one line, with fd (when >= 0) attached to it.
func (c *Conn) Send(m Message, fd int) error {
	line, err := json.Marshal(m)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.WriteTimeout > 0 {
		c.uc.SetWriteDeadline(time.Now().Add(c.WriteTimeout))
	}
	n, _, err := c.uc.WriteMsgUnix(line, oob, nil)
	if err == nil && n < len(line) {
		// The descriptor went with the first bytes; the rest is plain data.
		_, err = c.uc.Write(line[n:])
	}
	return err
}

// Receive returns the next message. A listen reply without an Error, and a
// handoff, come with the descriptor that was attached to it (else fd is
// -1); the caller owns it. Descriptors queue in arrival order: a peer that
// attaches one to another message only hurts its own next listen or
// handoff, and the queue is bounded. A malformed line returns an error wrapping ErrMalformed, and the
// next call goes on with the line after it.
func (c *Conn) Receive() (m Message, fd int, err error) {
	fd = -1
	for {
		if i := bytes.IndexByte(c.buf, '\n'); i >= 0 {
			line := c.buf[:i]
			c.buf = c.buf[i+1:]
			if c.skipping {
				c.skipping = false // the end of an overlong line
				continue
			}
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			if err := json.Unmarshal(line, &m); err != nil {
				return Message{}, -1, fmt.Errorf("%w: %q: %v", ErrMalformed, truncate(line), err)
			}
			if m.Cmd == "" {
				return Message{}, -1, fmt.Errorf("%w: %q has no \"cmd\"", ErrMalformed, truncate(line))
			}
			if (m.Cmd == CmdListen && m.Error == "" || m.Cmd == CmdHandoff) && len(c.fds) > 0 {
				fd, c.fds = c.fds[0], c.fds[1:]
			}
			return m, fd, nil
		}
		if c.readErr != nil {
			if c.interrupted.Load() && errors.Is(c.readErr, os.ErrDeadlineExceeded) {
				// Interrupt's doing: the channel is still good.
				err := c.readErr
				c.readErr = nil
				return Message{}, -1, err
			}
			if c.closeAfterRead.Load() {
				if errors.Is(c.readErr, os.ErrDeadlineExceeded) &&
					(time.Now().UnixNano() < c.closeBy.Load() || c.inKernel()) {
					// An Interrupt's deadline, met just before
					// CloseAfterReading; or a reader that was not scheduled
					// within the bound while the peer's messages waited:
					// that is not silence, and they may carry connections.
					c.readErr = nil
					continue
				}
				c.uc.Close()
			}
			for _, fd := range c.fds {
				unix.Close(fd)
			}
			c.fds = nil
			return Message{}, -1, c.readErr
		}
		if len(c.buf) > MaxLine {
			c.buf = c.buf[:0]
			if !c.skipping {
				c.skipping = true // drop the rest of this line too
				return Message{}, -1, fmt.Errorf("%w: a line longer than %d bytes", ErrMalformed, MaxLine)
			}
		}
		c.fill()
	}
}

// fill is called once every complete line read so far has been returned:
// the caller, which calls Receive again only after acting on the last
// one, has handled them all.
func (c *Conn) fill() {
	data := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*16))
	if c.closeAfterRead.Load() && !c.interrupted.Load() {
		by := time.Now().Add(time.Duration(c.readIdle.Load()))
		c.closeBy.Store(by.UnixNano())
		if c.inKernel() {
			// This read cannot block (only this reader takes the bytes),
			// and a bound that is over before it runs must not lose them.
			c.uc.SetReadDeadline(time.Time{})
		} else {
			c.uc.SetReadDeadline(by)
		}
		if c.interrupted.Load() {
			// An Interrupt between the check above and this deadline
			// must still end the read.
			c.uc.SetReadDeadline(time.Now())
		}
	}
	c.pendingMu.Lock()
	c.unhandled = false
	c.pendingMu.Unlock()
	n, oobn, err := c.receive(data, oob)
	n, oobn = max(n, 0), max(oobn, 0) // they are -1 on some errors
	c.buf = append(c.buf, data[:n]...)
	if oobn > 0 {
		for _, fd := range parseRights(oob[:oobn]) {
			if c.DiscardFDs || len(c.fds) >= maxQueuedFDs {
				unix.Close(fd)
			} else {
				c.fds = append(c.fds, fd)
			}
		}
	}
	if err != nil {
		c.readErr = err
	} else if n == 0 {
		c.readErr = errors.New("channel closed")
	}
}

// receive is ReadMsgUnix, with the receive that takes bytes under
// pendingMu (see Unhandled). It honours the read deadline as ReadMsgUnix does.
func (c *Conn) receive(data, oob []byte) (n, oobn int, err error) {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var recvErr error
	err = rc.Read(func(fd uintptr) bool {
		c.pendingMu.Lock()
		defer c.pendingMu.Unlock()
		if recvmsgFlags == 0 {
			syscall.ForkLock.RLock()
			defer syscall.ForkLock.RUnlock()
		}
		n, oobn, _, _, recvErr = unix.Recvmsg(int(fd), data, oob, recvmsgFlags)
		if recvmsgFlags == 0 && oobn > 0 {
			for _, fd := range parseRights(oob[:oobn]) {
				unix.CloseOnExec(fd)
			}
		}
		if recvErr == unix.EAGAIN || recvErr == unix.EINTR {
			return false // wait until readable, or the deadline
		}
		if n > 0 {
			c.unhandled = true
		}
		return true
	})
	if err == nil {
		err = recvErr
	}
	if err != nil {
		return n, oobn, &net.OpError{Op: "read", Net: "unix", Addr: c.uc.LocalAddr(), Err: err}
	}
	return n, oobn, nil
}

// Unhandled reports whether the peer sent something that the caller of
// Receive has not handled yet: bytes still in the kernel, or lines read
// and not all returned and acted on (the caller acts on a line before it
// calls Receive again). A message the peer sent before some other sign
// of its progress (a master that sees a worker accept on a socket it
// inherited) has been handled when Unhandled says false. It may be
// called from any goroutine.
func (c *Conn) Unhandled() bool {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	return c.unhandled || c.inKernel()
}

// inKernel reports whether bytes wait in the socket's receive queue.
func (c *Conn) inKernel() bool {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return false
	}
	queued := 0
	rc.Control(func(fd uintptr) {
		queued, _ = unix.IoctlGetInt(int(fd), fionread)
	})
	return queued > 0
}

func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, msg := range msgs {
		got, err := unix.ParseUnixRights(&msg)
		if err != nil {
			continue
		}
		fds = append(fds, got...)
	}
	return fds
}

func truncate(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// Interrupt makes a Receive in progress (or the next one) return an error
// wrapping os.ErrDeadlineExceeded once it has returned every complete line
// already read, so that the channel can change hands (a master's upgrade in
// place) without losing a message; Resume undoes it.
func (c *Conn) Interrupt() {
	c.interrupted.Store(true)
	c.uc.SetReadDeadline(time.Now())
}

// Resume lets Receive wait for input again after Interrupt.
func (c *Conn) Resume() {
	c.interrupted.Store(false)
	c.uc.SetReadDeadline(time.Time{})
}

// Buffered returns the bytes read from the socket and not returned by
// Receive yet (the start of a line whose end has not arrived), and the
// descriptors that came with them and wait for their line, which stay c's.
// It must not be called while a Receive is in progress.
func (c *Conn) Buffered() ([]byte, []int) { return bytes.Clone(c.buf), slices.Clone(c.fds) }

// Unread puts bytes and descriptors taken with Buffered (by another Conn
// on the same socket, maybe in another process) back before what the
// socket holds; c owns the descriptors from then on.
func (c *Conn) Unread(b []byte, fds []int) {
	c.buf = append(bytes.Clone(b), c.buf...)
	c.fds = append(slices.Clone(fds), c.fds...)
}

// SyscallConn gives access to the channel's descriptor.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.uc.SyscallConn() }

// CloseAfterReading lets the reader take what the peer sent before it
// went away (handed connections must not be lost with the channel), then
// closes the channel: at the end of the stream, or once nothing has come
// for timeout if some other process still holds the peer's end. The bound
// counts from each read, not from this call: on a loaded machine the
// reader may take longer than timeout to get through what is queued, and
// every message it has not read yet may carry a client's connection.
// It undoes an Interrupt: a reader stopped by one is to be started again.
func (c *Conn) CloseAfterReading(timeout time.Duration) {
	c.interrupted.Store(false)
	c.readIdle.Store(int64(timeout))
	by := time.Now().Add(timeout)
	c.closeBy.Store(by.UnixNano())
	c.closeAfterRead.Store(true)
	c.uc.SetReadDeadline(by)
}

// Close closes the channel; a Receive in progress returns an error, and
// releases the descriptors that nobody claimed.
func (c *Conn) Close() error {
	return c.uc.Close()
}
