package recluster

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
)

// The supervisor is the cluster's state machine. Its loop is the only
// goroutine that reads or writes the fields below: API calls, process
// exits, worker messages and timers all reach it as functions on one
// channel, so there is nothing to lock. It decides; the system (system.go)
// does: every fork, signal and descriptor goes through s.sys, which the
// tests replace with a fake.
//
// Worker states: starting -> (standby ->) active -> draining -> exited.
// A slot is "covered" while it has a starting worker of the active
// generation or an active worker that has not asked to retire; a slot that
// is not covered gets a respawn, paced by the pacer.

// crashLoopThreshold is how many workers in a row may die in one slot
// before they are ready, or within their uptime window after it
// (probation.go), until the slot is reported as failing.
const crashLoopThreshold = 3

type reloadOp struct {
	gen     int
	started time.Time
	waiters []chan error
	// standby holds, for each slot below s.slots, the new generation's
	// worker once it is ready: the reload commits when every slot has one.
	standby map[int]*Worker
}

type supervisor struct {
	c       *Cluster
	opts    Options
	log     *slog.Logger
	program string
	sys     system
	sockets socketTable
	// post hands a function to the loop from any goroutine.
	post func(func(*supervisor))

	phase            Phase
	slots            int
	gen              int                  // the active generation
	lastGen          int                  // the newest generation started
	workers          map[*Worker]struct{} // every live worker, started or not
	bySlot           map[int][]*Worker    // the same workers, by slot
	stickyRetireLoop bool                 // Sticky mode: retireSticky's check is scheduled
	reload           *reloadOp
	pacer            pacer
	respawns         map[int]timer // slot -> its scheduled respawn
	restarts         map[int]int   // slot -> respawns scheduled
	failures         map[int]int   // slot -> workers in a row that died before ready
	reloads          map[ReloadOutcome]int
	events           *eventQueue

	restartOps map[int]*restartOp // slot -> its restart in progress (restart.go)
	tracks     tracks             // reloads followed after their commit (probation.go)

	// runResult is Run's answer, owed until every worker of the first
	// generation has started (or one could not).
	runResult        chan error
	pendingStarts    int
	terminateWaiters []chan error
	startFailed      bool  // Run failed: no cluster ever ran
	sweepTimer       timer // heartbeat, age and memory checks

	acceptFallbackLogged bool           // said once why readiness falls back to MinUptime
	accepts              *acceptWatcher // watches starting workers' inherited sockets (accepting.go)
	handoff              handoffState   // handoff.go

	// directExec is the program file whose workers said they take passed
	// sockets without LISTEN_PID: the next workers are started without
	// the exec trampoline while the program is still that file.
	directExec programFile

	upgrading *upgradeOp    // an upgrade in place in progress (upgrade.go)
	upgraded  upgradeRecord // the upgrades this master process went through
}

func newSupervisor(c *Cluster, sys system) *supervisor {
	return &supervisor{
		c:        c,
		opts:     c.opts,
		log:      c.log,
		program:  c.program,
		sys:      sys,
		sockets:  newSocketRegistry(c.opts),
		post:     c.post,
		phase:    PhaseIdle,
		slots:    c.opts.Workers,
		workers:  map[*Worker]struct{}{},
		bySlot:   map[int][]*Worker{},
		respawns: map[int]timer{},
		restarts: map[int]int{},
		failures: map[int]int{},
		reloads:  map[ReloadOutcome]int{},
		pacer:    newPacer(c.opts.Respawn, c.opts.Backoff, sys.now()),
	}
}

func (s *supervisor) loop() {
	for s.phase != PhaseStopped {
		f := <-s.c.calls
		f(s)
	}
	s.c.closeOutput()
	s.c.closeDefaultLog()
	close(s.c.done)
}

// after runs f in the loop once d has passed. The timer knows when it is
// due, which an upgrade carries over to the new master.
func (s *supervisor) after(d time.Duration, f func(*supervisor)) timer {
	return &dueTimer{s.sys.afterFunc(d, func() { s.post(f) }), s.sys.now().Add(d)}
}

func (s *supervisor) emit(e Event) {
	e.Time = s.sys.now()
	s.observeRestart(e)
	if s.opts.OnEventSync != nil {
		s.opts.OnEventSync(e)
	}
	if s.events.push(e) {
		s.log.Warn("recluster: the OnEvent handler is too slow; it misses events (an EventMissed says how many)")
	}
	s.followReloads(e)
}

