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
	// flushed, when set, marks no message: the writer closes it once
	// everything queued before it is written (an upgrade waits for that).
	flushed chan struct{}
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

	// hooks are what its readers report to; readerDone and notifyDone are
	// closed when they return (an upgrade stops them, upgrade_process.go).
	hooks      workerHooks
	readerDone chan struct{}
	notifyDone chan struct{}
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
		if out.flushed != nil {
			close(out.flushed)
			continue
		}
		p.conn.Send(out.m, out.fd)
		if out.fd >= 0 {
			unix.Close(out.fd)
		}
	}
}

// readChannel delivers the worker's messages until its channel closes or
// is interrupted (proto.Conn.Interrupt).
func (p *workerProcess) readChannel() {
	defer close(p.readerDone)
	for {
		m, fd, err := p.conn.Receive()
		if errors.Is(err, proto.ErrMalformed) {
			p.hooks.malformed(err)
			continue
		}
		if err != nil {
			return
		}
		p.hooks.message(m, fd)
	}
}

// serveNotify delivers the worker's sd_notify messages until its notify
// socket closes or is interrupted.
func (p *workerProcess) serveNotify() {
	defer close(p.notifyDone)
	p.notify.serve(p.id, p.hooks.notify, p.hooks.notifyRejected)
}

// readWith readies p to report to hooks; listen then starts its readers.
// Both happen before the supervisor can see p, which may stop the
// readers (an upgrade) as soon as it does.
func (p *workerProcess) readWith(hooks workerHooks) {
	p.hooks = hooks
	p.readerDone = make(chan struct{})
	if p.notify != nil {
		p.notifyDone = make(chan struct{})
	}
}

func (p *workerProcess) listen() {
	go p.readChannel()
	if p.notify != nil {
		go p.serveNotify()
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
