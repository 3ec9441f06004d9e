package recluster

import (
	"errors"
	"sync"
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
// the sockets it inherited, as the cluster's accept watcher finds.
func (s *supervisor) awaitAccepting(w *Worker, sockets []*ownedSocket) {
	inodes := map[uint64]bool{}
	for _, sock := range sockets {
		if ino, ok := socketInode(sock.fd); ok {
			inodes[ino] = true
		}
	}
	if s.accepts == nil {
		s.accepts = &acceptWatcher{post: s.post, done: s.c.done, wake: make(chan struct{}, 1), accepting: acceptingOn}
		go s.accepts.run()
	}
	stop := make(chan struct{})
	w.stopAcceptWatch = func() { close(stop) }
	now := time.Now()
	s.accepts.add(&acceptWatch{w: w, pid: w.pid, inodes: inodes, stop: stop, unhandled: w.proc.unhandled,
		next: now, delay: acceptPollFirst, deadline: now.Add(s.opts.ReadyTimeout)})
}

// acceptWatcher looks at every starting worker that inherited its sockets
// until it waits for connections on one of them. One goroutine watches
// them all, so that what it reads of /proc serves every worker at once:
// the parents of all processes, which finding a worker's children takes,
// are read at most once per acceptPollMax however many workers start
// together, and a generation of N workers costs O(N + processes) per
// round, not O(N × processes).
type acceptWatcher struct {
	post func(func(*supervisor))
	done <-chan struct{} // the cluster's: the watcher ends with it
	// accepting is acceptingOn, which the tests of the rules of look
	// stand in for.
	accepting func(pid int, inodes map[uint64]bool, tree *procTree, now time.Time) (bool, error)

	// mu guards inbox, the handover from the supervisor to run, which
	// owns the watches from then on.
	mu    sync.Mutex
	inbox []*acceptWatch
	wake  chan struct{}
}

// acceptWatch is one worker being watched; only run touches it once it is
// added, and the supervisor ends it by closing stop.
type acceptWatch struct {
	w      *Worker // handed back to the supervisor, never read here
	pid    int
	inodes map[uint64]bool
	stop   chan struct{}
	// unhandled is its process's (process.unhandled): what the worker
	// sent before it began to accept must reach the supervisor first.
	unhandled func() bool
	// seenAccepting is set once the worker was seen accepting while its
	// channel still held something unread: from then on only the channel
	// is looked at, which is one ioctl instead of a walk of /proc.
	seenAccepting bool
	next          time.Time // when to look again
	delay         time.Duration
	deadline      time.Time
}

func (a *acceptWatcher) add(aw *acceptWatch) {
	a.mu.Lock()
	a.inbox = append(a.inbox, aw)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *acceptWatcher) run() {
	var watches []*acceptWatch
	var tree procTree
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		a.mu.Lock()
		watches = append(watches, a.inbox...)
		clear(a.inbox)
		a.inbox = a.inbox[:0]
		a.mu.Unlock()

		now := time.Now()
		var next time.Time
		kept := watches[:0]
		for _, aw := range watches {
			if !aw.stopped() && (now.Before(aw.next) || !a.look(aw, now, &tree)) {
				kept = append(kept, aw)
				if next.IsZero() || aw.next.Before(next) {
					next = aw.next
				}
			}
		}
		clear(watches[len(kept):])
		watches = kept
		if len(watches) == 0 {
			tree = procTree{} // let the snapshot go while nobody starts
		}

		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-a.wake:
		case <-timer.C:
		case <-a.done:
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func (aw *acceptWatch) stopped() bool {
	select {
	case <-aw.stop:
		return true
	default:
		return false
	}
}

// look checks one worker and reports whether its watch is over.
func (a *acceptWatcher) look(aw *acceptWatch, now time.Time, tree *procTree) bool {
	ok, err := aw.seenAccepting, error(nil)
	if !ok {
		ok, err = a.accepting(aw.pid, aw.inodes, tree, now)
	}
	var why *undetectable
	w := aw.w
	switch {
	case ok && aw.unhandled():
		// The worker package says on the channel, before it accepts,
		// that it takes handed connections: marked ready first, the
		// worker could be chosen to succeed a draining one that the
		// master then tells to hand its connections to nobody. The
		// channel is asked only after the accept is seen, since the
		// message comes before it.
		aw.seenAccepting = true
		aw.next = now.Add(acceptPollFirst)
		return now.After(aw.deadline) // then its ready timeout tells the rest
	case ok:
		go a.post(func(s *supervisor) {
			if s.alive(w) {
				s.markReady(w)
			}
		})
		return true
	case errors.As(err, &why) || len(aw.inodes) == 0:
		reason := "the master could not identify its own sockets"
		if why != nil {
			reason = why.reason
		}
		go a.post(func(s *supervisor) { s.settleInstead(w, reason) })
		return true
	case errors.Is(err, errProcessGone), now.After(aw.deadline):
		return true // its exit or its ready timeout tells the rest
	}
	aw.next = now.Add(aw.delay)
	aw.delay = min(2*aw.delay, acceptPollMax)
	return false
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
