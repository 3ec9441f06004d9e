package recluster

import (
	"errors"
	"time"
)

// ReadyWhen=Listening for a worker that inherits its sockets means that it
// has started to wait for connections on one of them, the equivalent of
// Node's cluster "listening" for a program that never talks to the
// master. Where the master cannot see that (no /proc, another user's
// process it may not inspect), it falls back to Options.MinUptime.

// errProcessGone: the process exited while it was being looked at.
var errProcessGone = errors.New("the process has exited")

// undetectable says why the master cannot see whether a worker accepts.
type undetectable struct{ reason string }

func (e *undetectable) Error() string { return e.reason }

// acceptPoll is how often a starting worker is looked at: soon after exec
// at first, then less often, so that a slow starter costs little.
const (
	acceptPollFirst = 2 * time.Millisecond
	acceptPollMax   = 50 * time.Millisecond
)

// awaitAccepting marks w ready once it waits for connections on one of
// the sockets it inherited, watching it from a goroutine of its own.
func (s *supervisor) awaitAccepting(w *Worker, sockets []*ownedSocket) {
	inodes := map[uint64]bool{}
	for _, sock := range sockets {
		if ino, ok := socketInode(sock.fd); ok {
			inodes[ino] = true
		}
	}
	stop := make(chan struct{})
	w.stopAcceptWatch = func() { close(stop) }
	deadline := time.Now().Add(s.opts.ReadyTimeout)
	done := s.c.done
	go func() {
		delay := acceptPollFirst
		for {
			ok, err := acceptingOn(w.pid, inodes)
			var why *undetectable
			switch {
			case ok:
				s.post(func(s *supervisor) {
					if s.alive(w) {
						s.markReady(w)
					}
				})
				return
			case errors.As(err, &why) || len(inodes) == 0:
				reason := "the master could not identify its own sockets"
				if why != nil {
					reason = why.reason
				}
				s.post(func(s *supervisor) { s.settleInstead(w, reason) })
				return
			case errors.Is(err, errProcessGone), time.Now().After(deadline):
				return // its exit or its ready timeout tells the rest
			}
			select {
			case <-time.After(delay):
			case <-stop:
				return
			case <-done:
				return
			}
			delay = min(2*delay, acceptPollMax)
		}
	}()
}

// settleInstead falls back to readiness after Options.MinUptime, counted
// from the worker's start, and says so once per cluster.
func (s *supervisor) settleInstead(w *Worker, reason string) {
	if !s.alive(w) || w.state != WorkerStarting {
		return
	}
	if !s.acceptFallbackLogged {
		s.acceptFallbackLogged = true
		s.log.Warn("recluster: cannot see when workers start accepting connections; a worker counts as listening after min uptime instead",
			"reason", reason, "min_uptime", s.opts.MinUptime.String())
	}
	w.settleTimer = s.after(s.opts.MinUptime-s.sys.now().Sub(w.started), func(s *supervisor) {
		if s.alive(w) {
			s.markReady(w)
		}
	})
}

// stopAcceptWatching ends w's accept watcher, if it has one.
func (w *Worker) stopAcceptWatching() {
	if w.stopAcceptWatch != nil {
		w.stopAcceptWatch()
		w.stopAcceptWatch = nil
	}
}
