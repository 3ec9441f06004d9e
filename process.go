package recluster

import (
	"errors"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/lossy"
	"github.com/recluster-go/recluster/internal/proto"
	"golang.org/x/sys/unix"
)

// outboxSize bounds the control messages queued for one worker. A worker
// that lets this many pile up has stopped reading its channel; what comes
// after is dropped, and its timeouts deal with it.
const outboxSize = 16

// handoffQueueSize bounds the handed connections queued for one worker,
// apart from outboxSize: a reload hands a whole generation's idle
// connections over at once, and none of them may push out a control
// message, nor be dropped because of one.
const handoffQueueSize = 1024

type outgoing struct {
	m  proto.Message
	fd int // a duplicate the writer closes once sent, or -1
	// handoff marks a handed connection, counted against handoffQueueSize.
	handoff bool
	// signal, when set, is sent to the process instead of a message.
	signal syscall.Signal
	// flushed, when set, marks no message: the writer closes it once
	// everything queued before it is written (an upgrade waits for that).
	flushed chan struct{}
}

// workerProcess is the real process behind a worker. Its channel is
// written by its outbox's consumer goroutine, so that a worker that stops reading
// stalls only itself, never the supervisor.
type workerProcess struct {
	id     int
	conn   *proto.Conn
	notify *notifySocket
	// outbox is one queue in the order the supervisor sent, so that the
	// worker sees a listen reply before the connections handed to that
	// listener, and every handed connection before a disconnect (which it
	// answers by handing back what it holds). Each kind has its own bound.
	outbox         *lossy.Queue[outgoing]
	queuedControl  atomic.Int32
	queuedHandoffs atomic.Int32
	// released is touched only by the supervisor goroutine, as are send,
	// handOff and release; gone tells the writer, which must not signal a
	// pid that has been reaped.
	released bool
	gone     atomic.Bool
	// handoffWritten reports each handed connection's write (the writer
	// calls it; it posts to the supervisor).
	handoffWritten func(delivered bool)

	// hooks are what its readers report to; readerDone and notifyDone are
	// closed when they return (an upgrade stops them, upgrade_process.go).
	hooks      workerHooks
	readerDone chan struct{}
	notifyDone chan struct{}
	// outputs are its stdout and stderr pipes when the master relays
	// them (output.go).
	outputs []*outputStream
	// paused is closed once an upgrade has stopped every reader (nil when
	// none is stopping them); drainedDone once, after release, the channel
	// and the output pipes have been read to their ends.
	paused      chan struct{}
	drainedDone chan struct{}
	// file is the program file it was started from (system.programFile);
	// direct, whether it was executed without the exec trampoline.
	file   programFile
	direct bool
}

// newOutbox gives p its outbox. The queue grows with what is in it and
// starts its writer at the first message: a channel buffered for both
// bounds cost each worker about 75 KB from its start, scanned by every
// collection, and a goroutine, though most workers are sent a handful of
// messages in their life.
func newOutbox(p *workerProcess) *lossy.Queue[outgoing] {
	return lossy.New(outboxSize+handoffQueueSize, p.deliver, func(int) {})
}

func (p *workerProcess) pid() int { return p.id }

func (p *workerProcess) send(m proto.Message, fd int) {
	p.enqueue(outgoing{m: m, fd: fd}, &p.queuedControl, outboxSize)
}

// handOff queues a handed connection for the worker and reports whether
// it was queued; the caller keeps its own copy of fd either way.
func (p *workerProcess) handOff(m proto.Message, fd int) bool {
	return p.enqueue(outgoing{m: m, fd: fd, handoff: true}, &p.queuedHandoffs, handoffQueueSize)
}

// enqueue queues out with a duplicate of its fd, unless queued already
// holds bound messages of its kind.
func (p *workerProcess) enqueue(out outgoing, queued *atomic.Int32, bound int32) bool {
	if p.released || queued.Load() >= bound {
		return false
	}
	if out.fd >= 0 {
		dup, err := dupCloseOnExec(out.fd)
		if err != nil {
			return false // a listen request times out, as if the reply was lost
		}
		out.fd = dup
	}
	queued.Add(1)
	// Not refused while the bounds add up to its capacity and only
	// release closes it; a refusal must not leak the duplicate.
	if !p.outbox.Offer(out) {
		queued.Add(-1)
		if out.fd >= 0 {
			unix.Close(out.fd)
		}
		return false
	}
	return true
}

// deliver is the outbox's consumer: it writes what the supervisor queued,
// in order.
func (p *workerProcess) deliver(out outgoing) {
	if out.handoff {
		p.queuedHandoffs.Add(-1)
	} else {
		p.queuedControl.Add(-1)
	}
	if out.flushed != nil {
		close(out.flushed)
		return
	}
	if out.signal != 0 {
		if !p.gone.Load() {
			syscall.Kill(p.id, out.signal)
		}
		return
	}
	p.write(out)
}

// write sends out and closes its descriptor: once sent, the kernel holds
// the copy in flight to the worker; if the send failed (the worker did not
// read within the channel's write timeout, or exited), the connection is
// closed here, never kept.
func (p *workerProcess) write(out outgoing) {
	err := p.conn.Send(out.m, out.fd)
	if out.fd >= 0 {
		unix.Close(out.fd)
	}
	if out.handoff && p.handoffWritten != nil {
		p.handoffWritten(err == nil)
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

// signal sends sig once what is queued before it has been written: a
// worker that catches the stop signal finds the disconnect message (and
// whether it may hand its connections over) already in its channel.
func (p *workerProcess) signal(sig syscall.Signal) {
	if !p.enqueue(outgoing{fd: -1, signal: sig}, &p.queuedControl, outboxSize) {
		syscall.Kill(p.id, sig)
	}
}

func (p *workerProcess) kill() { killTree(p.id) }

// killTree sends SIGKILL to pid and to its process group.
func killTree(pid int) {
	syscall.Kill(-pid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
}

func (p *workerProcess) release() {
	if p.released {
		return
	}
	p.released = true
	p.gone.Store(true)
	p.outbox.Close()
	// Connections it handed over before it exited may still be in its
	// channel: they are read to the end and routed, not lost.
	p.conn.CloseAfterReading(time.Second)
	if p.notify != nil {
		p.notify.close()
	}
	// What the worker started in its process group must not outlive it
	// and keep the port.
	syscall.Kill(-p.id, syscall.SIGKILL)
	p.drainedDone = make(chan struct{})
	go p.readToEnd(p.paused)
}

// readToEnd closes drainedDone once the channel and the output pipes of a
// released worker have been read to their ends, after starting their
// readers again if an upgrade had stopped them (paused is then not nil).
func (p *workerProcess) readToEnd(paused <-chan struct{}) {
	if paused != nil {
		<-paused
		p.readerDone = make(chan struct{})
		go p.readChannel()
		for _, o := range p.outputs {
			o.resume()
		}
	}
	<-p.readerDone
	for _, o := range p.outputs {
		<-o.done
	}
	close(p.drainedDone)
}

func (p *workerProcess) drained() <-chan struct{} { return p.drainedDone }

func (p *workerProcess) programFile() programFile { return p.file }

func (p *workerProcess) startedDirectly() bool { return p.direct }

// unhandled is true until the channel's reader has passed on to the
// supervisor every message the worker sent so far.
func (p *workerProcess) unhandled() bool { return p.conn.Unhandled() }