func (s *supervisor) workerEvent(kind EventKind, w *Worker) Event {
	return Event{Kind: kind, Slot: w.slot, PID: w.pid, Generation: w.gen}
}

func (s *supervisor) clusterEvent(kind EventKind, gen int) Event {
	return Event{Kind: kind, Slot: -1, Generation: gen}
}

// run starts the cluster; result gets Run's answer once every worker of
// the first generation has started.
func (s *supervisor) run(result chan error) {
	if s.phase != PhaseIdle {
		result <- errors.New("recluster: Run was already called")
		return
	}
	s.events = newEventQueue(s.opts.OnEvent)
	if st, err := takeInherited(); st != nil || err != nil {
		s.adoptOrFail(st, err, result) // started by an upgrade in place: the workers run already
		return
	}
	if err := s.sockets.bindPassed(s.opts.Sockets); err != nil {
		s.startFailed = true
		s.stop()
		result <- fmt.Errorf("recluster: %w", err)
		return
	}
	if err := s.sys.prepare(); err != nil {
		s.startFailed = true
		s.stop()
		result <- err
		return
	}
	s.phase = PhaseRunning
	s.gen, s.lastGen = 1, 1
	s.runResult, s.pendingStarts = result, s.slots
	for slot := 0; slot < s.slots && s.runResult != nil; slot++ {
		s.spawn(slot, s.gen)
	}
	s.scheduleSweep()
	s.log.Info("recluster: cluster started", "program", s.program, "workers", s.slots, "ready_when", string(s.opts.ReadyWhen))
}

// failRun answers Run with err and takes down what was started.
func (s *supervisor) failRun(err error) {
	result := s.runResult
	s.runResult = nil
	s.startFailed = true
	s.phase = PhaseTerminating
	s.cancelRespawns(0)
	for w := range s.workers {
		w.state = WorkerDraining // its exit is expected
		s.kill(w, "the cluster could not start")
	}
	result <- err
	s.stopIfEmpty()
}

// spawn starts a worker for slot in generation gen. The process starts
// off the loop; onStarted learns how it went.
func (s *supervisor) spawn(slot, gen int) *Worker {
	w := &Worker{slot: slot, gen: gen, state: WorkerStarting}
	if s.opts.MaxAge > 0 {
		w.maxAge = s.opts.MaxAge - time.Duration(rand.Int64N(int64(s.opts.MaxAge/10)+1))
	}
	s.add(w)
	passed, err := s.sockets.passedFor(slot)
	if err != nil {
		s.onStarted(w, nil, err)
		return w
	}
	// A worker holds inherited sockets from its first instruction.
	w.listening = len(passed) > 0
	s.sys.start(workerSpec{slot: slot, gen: gen, passed: passed, direct: s.directExec}, s.hooks(w))
	return w
}

// hooks turn what the system reports on w into calls in the loop.
func (s *supervisor) hooks(w *Worker) workerHooks {
	return workerHooks{
		started: func(p process, err error) { s.post(func(s *supervisor) { s.onStarted(w, p, err) }) },
		message: func(m proto.Message, fd int) { s.post(func(s *supervisor) { s.onMessage(w, m, fd) }) },
		malformed: func(err error) {
			s.post(func(s *supervisor) {
				s.log.Warn("recluster: ignored a malformed message from a worker", "worker", w.slot, "pid", w.pid, "error", err)
			})
		},
		notify: func(fields map[string]string) { s.post(func(s *supervisor) { s.onNotify(w, fields) }) },
		handoffWritten: func(delivered bool) {
			s.post(func(s *supervisor) { s.onHandoffWritten(delivered) })
		},
		notifyRejected: func(sender int) {
			s.post(func(s *supervisor) {
				s.log.Warn("recluster: ignored a notify message that did not come from the worker's main process", "worker", w.slot, "pid", w.pid, "sender_pid", sender)
			})
		},
		exited: func(st exitStatus) { s.post(func(s *supervisor) { s.exited(w, st) }) },
	}
}

func (s *supervisor) add(w *Worker) {
	s.workers[w] = struct{}{}
	s.bySlot[w.slot] = append(s.bySlot[w.slot], w)
}

