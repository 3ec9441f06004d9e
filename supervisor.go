package recluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
	"golang.org/x/sys/unix"
)

// The supervisor is the cluster's state machine. Its loop is the only
// goroutine that reads or writes the fields below: API calls, process
// exits, worker messages and timers all reach it as functions on one
// channel, so there is nothing to lock.
//
// Worker states: starting -> (standby ->) active -> draining -> exited.
// A slot is "covered" while it has a starting worker of the active
// generation or an active worker that has not asked to retire; a slot that
// is not covered gets a respawn, paced by the pacer.

type phase int

const (
	phaseIdle phase = iota
	phaseRunning
	phaseTerminating
	phaseStopped
)

func (p phase) String() string {
	return [...]string{"idle", "running", "terminating", "stopped"}[p]
}

// crashLoopThreshold is how many workers in a row may die in one slot
// before they are ever ready until the slot is reported as failing.
const crashLoopThreshold = 3

type reloadOp struct {
	gen     int
	started time.Time
	waiters []chan error
}

type supervisor struct {
	c    *Cluster
	opts Options
	log  *slog.Logger

	phase    phase
	slots    int
	gen      int // the active generation
	lastGen  int // the newest generation started
	workers  map[int]*Worker
	reload   *reloadOp
	pacer    pacer
	respawns map[int]*time.Timer // slot -> its scheduled respawn
	restarts map[int]int         // slot -> respawns scheduled
	failures map[int]int         // slot -> workers in a row that died before ready
	reloads  map[string]int
	sockets  *socketRegistry
	events   *eventQueue

	restartOps map[int]*restartOp // slot -> its restart in progress (restart.go)

	terminateWaiters []chan error
	runtimeDir       string // holds the notify sockets
	notifySeq        int
	credential       *syscall.Credential // whom the workers run as; nil: as the master
	startFailed      bool                // Run failed: no cluster ever ran
	sweepTimer       *time.Timer         // heartbeat, age and memory checks

	acceptFallbackLogged bool // said once why readiness falls back to MinUptime
}

func newSupervisor(c *Cluster) *supervisor {
	return &supervisor{
		c:        c,
		opts:     c.opts,
		log:      c.log,
		slots:    c.opts.Workers,
		workers:  map[int]*Worker{},
		respawns: map[int]*time.Timer{},
		restarts: map[int]int{},
		failures: map[int]int{},
		reloads:  map[string]int{},
		sockets:  newSocketRegistry(c.opts.ReusePort),
		pacer:    newPacer(c.opts.Respawn, c.opts.Backoff, time.Now()),
	}
}

func (s *supervisor) loop() {
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	defer signal.Stop(sigchld)
	for s.phase != phaseStopped {
		select {
		case f := <-s.c.calls:
			f(s)
		case <-sigchld:
			s.reap()
		}
	}
	close(s.c.done)
}

func (s *supervisor) emit(e Event) {
	e.Time = time.Now()
	s.observeRestart(e)
	if !s.events.push(e) && s.events.dropped == 1 {
		s.log.Warn("recluster: the OnEvent handler is too slow; events are being dropped")
	}
}

func (s *supervisor) workerEvent(kind EventKind, w *Worker) Event {
	return Event{Kind: kind, Slot: w.slot, PID: w.pid, Generation: w.gen}
}

func (s *supervisor) clusterEvent(kind EventKind, gen int) Event {
	return Event{Kind: kind, Slot: -1, Generation: gen}
}

func (s *supervisor) run() error {
	if s.phase != phaseIdle {
		return errors.New("recluster: Run was already called")
	}
	s.events = newEventQueue(s.opts.OnEvent)
	fail := func(err error) error {
		s.killAll("start failed")
		for pid, w := range s.workers {
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, 0, nil)
			s.release(w)
		}
		s.startFailed = true
		s.stop()
		return err
	}
	if err := s.sockets.bindPassed(s.opts.Sockets); err != nil {
		return fail(fmt.Errorf("recluster: %w", err))
	}
	cred, err := resolveCredential(s.opts.User, s.opts.Group)
	if err != nil {
		return fail(err)
	}
	s.credential = cred
	if s.opts.Notify {
		dir, err := os.MkdirTemp("", "recluster-")
		if err != nil {
			return fail(fmt.Errorf("recluster: cannot make a directory for notify sockets: %w", err))
		}
		s.runtimeDir = dir
		if err := s.giveToWorkers(dir); err != nil {
			return fail(err)
		}
	}
	s.phase = phaseRunning
	s.gen, s.lastGen = 1, 1
	for slot := 0; slot < s.slots; slot++ {
		if _, err := s.spawn(slot, s.gen); err != nil {
			return fail(err)
		}
	}
	s.scheduleSweep()
	s.log.Info("recluster: cluster started", "program", s.c.program, "workers", s.slots, "ready_when", string(s.opts.ReadyWhen))
	return nil
}

