package recluster

import (
	"errors"
	"syscall"

	"github.com/recluster-go/recluster/internal/proto"
	"golang.org/x/sys/unix"
)

// outboxSize bounds the messages queued for one worker. A worker that
// lets this many pile up has stopped reading its channel; what comes
// after is dropped, and its timeouts deal with it.
const outboxSize = 16

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

func (p *workerProcess) writeChannel() {
	for out := range p.outbox {
		p.conn.Send(out.m, out.fd)
		if out.fd >= 0 {
			unix.Close(out.fd)
		}
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
	p.conn.Close()
	if p.notify != nil {
		p.notify.close()
	}
	// What the worker started in its process group must not outlive it
	// and keep the port.
	syscall.Kill(-p.id, syscall.SIGKILL)
}