func (s *supervisor) remove(w *Worker) {
	delete(s.workers, w)
	rest := slices.DeleteFunc(s.bySlot[w.slot], func(o *Worker) bool { return o == w })
	if len(rest) == 0 {
		delete(s.bySlot, w.slot)
	} else {
		s.bySlot[w.slot] = rest
	}
	if s.reload != nil && s.reload.standby[w.slot] == w {
		delete(s.reload.standby, w.slot)
	}
}

func (s *supervisor) onStarted(w *Worker, p process, err error) {
	if s.runResult != nil {
		s.pendingStarts--
	}
	if err != nil {
		s.release(w)
		s.startFailedFor(w, fmt.Errorf("cannot start worker %d (%s): %w", w.slot, s.program, err))
		return
	}
	w.proc, w.pid = p, p.pid()
	w.started = s.sys.now()
	w.lastBeat = w.started
	// The bound counts from the process's start, not from the request: a
	// generation's forks go one at a time, and on a loaded machine the last
	// of many workers would otherwise spend its bound waiting for the others'.
	w.readyTimer = s.after(s.opts.ReadyTimeout, func(s *supervisor) { s.readyTimedOut(w) })
	s.emit(s.workerEvent(EventSpawned, w))
	s.log.Debug("recluster: worker spawned", "worker", w.slot, "pid", w.pid, "generation", w.gen)
	if s.runResult != nil && s.pendingStarts == 0 {
		s.runResult <- nil
		s.runResult = nil
	}
	if w.killed || w.state == WorkerDraining {
		// Told to go before it had started: it serves nobody yet.
		s.kill(w, cmp.Or(w.killReason, "it was no longer needed when it started"))
		return
	}
	switch {
	case s.opts.ReadyWhen == Started:
		s.markReady(w)
	case s.opts.ReadyWhen == Listening && w.listening && s.opts.MinUptime < 0:
		s.markReady(w)
	case s.opts.ReadyWhen == Listening && w.listening:
		// Its sockets were bound before it was started, so this only looks them up.
		passed, _ := s.sockets.passedFor(w.slot)
		s.awaitAccepting(w, passed)
	}
}

// startFailedFor handles a worker whose process could not be started.
func (s *supervisor) startFailedFor(w *Worker, err error) {
	if s.runResult != nil {
		s.failRun(fmt.Errorf("recluster: %w", err))
		return
	}
	s.log.Error("recluster: "+err.Error(), "worker", w.slot, "generation", w.gen)
	if op := s.restartOps[w.slot]; op != nil && op.succ == w {
		s.finishRestart(op, fmt.Errorf("%w: %w", ErrRestartAborted, err))
		return
	}
	s.diedBeforeReady(w)
	if s.reload != nil && w.gen == s.reload.gen {
		s.abortReload(fmt.Errorf("recluster: reload aborted: %w", err), ReloadAborted)
		return
	}
	switch s.phase {
	case PhaseRunning:
		s.reconcileSlot(w.slot)
	case PhaseTerminating:
		s.stopIfEmpty()
	}
}

func (s *supervisor) alive(w *Worker) bool {
	_, ok := s.workers[w]
	return ok
}

// onMessage acts on a message from w's channel; fd, when >= 0, is a
// descriptor that came with it.
func (s *supervisor) onMessage(w *Worker, m proto.Message, fd int) {
	if s.onHandoffMessage(w, m, fd) {
		return
	}
	if fd >= 0 {
		s.sys.closeFD(fd) // only handoff messages carry one the master uses
	}
	if !s.alive(w) {
		return
	}
	switch m.Cmd {
	case proto.CmdListen:
		s.onListen(w, m)
	case proto.CmdReady:
		if s.opts.ReadyWhen == Ready {
			s.markReady(w)
		}
	case proto.CmdListening:
		s.noteHandoffInherited(w, m)
		s.noteListenPIDOptional(w, m)
		if s.opts.ReadyWhen == Listening {
			s.markReady(w)
		}
	case proto.CmdDisconnect:
		// A worker that is not serving its slot yet is replaced once it is.
		w.retireAsked = true
		s.replace(w, "the worker asked to be replaced")
	case proto.CmdHeartbeat:
		w.lastBeat = s.sys.now()
	case proto.CmdStatus:
		w.status = m.Status
	default:
		s.noteUnknown(w, m.Cmd)
		e := s.workerEvent(EventMessage, w)
		e.Message = m.Cmd
		s.emit(e)
	}
}