// spawn starts a worker for slot in generation gen.
func (s *supervisor) spawn(slot, gen int) (*Worker, error) {
	w := &Worker{slot: slot, gen: gen, outputsDone: make(chan struct{})}
	var cleanups []func() // undo on failure
	fail := func(err error) (*Worker, error) {
		for _, undo := range cleanups {
			undo()
		}
		return nil, fmt.Errorf("recluster: cannot start worker %d (%s): %w", slot, s.c.program, err)
	}
	conn, childFD, err := proto.Pair()
	if err != nil {
		return fail(err)
	}
	defer unix.Close(childFD)
	cleanups = append(cleanups, func() { conn.Close() })
	conn.WriteTimeout = time.Second
	conn.DiscardFDs = true

	null, err := devNull()
	if err != nil {
		return fail(err)
	}
	// The output copiers learn the pid through w once spawned is closed.
	spawned := make(chan struct{})
	defer close(spawned)
	var label func() string
	if s.opts.PrefixOutput {
		label = func() string { return "[" + strconv.Itoa(w.slot) + " " + strconv.Itoa(w.pid) + "] " }
	}
	var outputs sync.WaitGroup
	files := []uintptr{null.Fd()}
	for _, o := range []struct {
		w        io.Writer
		fallback *os.File
	}{{s.opts.Stdout, os.Stdout}, {s.opts.Stderr, os.Stderr}} {
		fd, closeWriteEnd, err := outputPipe(o.w, o.fallback, label, spawned, &outputs)
		if err != nil {
			return fail(err)
		}
		defer closeWriteEnd()
		files = append(files, fd)
	}

	passed, err := s.sockets.passedFor(slot)
	if err != nil {
		return fail(err)
	}
	var names []string
	for _, sock := range passed {
		files = append(files, uintptr(sock.fd))
		names = append(names, sock.name)
	}
	channelFD := len(files)
	files = append(files, uintptr(childFD))
	own := []string{
		proto.EnvWorkerID + "=" + strconv.Itoa(slot),
		proto.EnvGeneration + "=" + strconv.Itoa(gen),
		proto.EnvChannelFD + "=" + strconv.Itoa(channelFD),
		proto.EnvTimeout + "=" + s.opts.Timeout.String(),
		proto.EnvTimeoutMS + "=" + strconv.FormatInt(s.opts.Timeout.Milliseconds(), 10),
	}
	if hb := s.opts.HeartbeatTimeout; hb > 0 {
		own = append(own, proto.EnvHeartbeat+"="+hb.String(), "WATCHDOG_USEC="+strconv.FormatInt(hb.Microseconds(), 10))
	}
	argv0 := s.c.program
	argv := append([]string{s.c.program}, s.opts.Args...)
	if len(names) > 0 {
		own = append(own,
			"LISTEN_FDS="+strconv.Itoa(len(names)),
			"LISTEN_FDNAMES="+strings.Join(names, ":"),
			envTrampoline+"="+s.c.program)
		argv0 = selfExecutable()
	}
	if s.opts.Notify {
		s.notifySeq++
		notify, err := newNotifySocket(filepath.Join(s.runtimeDir, "notify-"+strconv.Itoa(s.notifySeq)+".sock"))
		if err != nil {
			return fail(err)
		}
		cleanups = append(cleanups, notify.close)
		if err := s.giveToWorkers(notify.path); err != nil {
			return fail(err)
		}
		w.notify = notify
		own = append(own, "NOTIFY_SOCKET="+notify.path)
	}
	sys := workerSysProcAttr()
	sys.Credential = s.credential
	pid, err := startProcess(argv0, argv, &syscall.ProcAttr{
		Dir:   s.opts.Dir,
		Env:   workerEnv(os.Environ(), s.opts.Env, own),
		Files: files,
		Sys:   sys,
	})
	if err != nil {
		return fail(err)
	}
	w.pid, w.started, w.conn = pid, time.Now(), conn
	w.lastBeat = w.started
	if s.opts.MaxAge > 0 {
		w.maxAge = s.opts.MaxAge - time.Duration(rand.Int64N(int64(s.opts.MaxAge/10)+1))
	}
	s.workers[pid] = w
	go func() {
		outputs.Wait()
		close(w.outputsDone)
	}()
	go s.readChannel(w)
	if w.notify != nil {
		go w.notify.serve(pid,
			func(fields map[string]string) { s.c.post(func(s *supervisor) { s.onNotify(w, fields) }) },
			func(sender int) {
				s.c.post(func(s *supervisor) {
					s.log.Warn("recluster: ignored a notify message that did not come from the worker's main process", "worker", w.slot, "pid", w.pid, "sender_pid", sender)
				})
			})
	}
	w.readyTimer = time.AfterFunc(s.opts.ReadyTimeout, func() {
		s.c.post(func(s *supervisor) { s.readyTimedOut(w) })
	})
	s.emit(s.workerEvent(EventSpawned, w))
	s.log.Debug("recluster: worker spawned", "worker", slot, "pid", pid, "generation", gen)
	// A worker holds inherited sockets from its first instruction.
	w.listening = len(names) > 0
	switch {
	case s.opts.ReadyWhen == Started:
		s.markReady(w)
	case s.opts.ReadyWhen == Listening && w.listening && s.opts.MinUptime < 0:
		s.markReady(w)
	case s.opts.ReadyWhen == Listening && w.listening:
		s.awaitAccepting(w, passed)
	}
	return w, nil
}

