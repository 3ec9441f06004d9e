package recluster

import (
	"errors"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
	"golang.org/x/sys/unix"
)

// outboxSize bounds the messages queued for one worker. A worker that
// lets this many pile up has stopped reading its channel; what comes
// after is dropped, and its timeouts deal with it.
const outboxSize = 16

// handoffQueueSize bounds the handed connections queued for one worker,
// apart from its outbox: a reload hands a whole generation's idle
// connections over at once, and none of them may push out a control
// message, nor be dropped because of one.
const handoffQueueSize = 1024

type outgoing struct {
	m  proto.Message
	fd int // a duplicate the writer closes once sent, or -1
}

// workerProcess is the real process behind a worker. Its channel is
// written by a goroutine of its own, so that a worker that stops reading
// stalls only itself, never the supervisor.
type workerProcess struct {
	id     int
	conn   *proto.Conn
	notify *notifySocket
	outbox chan outgoing
	// handoffs holds handed connections on their way to the worker.
	handoffs chan outgoing
	// released is touched only by the supervisor goroutine, as are send
	// and release.
	released bool
}

func (p *workerProcess) pid() int { return p.id }

func (p *workerProcess) send(m proto.Message, fd int) {
	if p.released {
		return
	}
	out := outgoing{m: m, fd: -1}
	if fd >= 0 {
		dup, err := dupCloseOnExec(fd)
		if err != nil {
			return // the worker's request times out, as if the reply was lost
		}
		out.fd = dup
	}
	select {
	case p.outbox <- out:
	default:
		if out.fd >= 0 {
			unix.Close(out.fd)
		}
	}
}

// handOff queues a handed connection for the worker and reports whether
// it was queued; the caller keeps its own copy of fd either way.
func (p *workerProcess) handOff(m proto.Message, fd int) bool {
	if p.released {
		return false
	}
	dup, err := dupCloseOnExec(fd)
	if err != nil {
		return false
	}
	select {
	case p.handoffs <- outgoing{m: m, fd: dup}:
		return true
	default:
		unix.Close(dup)
		return false
	}
}

func (p *workerProcess) writeChannel() {
	for {
		// A control message queued before a handoff goes first: the listen
		// reply that makes the worker's listener must reach it before the
		// connections handed to that listener.
		select {
		case out, ok := <-p.outbox:
			if !ok {
				p.closeQueuedHandoffs()
				return
			}
			p.write(out)
			continue
		default:
		}
		select {
		case out, ok := <-p.outbox:
			if !ok {
				p.closeQueuedHandoffs()
				return
			}
			p.write(out)
		case out := <-p.handoffs:
			p.write(out)
		}
	}
}

// closeQueuedHandoffs closes the handed connections still queued once the
// worker is released. handOff runs before release on the supervisor's
// goroutine, so nothing is queued after this.
func (p *workerProcess) closeQueuedHandoffs() {
	for {
		select {
		case out := <-p.handoffs:
			unix.Close(out.fd)
		default:
			return
		}
	}
}

// write sends out and closes its descriptor: once sent, the kernel holds
// the copy in flight to the worker; if the send failed (the worker did not
// read within the channel's write timeout, or exited), the connection is
// closed here, never kept.
func (p *workerProcess) write(out outgoing) {
	p.conn.Send(out.m, out.fd)
	if out.fd >= 0 {
		unix.Close(out.fd)
	}
}

// readChannel delivers the worker's messages until its channel closes.
func (p *workerProcess) readChannel(hooks workerHooks) {
	for {
		m, fd, err := p.conn.Receive()
		if errors.Is(err, proto.ErrMalformed) {
			hooks.malformed(err)
			continue
		}
		if err != nil {
			return
		}
		hooks.message(m, fd)
	}
}

func (p *workerProcess) signal(sig syscall.Signal) { syscall.Kill(p.id, sig) }

func (p *workerProcess) kill() {
	syscall.Kill(-p.id, syscall.SIGKILL)
	syscall.Kill(p.id, syscall.SIGKILL)
}

func (p *workerProcess) release() {
	if p.released {
		return
	}
	p.released = true
	close(p.outbox)
	// Connections it handed over before it exited may still be in its
	// channel: they are read to the end and routed, not lost.
	p.conn.CloseAfterReading(time.Second)
	if p.notify != nil {
		p.notify.close()
	}
	// What the worker started in its process group must not outlive it
	// and keep the port.
	syscall.Kill(-p.id, syscall.SIGKILL)
}