// noteListenPIDOptional remembers the program file of a worker that says
// it takes its passed sockets without LISTEN_PID. The file is the one its
// own start found, not the one on disk now: a deploy since then may have
// put another program there, which must prove the same for itself.
func (s *supervisor) noteListenPIDOptional(w *Worker, m proto.Message) {
	if m.ListenPID != proto.ListenPIDOptional || w.proc == nil {
		return
	}
	f := w.proc.programFile()
	if f == (programFile{}) || f == s.directExec {
		return
	}
	s.directExec = f
	s.log.Debug("recluster: the program takes passed sockets without LISTEN_PID; its next workers start without the exec trampoline", "worker", w.slot, "pid", w.pid)
}

// forgetListenPIDOptional drops the declaration that w's program file
// takes passed sockets without LISTEN_PID when w, executed without it on
// the strength of that declaration, failed (how says how) before it was
// ready: the file's identity cannot see everything that decides what a
// worker does with its sockets (the code an interpreter loads from
// elsewhere, a module it is told to run), and a worker that needed
// LISTEN_PID after all looks exactly like this. Its successors go through
// the trampoline until one of them declares again. A declaration made
// since for another file stands: it is not the one this worker relied on.
func (s *supervisor) forgetListenPIDOptional(w *Worker, how string) {
	if w.proc == nil || !w.readyAt.IsZero() || !w.proc.startedDirectly() || !s.directExec.same(w.proc.programFile()) {
		return
	}
	s.directExec = programFile{}
	s.log.Warn("recluster: a worker started without LISTEN_PID failed before it was ready; the next workers of its program go through the exec trampoline, which sets LISTEN_PID, until one says again that it needs none",
		"worker", w.slot, "pid", w.pid, "generation", w.gen, "failure", how)
}

func (s *supervisor) onNotify(w *Worker, fields map[string]string) {
	if !s.alive(w) {
		return
	}
	if fields["READY"] == "1" && s.opts.ReadyWhen == Ready {
		s.markReady(w)
	}
	if st, ok := fields["STATUS"]; ok {
		w.status = st
	}
	if fields["WATCHDOG"] == "1" {
		w.lastBeat = s.sys.now()
	}
}

func (s *supervisor) onListen(w *Worker, m proto.Message) {
	network := m.Network
	if network == "" {
		network = "tcp"
	}
	sock, err := s.sockets.get(network, m.Address, w.slot)
	if err != nil {
		w.proc.send(proto.Message{Cmd: proto.CmdListen, ID: m.ID, Error: err.Error()}, -1)
		s.log.Error("recluster: "+err.Error(), "event", string(EventListenFailed), "worker", w.slot, "pid", w.pid)
		e := s.workerEvent(EventListenFailed, w)
		e.Err = err
		s.emit(e)
		return
	}
	reply := proto.Message{Cmd: proto.CmdListen, ID: m.ID, Network: sock.addr.Network(), Address: sock.addr.String()}
	w.proc.send(reply, sock.fd)
	w.listening = true
	s.noteHandoffListener(w, m, sock)
	e := s.workerEvent(EventListening, w)
	e.Addr = sock.addr
	s.emit(e)
	if s.opts.ReadyWhen == Listening {
		s.markReady(w)
	}
}

func (s *supervisor) markReady(w *Worker) {
	if w.state != WorkerStarting {
		return
	}
	w.readyTimer.Stop()
	w.stopAcceptWatching()
	w.readyAt = s.sys.now()
	s.settleSlot(w)
	s.emit(s.workerEvent(EventReady, w))
	if r := s.reload; r != nil && w.gen == r.gen {
		w.state = WorkerStandby
		if w.slot < s.slots {
			r.standby[w.slot] = w
		}
		s.maybeCommit()
		return
	}
	if w.slot >= s.slots || s.phase != PhaseRunning {
		s.drain(w, "not needed any more")
		return
	}
	s.activate(w)
}

// activate makes w its slot's active worker; whoever served the slot
// before is told to go only now, so the slot never goes without one.
func (s *supervisor) activate(w *Worker) {
	for _, old := range s.bySlot[w.slot] {
		if old != w && old.state == WorkerActive {
			s.drain(old, fmt.Sprintf("replaced by pid %d", w.pid))
		}
	}
	w.state = WorkerActive
	s.emit(s.workerEvent(EventActive, w))
	if w.retireAsked {
		s.replace(w, "the worker asked to be replaced")
	}
}