// readChannel turns the worker's channel messages into supervisor calls.
func (s *supervisor) readChannel(w *Worker) {
	for {
		m, fd, err := w.conn.Receive()
		if errors.Is(err, proto.ErrMalformed) {
			s.c.post(func(s *supervisor) {
				s.log.Warn("recluster: ignored a malformed message from a worker", "worker", w.slot, "pid", w.pid, "error", err)
			})
			continue
		}
		if err != nil {
			return
		}
		if fd >= 0 {
			unix.Close(fd) // workers have no business sending descriptors
		}
		s.c.post(func(s *supervisor) { s.onMessage(w, m) })
	}
}

func (s *supervisor) alive(w *Worker) bool { return s.workers[w.pid] == w }

func (s *supervisor) onMessage(w *Worker, m proto.Message) {
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
		if s.opts.ReadyWhen == Listening {
			s.markReady(w)
		}
	case proto.CmdDisconnect:
		// A worker that is not serving its slot yet is replaced once it is.
		w.retireAsked = true
		s.replace(w, "the worker asked to be replaced")
	case proto.CmdHeartbeat:
		w.lastBeat = time.Now()
	case proto.CmdStatus:
		w.status = m.Status
	default:
		e := s.workerEvent(EventMessage, w)
		e.Message = m.Cmd
		s.emit(e)
	}
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
		w.lastBeat = time.Now()
	}
}

func (s *supervisor) onListen(w *Worker, m proto.Message) {
	network := m.Network
	if network == "" {
		network = "tcp"
	}
	sock, err := s.sockets.get(network, m.Address, w.slot)
	if err != nil {
		w.conn.Send(proto.Message{Cmd: proto.CmdListen, ID: m.ID, Error: err.Error()}, -1)
		s.log.Error("recluster: "+err.Error(), "event", string(EventListenFailed), "worker", w.slot, "pid", w.pid)
		e := s.workerEvent(EventListenFailed, w)
		e.Err = err
		s.emit(e)
		return
	}
	reply := proto.Message{Cmd: proto.CmdListen, ID: m.ID, Network: sock.addr.Network(), Address: sock.addr.String()}
	if err := w.conn.Send(reply, sock.fd); err != nil {
		s.log.Warn("recluster: could not hand a listener to a worker", "worker", w.slot, "pid", w.pid, "error", err)
		return
	}
	w.listening = true
	e := s.workerEvent(EventListening, w)
	e.Addr = sock.addr
	s.emit(e)
	if s.opts.ReadyWhen == Listening {
		s.markReady(w)
	}
}

