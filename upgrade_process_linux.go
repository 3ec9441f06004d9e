package recluster

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
)

// What an upgrade does to one worker's process: stop its readers without
// losing a byte, flush what is queued for it, name its descriptors, and,
// in the new master, take them over.

// pause stops p's readers (its channel's, its notify socket's and its
// output pipes'); stopped is called (off the caller's goroutine) once all
// have returned, after they delivered everything they had read.
func (p *workerProcess) pause(stopped func()) {
	p.conn.Interrupt()
	done := []chan struct{}{p.readerDone}
	if p.notify != nil {
		p.notify.conn.SetReadDeadline(time.Now())
		done = append(done, p.notifyDone)
	}
	for _, o := range p.outputs {
		o.pause()
		done = append(done, o.done)
	}
	paused := make(chan struct{})
	p.paused = paused
	go func() {
		for _, ch := range done {
			<-ch
		}
		close(paused)
		stopped()
	}()
}

// resume restarts the readers that pause stopped, when an upgrade failed.
func (p *workerProcess) resume() {
	if p.released {
		return // readToEnd starts them again
	}
	p.paused = nil
	p.conn.Resume()
	if p.notify != nil {
		p.notify.conn.SetReadDeadline(time.Time{})
	}
	p.readWith(p.hooks)
	p.listen()
	for _, o := range p.outputs {
		o.resume()
	}
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

// outputState names p's output pipes, once their readers have paused; a
// pipe whose reader reached its end is closed, and left out.
func (p *workerProcess) outputState() ([]stateOutput, error) {
	var outs []stateOutput
	for _, o := range p.outputs {
		if o.ended {
			continue
		}
		fd, err := fdOf(o.file)
		if err != nil {
			return nil, fmt.Errorf("%s pipe: %w", o.like.Stream, err)
		}
		outs = append(outs, stateOutput{Stream: o.like.Stream, FD: fd, Held: o.held})
	}
	return outs, nil
}

// adoptOutputs takes over w's output pipes: relay reads them on, or, in a
// master that relays no output, they are copied to its own stdout and
// stderr as they come, so that no worker blocks on a full pipe.
func (p *workerProcess) adoptOutputs(w stateWorker, relay *outputRelay) {
	for _, so := range w.Outputs {
		f := os.NewFile(uintptr(so.FD), "recluster-output-"+so.Stream)
		if relay == nil {
			dst := os.Stdout
			if so.Stream == "stderr" {
				dst = os.Stderr
			}
			go func() {
				defer f.Close()
				dst.Write(so.Held)
				io.Copy(dst, f)
			}()
			continue
		}
		o := &outputStream{relay: relay, file: f, like: OutputLine{Slot: w.Slot, PID: w.PID, Generation: w.Gen, Stream: so.Stream}}
		p.outputs = append(p.outputs, o)
		o.start(so.Held, nil)
	}
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
	p := &workerProcess{id: w.PID, conn: conn, handoffWritten: hooks.handoffWritten, file: w.File.programFile(), direct: w.Direct}
	p.outbox = newOutbox(p)
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
	return p, nil
}