func (s *supervisor) readyTimedOut(w *Worker) {
	if !s.alive(w) || w.state != WorkerStarting {
		return
	}
	cause := fmt.Sprintf("was not ready within %v (ReadyWhen=%s)", s.opts.ReadyTimeout, s.opts.ReadyWhen)
	s.forgetListenPIDOptional(w, cause)
	if s.reload != nil && w.gen == s.reload.gen {
		s.abortReload(fmt.Errorf("recluster: reload aborted: slot %d (pid %d) %s", w.slot, w.pid, cause), ReloadAborted)
		return
	}
	s.kill(w, cause)
}

// replace starts a successor for an active worker, through the same
// ready-gated path as a reload: w serves until the successor is ready.
func (s *supervisor) replace(w *Worker, reason string) {
	if w.state != WorkerActive || w.retiring || s.phase != PhaseRunning {
		return
	}
	w.retiring = true
	e := s.workerEvent(EventRetire, w)
	e.Reason = reason
	s.emit(e)
	s.log.Info("recluster: replacing worker", "worker", w.slot, "pid", w.pid, "reason", reason)
	s.spawn(w.slot, s.gen)
}

// sweepInterval is how often heartbeats, ages and memory are checked.
func (s *supervisor) sweepInterval() time.Duration {
	every := time.Second
	if hb := s.opts.HeartbeatTimeout; hb > 0 {
		every = min(every, max(hb/4, 10*time.Millisecond))
	}
	return every
}

func (s *supervisor) scheduleSweep() {
	if s.opts.HeartbeatTimeout <= 0 && s.opts.MaxAge <= 0 && s.opts.MaxRSS <= 0 {
		return // nothing to check: the master stays idle
	}
	s.sweepTimer = s.after(s.sweepInterval(), (*supervisor).sweep)
}

// sweep replaces hung workers and recycles old or bloated ones.
func (s *supervisor) sweep() {
	if s.phase != PhaseRunning {
		return
	}
	now := s.sys.now()
	rss := s.treeRSS()
	for w := range s.workers {
		if w.state == WorkerDraining || w.killed || w.proc == nil {
			continue
		}
		if hb := s.opts.HeartbeatTimeout; hb > 0 && now.Sub(w.lastBeat) > hb {
			s.kill(w, fmt.Sprintf("no heartbeat for %v (heartbeat timeout %v)", now.Sub(w.lastBeat).Round(time.Millisecond), hb))
			continue
		}
		if w.state != WorkerActive || w.retiring || s.reload != nil {
			continue
		}
		if w.maxAge > 0 && now.Sub(w.started) > w.maxAge {
			s.replace(w, fmt.Sprintf("older than max age %v", s.opts.MaxAge))
			continue
		}
		if r, ok := rss[w]; ok && r > s.opts.MaxRSS {
			s.replace(w, fmt.Sprintf("RSS %d bytes (its process tree) over the limit of %d", r, s.opts.MaxRSS))
		}
	}
	s.scheduleSweep()
}

// drain tells w to disconnect and kills it if it is still there after
// Timeout.
func (s *supervisor) drain(w *Worker, reason string) {
	if w.state == WorkerDraining {
		return
	}
	w.state = WorkerDraining
	if w.readyTimer != nil { // nil until its process has started
		w.readyTimer.Stop()
	}
	if w.proc == nil {
		return // onStarted kills it: it cannot be serving anyone yet
	}
	w.proc.send(s.disconnectMessage(w), -1)
	if s.opts.StopSignal != 0 {
		w.proc.signal(s.opts.StopSignal)
	}
	e := s.workerEvent(EventDisconnect, w)
	e.Reason = reason
	s.emit(e)
	s.log.Debug("recluster: worker told to disconnect", "worker", w.slot, "pid", w.pid, "reason", reason)
	if s.opts.Timeout < 0 {
		s.kill(w, reason)
		return
	}
	w.killTimer = s.after(s.opts.Timeout, func(s *supervisor) { s.drainTimedOut(w) })
}

func (s *supervisor) drainTimedOut(w *Worker) {
	if s.alive(w) {
		s.kill(w, fmt.Sprintf("still running %v after it was told to disconnect", s.opts.Timeout))
	}
}