func (s *supervisor) markReady(w *Worker) {
	if w.state != stateStarting {
		return
	}
	w.readyTimer.Stop()
	w.stopAcceptWatching()
	w.readyAt = time.Now()
	s.failures[w.slot] = 0
	s.emit(s.workerEvent(EventReady, w))
	if s.reload != nil && w.gen == s.reload.gen {
		w.state = stateStandby
		s.maybeCommit()
		return
	}
	if w.slot >= s.slots || s.phase != phaseRunning {
		s.drain(w, "not needed any more")
		return
	}
	s.activate(w)
}

// activate makes w its slot's active worker; whoever served the slot
// before is told to go only now, so the slot never goes without one.
func (s *supervisor) activate(w *Worker) {
	for _, old := range s.workers {
		if old != w && old.slot == w.slot && old.state == stateActive {
			s.drain(old, fmt.Sprintf("replaced by pid %d", w.pid))
		}
	}
	w.state = stateActive
	s.emit(s.workerEvent(EventActive, w))
	if w.retireAsked {
		s.replace(w, "the worker asked to be replaced")
	}
}

func (s *supervisor) readyTimedOut(w *Worker) {
	if !s.alive(w) || w.state != stateStarting {
		return
	}
	cause := fmt.Sprintf("was not ready within %v (ReadyWhen=%s)", s.opts.ReadyTimeout, s.opts.ReadyWhen)
	if s.reload != nil && w.gen == s.reload.gen {
		s.abortReload(fmt.Errorf("recluster: reload aborted: slot %d (pid %d) %s", w.slot, w.pid, cause), "aborted")
		return
	}
	s.kill(w, cause)
}

// replace starts a successor for an active worker, through the same
// ready-gated path as a reload: w serves until the successor is ready.
func (s *supervisor) replace(w *Worker, reason string) {
	if w.state != stateActive || w.retiring || s.phase != phaseRunning {
		return
	}
	w.retiring = true
	e := s.workerEvent(EventRetire, w)
	e.Reason = reason
	s.emit(e)
	s.log.Info("recluster: replacing worker", "worker", w.slot, "pid", w.pid, "reason", reason)
	if _, err := s.spawn(w.slot, s.gen); err != nil {
		s.log.Error(err.Error())
		s.reconcile()
	}
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
	s.sweepTimer = time.AfterFunc(s.sweepInterval(), func() { s.c.post((*supervisor).sweep) })
}

// sweep replaces hung workers and recycles old or bloated ones.
func (s *supervisor) sweep() {
	if s.phase != phaseRunning {
		return
	}
	now := time.Now()
	for _, w := range s.workers {
		if w.state == stateDraining || w.killed {
			continue
		}
		if hb := s.opts.HeartbeatTimeout; hb > 0 && now.Sub(w.lastBeat) > hb {
			s.kill(w, fmt.Sprintf("no heartbeat for %v (heartbeat timeout %v)", now.Sub(w.lastBeat).Round(time.Millisecond), hb))
			continue
		}
		if w.state != stateActive || w.retiring || s.reload != nil {
			continue
		}
		if w.maxAge > 0 && now.Sub(w.started) > w.maxAge {
			s.replace(w, fmt.Sprintf("older than max age %v", s.opts.MaxAge))
			continue
		}
		if s.opts.MaxRSS > 0 {
			if rss, _, ok := procUsage(w.pid); ok && rss > s.opts.MaxRSS {
				s.replace(w, fmt.Sprintf("RSS %d bytes over the limit of %d", rss, s.opts.MaxRSS))
			}
		}
	}
	s.scheduleSweep()
}

// giveToWorkers hands a path the workers must reach (the notify sockets)
// to the account they run as.
func (s *supervisor) giveToWorkers(path string) error {
	if s.credential == nil {
		return nil
	}
	if err := os.Chown(path, int(s.credential.Uid), int(s.credential.Gid)); err != nil {
		return fmt.Errorf("recluster: %w", err)
	}
	return nil
}

