package recluster

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
)

// What an upgrade does to one worker's process: stop its readers without
// losing a byte, flush what is queued for it, name its descriptors, and,
// in the new master, take them over.

// pause stops p's readers; stopped is called (off the caller's goroutine)
// once both have returned, after they delivered everything they had read.
func (p *workerProcess) pause(stopped func()) {
	p.conn.Interrupt()
	if p.notify != nil {
		p.notify.conn.SetReadDeadline(time.Now())
	}
	reader, notify := p.readerDone, p.notifyDone
	go func() {
		<-reader
		if notify != nil {
			<-notify
		}
		stopped()
	}()
}

// resume restarts the readers that pause stopped, when an upgrade failed.
func (p *workerProcess) resume() {
	if p.released {
		return
	}
	p.conn.Resume()
	if p.notify != nil {
		p.notify.conn.SetReadDeadline(time.Time{})
	}
	p.readWith(p.hooks)
	p.listen()
}

// flush waits until the messages queued for the worker are written, or
// the writer's own timeout has dropped them.
func (p *workerProcess) flush() {
	if p.released {
		return
	}
	done := make(chan struct{})
	if !p.enqueue(outgoing{fd: -1, flushed: done}, &p.queuedControl, outboxSize) {
		return // a worker that reads nothing: its timeouts deal with it
	}
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

// descriptors returns the numbers of p's channel and notify socket (or
// -1), which an exec keeps.
func (p *workerProcess) descriptors() (channel, notify int, err error) {
	channel, notify = -1, -1
	if channel, err = fdOf(p.conn); err != nil {
		return -1, -1, err
	}
	if p.notify != nil {
		if notify, err = fdOf(p.notify.conn); err != nil {
			return -1, -1, err
		}
	}
	return channel, notify, nil
}

// fdOf returns the descriptor behind c, which stays c's.
func fdOf(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	n := -1
	if err := rc.Control(func(fd uintptr) { n = int(fd) }); err != nil {
		return -1, err
	}
	return n, nil
}

// adoptProcess rebuilds, in the new master, the process of a worker that
// the old one started, from its descriptors; the readers start with
// listen.
func adoptProcess(w stateWorker, hooks workerHooks) (*workerProcess, error) {
	conn, err := proto.NewConn(w.Channel, "recluster-channel")
	if err != nil {
		return nil, err
	}
	conn.WriteTimeout = time.Second
	conn.Unread(w.Pending, w.PendingFDs)
	p := &workerProcess{id: w.PID, conn: conn, outbox: newOutbox()}
	if w.Notify >= 0 {
		f := os.NewFile(uintptr(w.Notify), w.NotifyPath)
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("notify socket of pid %d: %w", w.PID, err)
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			conn.Close()
			return nil, fmt.Errorf("notify socket of pid %d is not a Unix socket", w.PID)
		}
		p.notify = &notifySocket{conn: uc, path: w.NotifyPath}
	}
	p.readWith(hooks)
	go p.writeChannel()
	return p, nil
}