// kill ends w at once; a worker whose process has not started yet is
// killed by onStarted.
func (s *supervisor) kill(w *Worker, reason string) {
	w.killed = true
	if w.proc == nil {
		w.killReason = cmp.Or(w.killReason, reason)
		return
	}
	w.proc.kill()
	e := s.workerEvent(EventKilled, w)
	e.Reason = reason
	s.emit(e)
	s.log.Warn("recluster: worker killed", "event", string(EventKilled), "worker", w.slot, "pid", w.pid, "reason", reason)
}

// killAll kills every worker and returns how many there were.
func (s *supervisor) killAll(reason string) int {
	for w := range s.workers {
		s.kill(w, reason)
	}
	return len(s.workers)
}

// release lets go of what the master holds for a worker that has exited
// (or never started).
func (s *supervisor) release(w *Worker) {
	s.remove(w)
	for _, t := range []timer{w.readyTimer, w.killTimer, w.settleTimer, w.uptimeTimer} {
		if t != nil {
			t.Stop()
		}
	}
	w.stopAcceptWatching()
	if w.proc != nil {
		w.proc.release()
		s.readToEnd(w)
	}
}

func (s *supervisor) exited(w *Worker, st exitStatus) {
	if !s.alive(w) {
		return
	}
	s.release(w)
	s.reportUnknown(w)

	e := s.workerEvent(EventExited, w)
	e.ExitCode, e.Signal = st.code, st.signal
	s.emit(e)
	expected := w.state == WorkerDraining
	if !expected && !w.killed { // a kill has its line already, with the reason
		s.log.Warn("recluster: worker "+st.String(), "event", string(EventExited), "worker", w.slot, "pid", w.pid, "generation", w.gen, "state", w.state.String())
	}
	if !expected {
		s.diedBeforeReady(w)
		s.forgetListenPIDOptional(w, st.String())
	}
	if s.reload != nil && w.gen == s.reload.gen && !expected {
		when := "before it was ready"
		if w.state == WorkerStandby {
			when = "while it waited for the rest of its generation"
		}
		s.abortReload(fmt.Errorf("recluster: reload aborted: slot %d (pid %d) %s %s", w.slot, w.pid, st, when), ReloadAborted)
	}
	switch s.phase {
	case PhaseRunning:
		s.reconcileSlot(w.slot)
	case PhaseTerminating:
		s.stopIfEmpty()
	}
}

// diedBeforeReady counts an unasked end of w towards its slot's crash
// loop, when it died before it was ready or soon after (diedEarly). A
// worker of an unfinished reload says nothing about its slot's health:
// the active generation still serves it.
func (s *supervisor) diedBeforeReady(w *Worker) {
	if !s.diedEarly(w) || w.gen > s.gen || w.slot >= s.slots {
		return
	}
	s.failures[w.slot]++
	if s.failures[w.slot] == crashLoopThreshold {
		s.log.Error("recluster: slot is failing: its workers keep dying before they are ready or within min uptime of it; check the program's output",
			"worker", w.slot, "in_a_row", crashLoopThreshold, "min_uptime", s.uptimeWindow(w).String())
	}
}

// covered reports whether slot has, or is getting, a worker of the active
// generation that means to stay.
func (s *supervisor) covered(slot int) bool {
	for _, w := range s.bySlot[slot] {
		if s.reload != nil && w.gen == s.reload.gen {
			continue
		}
		if w.state == WorkerStarting || (w.state == WorkerActive && !w.retiring) {
			return true
		}
	}
	return false
}

// reconcile schedules a paced respawn for every slot left without a worker.
func (s *supervisor) reconcile() {
	for slot := 0; slot < s.slots; slot++ {
		s.reconcileSlot(slot)
	}
}

func (s *supervisor) reconcileSlot(slot int) {
	if s.phase != PhaseRunning || slot >= s.slots || s.respawns[slot] != nil || s.covered(slot) {
		return
	}
	delay := s.pacer.next(s.sys.now())
	s.restarts[slot]++
	var t timer
	t = s.after(delay, func(s *supervisor) { s.respawnNow(slot, t) })
	s.respawns[slot] = t
	e := s.clusterEvent(EventRespawnScheduled, s.gen)
	e.Slot, e.Delay = slot, delay
	s.emit(e)
	if !s.opts.DisableRespawnLog {
		s.log.Info("recluster: respawning worker", "worker", slot, "in", delay.Round(time.Millisecond).String())
	}
}