// drain tells w to disconnect and kills it if it is still there after
// Timeout.
func (s *supervisor) drain(w *Worker, reason string) {
	if w.state == stateDraining {
		return
	}
	w.state = stateDraining
	w.readyTimer.Stop()
	w.conn.Send(proto.Message{Cmd: proto.CmdDisconnect}, -1)
	if s.opts.StopSignal != 0 {
		syscall.Kill(w.pid, s.opts.StopSignal)
	}
	e := s.workerEvent(EventDisconnect, w)
	e.Reason = reason
	s.emit(e)
	s.log.Debug("recluster: worker told to disconnect", "worker", w.slot, "pid", w.pid, "reason", reason)
	if s.opts.Timeout < 0 {
		s.kill(w, reason)
		return
	}
	w.killTimer = time.AfterFunc(s.opts.Timeout, func() {
		s.c.post(func(s *supervisor) {
			if s.alive(w) {
				s.kill(w, fmt.Sprintf("still running %v after it was told to disconnect", s.opts.Timeout))
			}
		})
	})
}

func (s *supervisor) kill(w *Worker, reason string) {
	w.killed = true
	syscall.Kill(-w.pid, syscall.SIGKILL)
	syscall.Kill(w.pid, syscall.SIGKILL)
	e := s.workerEvent(EventKilled, w)
	e.Reason = reason
	s.emit(e)
	s.log.Warn("recluster: worker killed", "event", string(EventKilled), "worker", w.slot, "pid", w.pid, "reason", reason)
}

func (s *supervisor) killAll(reason string) {
	for _, w := range s.workers {
		s.kill(w, reason)
	}
}

func (s *supervisor) reap() {
	var ws syscall.WaitStatus
	if s.opts.ReapOrphans {
		for {
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				return
			}
			if w := s.workers[pid]; w != nil {
				s.exited(w, ws)
			}
		}
	}
	for pid, w := range s.workers {
		if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); got == pid && err == nil {
			s.exited(w, ws)
		}
	}
}

func describeExit(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "was killed by signal " + ws.Signal().String()
	}
	return "exited with code " + strconv.Itoa(ws.ExitStatus())
}

// release lets go of what the master holds for a worker that has exited.
func (s *supervisor) release(w *Worker) {
	delete(s.workers, w.pid)
	w.readyTimer.Stop()
	if w.killTimer != nil {
		w.killTimer.Stop()
	}
	if w.settleTimer != nil {
		w.settleTimer.Stop()
	}
	w.stopAcceptWatching()
	w.conn.Close()
	if w.notify != nil {
		w.notify.close()
	}
	// What the worker started in its process group must not outlive it
	// and keep the port.
	syscall.Kill(-w.pid, syscall.SIGKILL)
}

func (s *supervisor) exited(w *Worker, ws syscall.WaitStatus) {
	s.release(w)

	e := s.workerEvent(EventExited, w)
	e.ExitCode = ws.ExitStatus()
	if ws.Signaled() {
		e.ExitCode, e.Signal = -1, ws.Signal()
	}
	s.emit(e)
	expected := w.state == stateDraining
	if !expected && !w.killed { // a kill has its line already, with the reason
		s.log.Warn("recluster: worker "+describeExit(ws), "event", string(EventExited), "worker", w.slot, "pid", w.pid, "generation", w.gen, "state", w.state.String())
	}
	// A worker of an unfinished reload says nothing about its slot's health:
	// the active generation still serves it.
	if w.readyAt.IsZero() && !expected && w.gen <= s.gen {
		s.failures[w.slot]++
		if s.failures[w.slot] == crashLoopThreshold {
			s.log.Error("recluster: slot is failing: its workers keep dying before they are ready; check the program's output", "worker", w.slot, "in_a_row", crashLoopThreshold)
		}
	}
	if s.reload != nil && w.gen == s.reload.gen && !expected {
		when := "before it was ready"
		if w.state == stateStandby {
			when = "while it waited for the rest of its generation"
		}
		s.abortReload(fmt.Errorf("recluster: reload aborted: slot %d (pid %d) %s %s", w.slot, w.pid, describeExit(ws), when), "aborted")
	}
	switch s.phase {
	case phaseRunning:
		s.reconcile()
	case phaseTerminating:
		if len(s.workers) == 0 {
			s.stop()
		}
	}
}