func (s *supervisor) respawnNow(slot int, t timer) {
	if s.respawns[slot] != t {
		return
	}
	delete(s.respawns, slot)
	if s.phase != PhaseRunning || slot >= s.slots || s.covered(slot) {
		return
	}
	s.spawn(slot, s.gen)
}

func (s *supervisor) cancelRespawns(fromSlot int) {
	for slot, t := range s.respawns {
		if slot >= fromSlot {
			t.Stop()
			delete(s.respawns, slot)
		}
	}
}

func (s *supervisor) startReload(result chan error) {
	if s.phase != PhaseRunning {
		result <- ErrNotRunning
		return
	}
	if s.reload != nil {
		s.abortReload(ErrSuperseded, ReloadSuperseded)
	}
	s.lastGen++
	r := &reloadOp{gen: s.lastGen, started: s.sys.now(), waiters: []chan error{result}, standby: map[int]*Worker{}}
	s.reload = r
	s.emit(s.clusterEvent(EventReloadStarted, r.gen))
	s.log.Info("recluster: reload started", "generation", r.gen)
	for slot := 0; slot < s.slots && s.reload == r; slot++ {
		s.spawn(slot, r.gen)
	}
}

// maybeCommit hands every slot to the new generation once all of its
// workers are ready.
func (s *supervisor) maybeCommit() {
	r := s.reload
	if len(r.standby) < s.slots {
		return
	}
	s.reload = nil
	s.gen = r.gen
	s.cancelRespawns(0)
	for slot := 0; slot < s.slots; slot++ {
		s.activate(r.standby[slot])
	}
	for w := range s.workers {
		if w.gen < r.gen && w.state == WorkerStarting {
			s.drain(w, "its generation was replaced")
		}
	}
	took := s.sys.now().Sub(r.started)
	s.reloads[ReloadCommitted]++
	e := s.clusterEvent(EventReloadCommitted, r.gen)
	e.Duration = took
	s.emit(e)
	s.log.Info("recluster: reload committed", "generation", r.gen, "took", took.Round(time.Millisecond).String())
	for _, ch := range r.waiters {
		ch <- nil
	}
}

// hasActive reports whether slot has an active worker.
func (s *supervisor) hasActive(slot int) bool {
	return slices.ContainsFunc(s.bySlot[slot], func(w *Worker) bool { return w.state == WorkerActive })
}

// abortReload drops the reload in progress; the active generation goes on.
func (s *supervisor) abortReload(err error, outcome ReloadOutcome) {
	r := s.reload
	if r == nil {
		return
	}
	s.reload = nil
	for w := range s.workers {
		if w.gen != r.gen {
			continue
		}
		if w.state == WorkerStandby && !s.hasActive(w.slot) && w.slot < s.slots && s.phase == PhaseRunning {
			// Its old worker died meanwhile: the new one is the slot's only
			// ready worker, so it stays until the slot's respawn is ready.
			s.activate(w)
			continue
		}
		if w.state == WorkerStarting && !w.listening {
			w.state = WorkerDraining            // its exit is expected now
			s.kill(w, "its reload was aborted") // it cannot be serving anyone yet
		} else {
			s.drain(w, "its reload was aborted")
		}
	}
	s.reloads[outcome]++
	e := s.clusterEvent(EventReloadAborted, r.gen)
	e.Err, e.Reason = err, string(outcome)
	s.emit(e)
	if outcome == ReloadSuperseded {
		s.log.Info("recluster: reload superseded by a newer one", "generation", r.gen)
	} else {
		s.log.Error(err.Error(), "event", string(EventReloadAborted), "generation", r.gen)
	}
	for _, ch := range r.waiters {
		ch <- err
	}
	s.reconcile()
}

func (s *supervisor) abortReloadFor(result chan error, err error) {
	if s.reload != nil && slices.Contains(s.reload.waiters, result) {
		s.abortReload(err, ReloadAborted)
	}
}

func (s *supervisor) scale(n int) error {
	if s.phase != PhaseRunning {
		return ErrNotRunning
	}
	old := s.slots
	if err := s.sockets.resize(n); err != nil { // sticky: listen, then attach
		return err
	}
	s.slots = n
	s.log.Info("recluster: scaling", "from", old, "to", n)
	for slot := old; slot < n; slot++ {
		s.spawn(slot, s.gen)
		if s.reload != nil {
			s.spawn(slot, s.reload.gen)
		}
	}
	if n < old && s.opts.Sticky {
		s.cancelRespawns(n)
		s.retireSticky()
		return nil
	}
	if n < old {
		s.cancelRespawns(n)
		for slot := n; slot < old; slot++ {
			s.sockets.releaseSlot(slot)
			for _, w := range s.bySlot[slot] {
				s.drain(w, "scaled down")
			}
			delete(s.failures, slot)
			delete(s.restarts, slot)
			if s.reload != nil {
				delete(s.reload.standby, slot)
			}
		}
		if s.reload != nil {
			s.maybeCommit()
		}
	}
	return nil
}

func (s *supervisor) terminate(result chan error) {
	switch s.phase {
	case PhaseIdle, PhaseStopped:
		s.stop()
		result <- nil
		return
	case PhaseTerminating:
		s.terminateWaiters = append(s.terminateWaiters, result)
		return
	}
	s.phase = PhaseTerminating
	s.terminateWaiters = append(s.terminateWaiters, result)
	s.log.Info("recluster: terminating", "workers", len(s.workers))
	s.cancelRespawns(0)
	s.abortReload(errors.New("recluster: reload aborted: the cluster is terminating"), ReloadAborted)
	for w := range s.workers {
		s.drain(w, "terminate")
	}
	s.stopIfEmpty()
}

func (s *supervisor) stopIfEmpty() {
	if s.phase == PhaseTerminating && len(s.workers) == 0 {
		s.stop()
	}
}

// stop releases what the cluster holds; the loop ends after it.
func (s *supervisor) stop() {
	if s.phase == PhaseStopped {
		return
	}
	s.phase = PhaseStopped
	s.cancelRespawns(0)
	if s.sweepTimer != nil {
		s.sweepTimer.Stop()
	}
	s.sockets.closeAll()
	s.sys.cleanup()
	if !s.startFailed { // Run's error says it all
		s.emit(s.clusterEvent(EventStopped, s.gen))
	}
	s.events.close()
	if s.runResult != nil {
		s.runResult <- ErrNotRunning
		s.runResult = nil
	}
	for _, ch := range s.terminateWaiters {
		ch <- nil
	}
	s.terminateWaiters = nil
}

// sortedWorkers returns the workers whose processes have started, by slot
// and then by generation.
func (s *supervisor) sortedWorkers() []*Worker {
	ws := make([]*Worker, 0, len(s.workers))
	for w := range s.workers {
		if w.proc != nil {
			ws = append(ws, w)
		}
	}
	slices.SortFunc(ws, func(a, b *Worker) int {
		if a.slot != b.slot {
			return a.slot - b.slot
		}
		if a.gen != b.gen {
			return a.gen - b.gen
		}
		return a.pid - b.pid
	})
	return ws
}

// status is the snapshot of the cluster without the processes' figures,
// which Cluster.Status reads off the loop.
func (s *supervisor) status() Status {
	st := Status{
		Phase:      s.phase,
		Slots:      s.slots,
		Generation: s.gen,
		Reloads:    map[ReloadOutcome]int{},
		Workers:    []WorkerStatus{},
	}
	if s.reload != nil {
		st.Reloading = s.reload.gen
	}
	for k, v := range s.reloads {
		st.Reloads[k] = v
	}
	st.Handoffs, st.HandoffFallbacks = s.handoffCounts()
	for _, w := range s.sortedWorkers() {
		st.Workers = append(st.Workers, WorkerStatus{
			Slot: w.slot, PID: w.pid, Generation: w.gen, State: w.state,
			Started: w.started, Ready: !w.readyAt.IsZero(), Restarts: s.restarts[w.slot],
			Status: w.status, Listening: w.listening,
		})
	}
	if s.opts.Sticky {
		st.Sticky = stickyStatus(s.slots)
	}
	s.upgradeStatus(&st)
	for slot := 0; slot < s.slots; slot++ {
		if s.failures[slot] >= crashLoopThreshold {
			st.FailingSlots = append(st.FailingSlots, slot)
		}
	}
	return st
}