// covered reports whether slot has, or is getting, a worker of the active
// generation that means to stay.
func (s *supervisor) covered(slot int) bool {
	for _, w := range s.workers {
		if w.slot != slot || (s.reload != nil && w.gen == s.reload.gen) {
			continue
		}
		if w.state == stateStarting || (w.state == stateActive && !w.retiring) {
			return true
		}
	}
	return false
}

// reconcile schedules a paced respawn for every slot left without a worker.
func (s *supervisor) reconcile() {
	if s.phase != phaseRunning {
		return
	}
	for slot := 0; slot < s.slots; slot++ {
		if s.respawns[slot] != nil || s.covered(slot) {
			continue
		}
		delay := s.pacer.next(time.Now())
		s.restarts[slot]++
		var timer *time.Timer
		timer = time.AfterFunc(delay, func() {
			s.c.post(func(s *supervisor) { s.respawnNow(slot, timer) })
		})
		s.respawns[slot] = timer
		e := s.clusterEvent(EventRespawnScheduled, s.gen)
		e.Slot, e.Delay = slot, delay
		s.emit(e)
		if !s.opts.DisableRespawnLog {
			s.log.Info("recluster: respawning worker", "worker", slot, "in", delay.Round(time.Millisecond).String())
		}
	}
}

func (s *supervisor) respawnNow(slot int, timer *time.Timer) {
	if s.respawns[slot] != timer {
		return
	}
	delete(s.respawns, slot)
	if s.phase != phaseRunning || slot >= s.slots || s.covered(slot) {
		return
	}
	if _, err := s.spawn(slot, s.gen); err != nil {
		s.log.Error(err.Error())
		s.reconcile()
	}
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
	if s.phase != phaseRunning {
		result <- ErrNotRunning
		return
	}
	if s.reload != nil {
		s.abortReload(ErrSuperseded, "superseded")
	}
	s.lastGen++
	r := &reloadOp{gen: s.lastGen, started: time.Now(), waiters: []chan error{result}}
	s.reload = r
	s.emit(s.clusterEvent(EventReloadStarted, r.gen))
	s.log.Info("recluster: reload started", "generation", r.gen)
	for slot := 0; slot < s.slots && s.reload == r; slot++ {
		if _, err := s.spawn(slot, r.gen); err != nil {
			s.abortReload(fmt.Errorf("recluster: reload aborted: %w", err), "aborted")
		}
	}
}

// maybeCommit hands every slot to the new generation once all of its
// workers are ready.
func (s *supervisor) maybeCommit() {
	r := s.reload
	ready := map[int]*Worker{}
	for _, w := range s.workers {
		if w.gen == r.gen && w.state == stateStandby {
			ready[w.slot] = w
		}
	}
	for slot := 0; slot < s.slots; slot++ {
		if ready[slot] == nil {
			return
		}
	}
	s.reload = nil
	s.gen = r.gen
	s.cancelRespawns(0)
	for _, w := range ready {
		s.activate(w)
	}
	for _, w := range s.workers {
		if w.gen < r.gen && w.state == stateStarting {
			s.drain(w, "its generation was replaced")
		}
	}
	took := time.Since(r.started)
	s.reloads["committed"]++
	e := s.clusterEvent(EventReloadCommitted, r.gen)
	e.Duration = took
	s.emit(e)
	s.log.Info("recluster: reload committed", "generation", r.gen, "took", took.Round(time.Millisecond).String())
	for _, ch := range r.waiters {
		ch <- nil
	}
}

// abortReload drops the reload in progress; the active generation goes on.
func (s *supervisor) abortReload(err error, result string) {
	r := s.reload
	if r == nil {
		return
	}
	s.reload = nil
	served := map[int]bool{}
	for _, w := range s.workers {
		if w.state == stateActive {
			served[w.slot] = true
		}
	}
	for _, w := range s.workers {
		if w.gen != r.gen {
			continue
		}
		if w.state == stateStandby && !served[w.slot] && w.slot < s.slots && s.phase == phaseRunning {
			// Its old worker died meanwhile: the new one is the slot's only
			// ready worker, so it stays until the slot's respawn is ready.
			s.activate(w)
			continue
		}
		if w.state == stateStarting && !w.listening {
			w.state = stateDraining             // its exit is expected now
			s.kill(w, "its reload was aborted") // it cannot be serving anyone yet
		} else {
			s.drain(w, "its reload was aborted")
		}
	}
	s.reloads[result]++
	e := s.clusterEvent(EventReloadAborted, r.gen)
	e.Err, e.Reason = err, result
	s.emit(e)
	if result == "superseded" {
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
		s.abortReload(err, "aborted")
	}
}

func (s *supervisor) scale(n int) error {
	if s.phase != phaseRunning {
		return ErrNotRunning
	}
	old := s.slots
	s.slots = n
	s.log.Info("recluster: scaling", "from", old, "to", n)
	for slot := old; slot < n; slot++ {
		if _, err := s.spawn(slot, s.gen); err != nil {
			s.abortReload(fmt.Errorf("recluster: reload aborted: %w", err), "aborted")
			s.reconcile()
			return err
		}
		if s.reload != nil {
			if _, err := s.spawn(slot, s.reload.gen); err != nil {
				s.abortReload(fmt.Errorf("recluster: reload aborted: %w", err), "aborted")
			}
		}
	}
	if n < old {
		s.cancelRespawns(n)
		for slot := n; slot < old; slot++ {
			s.sockets.releaseSlot(slot)
		}
		for _, w := range s.workers {
			if w.slot >= n {
				s.drain(w, "scaled down")
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
	case phaseIdle, phaseStopped:
		s.stop()
		result <- nil
		return
	case phaseTerminating:
		s.terminateWaiters = append(s.terminateWaiters, result)
		return
	}
	s.phase = phaseTerminating
	s.terminateWaiters = append(s.terminateWaiters, result)
	s.log.Info("recluster: terminating", "workers", len(s.workers))
	s.cancelRespawns(0)
	s.abortReload(errors.New("recluster: reload aborted: the cluster is terminating"), "aborted")
	for _, w := range s.workers {
		s.drain(w, "terminate")
	}
	if len(s.workers) == 0 {
		s.stop()
	}
}

// stop releases what the cluster holds; the loop ends after it.
func (s *supervisor) stop() {
	if s.phase == phaseStopped {
		return
	}
	s.phase = phaseStopped
	s.cancelRespawns(0)
	if s.sweepTimer != nil {
		s.sweepTimer.Stop()
	}
	s.sockets.closeAll()
	if s.runtimeDir != "" {
		os.RemoveAll(s.runtimeDir)
	}
	if !s.startFailed { // Run's error says it all
		s.emit(s.clusterEvent(EventStopped, s.gen))
	}
	s.events.close()
	for _, ch := range s.terminateWaiters {
		ch <- nil
	}
	s.terminateWaiters = nil
}

func (s *supervisor) sortedWorkers() []*Worker {
	ws := make([]*Worker, 0, len(s.workers))
	for _, w := range s.workers {
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(a, b *Worker) int {
		if a.slot != b.slot {
			return a.slot - b.slot
		}
		return a.gen - b.gen
	})
	return ws
}

func (s *supervisor) status() Status {
	st := Status{
		Phase:      s.phase.String(),
		Slots:      s.slots,
		Generation: s.gen,
		Reloads:    map[string]int{},
		Workers:    []WorkerStatus{},
	}
	if s.reload != nil {
		st.Reloading = s.reload.gen
	}
	for k, v := range s.reloads {
		st.Reloads[k] = v
	}
	for _, w := range s.sortedWorkers() {
		rss, cpu, _ := procUsage(w.pid)
		st.Workers = append(st.Workers, WorkerStatus{
			Slot: w.slot, PID: w.pid, Generation: w.gen, State: w.state.String(),
			Started: w.started, Ready: !w.readyAt.IsZero(), Restarts: s.restarts[w.slot],
			Status: w.status, Listening: w.listening,
			RSSBytes: rss, CPUSeconds: cpu.Seconds(),
		})
	}
	for slot := 0; slot < s.slots; slot++ {
		if s.failures[slot] >= crashLoopThreshold {
			st.FailingSlots = append(st.FailingSlots, slot)
		}
	}
	return st
}
