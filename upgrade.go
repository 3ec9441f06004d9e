package recluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/buildinfo"
)

// An upgrade in place replaces the master's program with the binary on
// disk without a new process: the master freezes its state, writes it to
// a memfd and calls execve from its main thread (mainthread.go), so that
// its pid, its listening sockets, its workers' channels and notify
// sockets and the embedding program's own descriptors all survive, and
// the new program adopts them in Run. The workers never notice.
//
// The freeze: every worker's readers are stopped (proto.Conn.Interrupt),
// which first delivers every complete message they had read, so the loop
// has acted on all of them; what is queued for the workers is written;
// the reaper is held, so that no exit is reaped and lost; then the state
// is taken and the exec made. If the exec fails, everything resumes.

// UpgradeOptions configure Cluster.Upgrade.
type UpgradeOptions struct {
	// Binary is the program to execute; default the path this master was
	// started from (the file a deploy replaces), not /proc/self/exe,
	// which names the deleted old file once a deploy replaced it.
	Binary string
	// Args is its argv, argv[0] included; default os.Args.
	Args []string
	// Files are descriptors of the program's own (a control listener, a
	// client connection awaiting its answer) kept open across the exec;
	// the new program finds them by name with Inherited().File.
	Files map[string]syscall.Conn
	// Data are values of the program's own, found with Inherited().Value.
	Data map[string]string
}

// Inheritance is what the master this process replaced handed over for
// the program (UpgradeOptions.Files and Data).
type Inheritance struct {
	mu       sync.Mutex
	files    map[string]int
	data     map[string]string
	upgrades int
	version  string
}

// inheritance is the program's share of the inherited state.
var inheritance *Inheritance

// Inherited returns what the master this process replaced handed over, or
// nil when the process was not started by Cluster.Upgrade.
func Inherited() *Inheritance { return inheritance }

// File returns the inherited descriptor called name, once; nil when there
// is none or it was taken already.
func (i *Inheritance) File(name string) *os.File {
	i.mu.Lock()
	defer i.mu.Unlock()
	fd, ok := i.files[name]
	if !ok {
		return nil
	}
	delete(i.files, name)
	return os.NewFile(uintptr(fd), name)
}

// Value returns the inherited value called name.
func (i *Inheritance) Value(name string) string { return i.data[name] }

// Upgrades counts the upgrades in place of this master process, this one
// included.
func (i *Inheritance) Upgrades() int { return i.upgrades }

// PreviousVersion is the build of the master this process replaced.
func (i *Inheritance) PreviousVersion() string { return i.version }

// upgradeRecord is what Status says about the upgrades.
type upgradeRecord struct {
	count  int
	at     time.Time
	frozen time.Duration
}

// masterBinary is the path this master was started from: argv[0] made
// absolute (a symlink a deploy switches is followed on the next exec), or
// the path an upgrade executed.
var masterBinary = sync.OnceValue(func() string {
	if inherited != nil && inherited.Binary != "" {
		return inherited.Binary
	}
	if arg0 := os.Args[0]; strings.Contains(arg0, "/") {
		if abs, err := filepath.Abs(arg0); err == nil {
			return abs
		}
	} else if p, err := exec.LookPath(arg0); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	return selfExecutable()
})

// The path is fixed at start-up, before anything can change the working
// directory.
func init() { masterBinary() }

func init() {
	if inherited != nil {
		inheritance = &Inheritance{files: inherited.Files, data: inherited.Data, upgrades: inherited.Upgrades, version: inherited.Version}
	}
}

// takeInherited returns the state an upgrade handed to this process, once.
func takeInherited() (*upgradeState, error) {
	st, err := inherited, inheritedErr
	inherited, inheritedErr = nil, nil
	return st, err
}

// dueTimer is a timer that knows when it fires.
type dueTimer struct {
	timer
	due time.Time
}

// stoppedTimer stands for a timer that has already done its work.
type stoppedTimer struct{}

func (stoppedTimer) Stop() bool { return false }

// timeLeft returns how long t has to run from now, or nil for no timer.
func timeLeft(t timer, now time.Time) *time.Duration {
	dt, ok := t.(*dueTimer)
	if !ok {
		return nil
	}
	d := dt.due.Sub(now)
	return &d
}

// Upgrade replaces the master's program, in place, with the binary at
// opts.Binary (by default the path the master was started from): same
// pid, same listening sockets, and every worker keeps running; the new
// program's Run adopts them instead of starting new ones. It needs Linux
// and a master whose main function runs through ServeMainThread.
//
// First the new binary is run with a pre-flight check (it must read this
// master's state format and exit 0); if it fails, the upgrade is refused
// with the binary's own words and nothing changes. An upgrade is refused,
// too, while a reload (until the generation it replaced has gone), a
// restart, a terminate or another upgrade is in progress, or a worker is
// being started; it waits (at most two seconds) for connections that
// exited workers handed over and that are still in transit. The relayed
// output (Options.OutputFormat) travels: the workers' pipes, the lines
// half read, the history of Output. On success Upgrade does not return:
// the process is running the new program.
func (c *Cluster) Upgrade(ctx context.Context, opts UpgradeOptions) error {
	if err := upgradeSupported(); err != nil {
		return err
	}
	if !mainThreadOn.Load() || forkedElsewhere.Load() {
		return errNotMainThread
	}
	if opts.Binary == "" {
		opts.Binary = masterBinary()
	}
	if opts.Args == nil {
		opts.Args = os.Args
	}
	var err error
	if !c.call(func(s *supervisor) { err = s.upgradeRefusal() }) {
		return ErrNotRunning
	}
	if err != nil {
		return err
	}
	if err := c.preflight(ctx, opts.Binary); err != nil {
		return err
	}
	result := make(chan error, 1)
	if !c.call(func(s *supervisor) { s.beginUpgrade(opts, result) }) {
		return ErrNotRunning
	}
	return <-result
}

// preflight runs the new binary with the check of this master's state
// format (upgradeCheck answers it in the new binary's init).
func (c *Cluster) preflight(ctx context.Context, binary string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary)
	cmd.Env = append(os.Environ(), envUpgradeCheck+"="+strconv.Itoa(stateFormat))
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = "it printed nothing"
		}
		return fmt.Errorf("recluster: upgrade refused: the new binary %s failed its pre-flight check (%v): %s; the master goes on unchanged", binary, err, msg)
	}
	return nil
}

// upgradeOp is an upgrade in progress: its freeze waits for every
// worker's readers to stop.
type upgradeOp struct {
	opts    UpgradeOptions
	result  chan error
	started time.Time
	paused  map[*Worker]bool
	waiting int
	// Once every reader has stopped, the upgrade waits (at most
	// transitWait) for the channels of exited workers to be read to
	// their end: the connections they handed over are in transit there.
	transitTimer timer
	transitLate  bool
}

// transitWait bounds an upgrade's wait for the channels and output of
// exited workers (their channel is read until it has been silent for a
// second; see workerProcess.release).
const transitWait = 2 * time.Second

// upgradeRefusal says why an upgrade cannot start now, or nil.
func (s *supervisor) upgradeRefusal() error {
	if s.upgrading != nil {
		return errors.New("recluster: upgrade refused: another upgrade is in progress")
	}
	return s.upgradeBlocker()
}

// upgradeBlocker is what keeps the cluster from being frozen now: the
// operations that would be cut in half, and the modes whose state does not
// travel.
func (s *supervisor) upgradeBlocker() error {
	refuse := func(why string) error {
		return errors.New("recluster: upgrade refused: " + why)
	}
	switch {
	case s.phase != PhaseRunning:
		return refuse("the cluster is " + s.phase.String())
	case s.reload != nil:
		return refuse(fmt.Sprintf("a reload to generation %d is in progress; upgrade once it has finished (see recluster status)", s.reload.gen))
	case len(s.restartOps) > 0:
		return refuse("a restart is in progress; upgrade once it has finished")
	case s.opts.Sticky:
		return refuse("Sticky mode's socket program and retiring slots do not travel across an exec yet; restart the cluster to change its binary")
	case len(s.tracks.list) > 0:
		return refuse(fmt.Sprintf("the reload to generation %d is still followed (its probation, or the drain of the generation it replaced); upgrade once it has ended (see recluster status)", s.tracks.list[0].gen))
	case s.c.relay == nil && (!isFile(s.opts.Stdout) || !isFile(s.opts.Stderr)):
		return refuse("the workers' output goes through pipes that the master copies to Options.Stdout or Stderr, which are not files and do not travel across an exec; set OutputFormat (the relay travels) or give files to upgrade in place")
	}
	if _, ok := s.sys.(*osSystem); !ok {
		return refuse("the cluster does not run real processes")
	}
	for w := range s.workers {
		if w.proc == nil {
			return refuse(fmt.Sprintf("the worker of slot %d is being started; try again in a moment", w.slot))
		}
	}
	return nil
}

// isFile reports whether w is a file the workers can write to directly
// (or nil: the master's own).
func isFile(w io.Writer) bool {
	_, ok := w.(*os.File)
	return w == nil || ok
}

// beginUpgrade starts the freeze: it stops every worker's readers, and
// finishUpgrade goes on once all have stopped.
func (s *supervisor) beginUpgrade(opts UpgradeOptions, result chan error) {
	if err := s.upgradeRefusal(); err != nil {
		result <- err
		return
	}
	op := &upgradeOp{opts: opts, result: result, started: s.sys.now(), paused: map[*Worker]bool{}}
	s.upgrading = op
	s.log.Info("recluster: upgrading in place", "binary", opts.Binary, "workers", len(s.workers))
	for w := range s.workers {
		op.paused[w] = true
		op.waiting++
		w.proc.(*workerProcess).pause(func() {
			s.post(func(s *supervisor) { s.upgradePaused(op) })
		})
	}
	s.upgradeAfterTransit()
}

func (s *supervisor) upgradePaused(op *upgradeOp) {
	if s.upgrading != op {
		return
	}
	op.waiting--
	s.upgradeAfterTransit()
}

// upgradeAfterTransit goes on with an upgrade whose freeze is complete
// once no handed connection can be in transit in the channel of a worker
// that exited, nor its last output in its pipes: each is read to its end
// first (readToEnd), for at most transitWait.
func (s *supervisor) upgradeAfterTransit() {
	op := s.upgrading
	if op == nil || op.waiting > 0 {
		return
	}
	if len(s.handoff.reading) > 0 && !op.transitLate {
		if op.transitTimer == nil {
			op.transitTimer = s.after(transitWait, func(s *supervisor) {
				if s.upgrading == op {
					op.transitLate = true
					s.log.Warn("recluster: upgrading although the channel or output of an exited worker is still open", "workers", len(s.handoff.reading), "waited", transitWait.String())
					s.upgradeAfterTransit()
				}
			})
		}
		return
	}
	if op.transitTimer != nil {
		op.transitTimer.Stop()
	}
	s.finishUpgrade(op)
}

// finishUpgrade execs the new program; it returns only if the upgrade
// failed, and then resumes what the freeze stopped.
func (s *supervisor) finishUpgrade(op *upgradeOp) {
	err := s.upgradeBlocker()
	for w := range s.workers {
		if err == nil && !op.paused[w] {
			err = fmt.Errorf("recluster: upgrade refused: the worker of slot %d started during the upgrade; try again", w.slot)
		}
	}
	if err == nil {
		err = s.execUpgrade(op)
	}
	s.upgrading = nil
	for w := range op.paused {
		if s.alive(w) {
			w.proc.(*workerProcess).resume()
		}
	}
	op.result <- err
}

// execUpgrade takes the state and execs; it returns only on failure.
func (s *supervisor) execUpgrade(op *upgradeOp) error {
	sys := s.sys.(*osSystem)
	for w := range s.workers {
		w.proc.(*workerProcess).flush()
	}
	var output *stateRelay
	if sys.relay != nil {
		output = sys.relay.takeState()
		defer func() { sys.relay.giveBack(output) }() // reached only if the exec failed
	}
	// No exit may be reaped from here on: it would be lost in the exec.
	sys.reaper.mu.Lock()
	defer sys.reaper.mu.Unlock()
	st, err := s.snapshot(op, sys)
	if err != nil {
		return fmt.Errorf("recluster: upgrade failed: %w; the master goes on unchanged", err)
	}
	st.Output = output
	err = execWithState(st, op.opts.Binary, op.opts.Args)
	return fmt.Errorf("recluster: upgrade failed: cannot execute %s: %w; the master goes on unchanged", op.opts.Binary, err)
}

// snapshot takes the state the new master needs. sys.reaper.mu is held.
func (s *supervisor) snapshot(op *upgradeOp, sys *osSystem) (*upgradeState, error) {
	now := s.sys.now()
	st := &upgradeState{
		Binary: op.opts.Binary, Version: buildinfo.Read().String(),
		Taken: monotonicNow(), TakenWall: now, Upgrades: s.upgraded.count + 1,
		Slots: s.slots, Gen: s.gen, LastGen: s.lastGen,
		Restarts: s.restarts, Failures: s.failures, Reloads: s.reloads,
		Respawns:             map[int]time.Duration{},
		Pacer:                statePacer{Gap: s.pacer.gap, LastSpawnIn: s.pacer.lastSpawn.Sub(now)},
		AcceptFallbackLogged: s.acceptFallbackLogged,
		RuntimeDir:           sys.runtimeDir, NotifySeq: sys.notifySeq.Load(),
		Files: map[string]int{}, Data: op.opts.Data,
		DirectExec: stateFileOf(s.directExec),
	}
	if !s.pacer.lastCrash.IsZero() {
		ago := now.Sub(s.pacer.lastCrash)
		st.Pacer.LastCrashAgo = &ago
	}
	for slot, t := range s.respawns {
		if left := timeLeft(t, now); left != nil {
			st.Respawns[slot] = *left
		}
	}
	reg := s.sockets.(*socketRegistry)
	for key, so := range reg.byKey {
		st.Sockets = append(st.Sockets, stateSocket{Key: key, Name: so.name, Network: so.network, Address: so.address, FD: so.fd, Adopted: so.adopted, Blocked: so.blocked})
		for _, p := range reg.passed {
			if p == so {
				st.Passed = append(st.Passed, key)
			}
		}
	}
	if len(st.Passed) != len(reg.passed) {
		return nil, errors.New("a passed socket is missing from the registry")
	}
	st.Unlinks, st.Bound = reg.unlinks, reg.bound
	st.Windows = s.tracks.window
	st.Handoffs, st.HandoffFallbacks = s.handoffCounts()
	for _, w := range s.sortedWorkers() {
		if _, ok := sys.reaper.tracked[w.pid]; !ok {
			// It was reaped before the freeze: its exit is on its way to
			// the loop and would be lost. The new master sees its slot
			// uncovered and respawns it.
			s.log.Info("recluster: a worker exited during the upgrade; the new master replaces it", "worker", w.slot, "pid", w.pid)
			continue
		}
		p := w.proc.(*workerProcess)
		channel, notify, err := p.descriptors()
		if err != nil {
			return nil, fmt.Errorf("worker %d (pid %d): %w", w.slot, w.pid, err)
		}
		sw := stateWorker{
			Slot: w.slot, PID: w.pid, Gen: w.gen, State: w.state,
			Age: now.Sub(w.started), BeatAgo: now.Sub(w.lastBeat),
			Retiring: w.retiring, RetireAsked: w.retireAsked, Killed: w.killed, Listening: w.listening,
			MaxAge: w.maxAge, Status: w.status,
			Channel: channel, Notify: notify,
			File: stateFileOf(p.file), Direct: p.direct,
		}
		sw.Pending, sw.PendingFDs = p.conn.Buffered()
		if sw.Outputs, err = p.outputState(); err != nil {
			return nil, fmt.Errorf("worker %d (pid %d): %w", w.slot, w.pid, err)
		}
		sw.UptimeIn = timeLeft(w.uptimeTimer, now)
		for key := range w.handoffKeys {
			sw.HandoffKeys = append(sw.HandoffKeys, key)
		}
		if p.notify != nil {
			sw.NotifyPath = p.notify.path
		}
		if !w.readyAt.IsZero() {
			ago := now.Sub(w.readyAt)
			sw.ReadyAgo = &ago
		}
		switch w.state {
		case WorkerStarting:
			sw.ReadyIn = timeLeft(w.readyTimer, now)
			sw.SettleIn = timeLeft(w.settleTimer, now)
		case WorkerDraining:
			sw.KillIn = timeLeft(w.killTimer, now)
		}
		st.Workers = append(st.Workers, sw)
	}
	for name, c := range op.opts.Files {
		fd, err := fdOf(c)
		if err != nil {
			return nil, fmt.Errorf("file %q: %w", name, err)
		}
		st.Files[name] = fd
	}
	return st, nil
}

// adopt is Run in a master started by an upgrade: it takes over the
// sockets and workers of the master it replaced, resumes their timers,
// and replaces the workers that exited meanwhile, with the usual pacing.
func (s *supervisor) adopt(st *upgradeState, result chan error) {
	sys, ok := s.sys.(*osSystem)
	reg, regOK := s.sockets.(*socketRegistry)
	var err error
	if !ok || !regOK {
		err = errors.New("recluster: an upgraded master needs real processes")
	}
	if err == nil {
		err = reg.adopt(st)
	}
	if err == nil {
		sys.runtimeDir = st.RuntimeDir
		sys.notifySeq.Store(st.NotifySeq)
		err = s.sys.prepare()
	}
	if err != nil {
		// The workers cannot be served: they must not outlive the master.
		for _, w := range st.Workers {
			killTree(w.PID)
		}
		s.startFailed = true
		s.stop()
		result <- fmt.Errorf("recluster: cannot take over from the master before the upgrade: %w", err)
		return
	}
	elapsed := time.Duration(monotonicNow() - st.Taken)
	now := s.sys.now()
	s.phase = PhaseRunning
	s.slots, s.gen, s.lastGen = st.Slots, st.Gen, st.LastGen
	for k, v := range st.Restarts {
		s.restarts[k] = v
	}
	for k, v := range st.Failures {
		s.failures[k] = v
	}
	for k, v := range st.Reloads {
		s.reloads[k] = v
	}
	s.pacer.gap = st.Pacer.Gap
	s.pacer.lastSpawn = now.Add(st.Pacer.LastSpawnIn - elapsed)
	if ago := st.Pacer.LastCrashAgo; ago != nil {
		s.pacer.lastCrash = now.Add(-*ago - elapsed)
	}
	s.acceptFallbackLogged = st.AcceptFallbackLogged
	s.directExec = st.DirectExec.programFile()
	s.upgraded = upgradeRecord{count: st.Upgrades, at: now}
	s.tracks.window = st.Windows
	s.handoff.results, s.handoff.fallbacks = st.Handoffs, st.HandoffFallbacks
	if st.Output != nil && sys.relay != nil {
		sys.relay.adoptState(st.Output)
	}
	for _, sw := range st.Workers {
		s.adoptWorker(sw, sys, now, elapsed)
	}
	for slot, left := range st.Respawns {
		var t timer
		t = s.after(max(left-elapsed, 0), func(s *supervisor) { s.respawnNow(slot, t) })
		s.respawns[slot] = t
	}
	s.reconcile()
	s.scheduleSweep()
	s.upgraded.frozen = time.Duration(monotonicNow() - st.Taken)
	result <- nil
	// Exits that happened while nobody watched: they come as events.
	go sys.reaper.reap()
	s.log.Info("recluster: upgraded in place", "from", st.Version, "to", buildinfo.Read().String(), "workers", len(s.workers), "frozen_for", s.upgraded.frozen.Round(time.Millisecond).String())
}

// adoptWorker takes over one worker of the master before the upgrade.
func (s *supervisor) adoptWorker(sw stateWorker, sys *osSystem, now time.Time, elapsed time.Duration) {
	w := &Worker{
		slot: sw.Slot, pid: sw.PID, gen: sw.Gen, state: sw.State,
		started: now.Add(-sw.Age - elapsed),
		// The frozen time does not count against the heartbeat: the
		// worker's heartbeats wait in its channel meanwhile.
		lastBeat: now.Add(-sw.BeatAgo),
		retiring: sw.Retiring, retireAsked: sw.RetireAsked, killed: sw.Killed, listening: sw.Listening,
		maxAge: sw.MaxAge, status: sw.Status, readyTimer: stoppedTimer{},
	}
	if sw.ReadyAgo != nil {
		w.readyAt = now.Add(-*sw.ReadyAgo - elapsed)
	}
	hooks := s.hooks(w)
	p, err := adoptProcess(sw, hooks)
	if err != nil {
		s.log.Error("recluster: cannot take over a worker after the upgrade; killing it", "worker", sw.Slot, "pid", sw.PID, "error", err)
		killTree(sw.PID)
		sys.reaper.adopt(sw.PID, func(exitStatus) {})
		return
	}
	p.adoptOutputs(sw, sys.relay)
	w.proc = p
	s.add(w)
	sys.reaper.adopt(w.pid, hooks.exited)
	for _, key := range sw.HandoffKeys {
		s.takesHandoffs(w, key)
	}
	remaining := func(d *time.Duration) time.Duration { return max(*d-elapsed, 0) }
	if sw.UptimeIn != nil {
		s.settleSlotIn(w, remaining(sw.UptimeIn))
	}
	if sw.ReadyIn != nil {
		w.readyTimer = s.after(remaining(sw.ReadyIn), func(s *supervisor) { s.readyTimedOut(w) })
	}
	if sw.KillIn != nil {
		w.killTimer = s.after(remaining(sw.KillIn), func(s *supervisor) { s.drainTimedOut(w) })
	}
	switch {
	case sw.SettleIn != nil:
		w.settleTimer = s.after(remaining(sw.SettleIn), func(s *supervisor) {
			if s.alive(w) {
				s.markReady(w)
			}
		})
	case w.state == WorkerStarting && s.opts.ReadyWhen == Listening && w.listening && s.opts.MinUptime >= 0:
		passed, _ := s.sockets.passedFor(w.slot)
		s.awaitAccepting(w, passed)
	}
	p.listen()
}

// adopt takes over the sockets of the master before the upgrade.
func (r *socketRegistry) adopt(st *upgradeState) error {
	byFD := map[int]*ownedSocket{}
	for _, ss := range st.Sockets {
		so := byFD[ss.FD]
		if so == nil {
			addr, err := adoptListener(ss.FD)
			if err != nil {
				return fmt.Errorf("socket %s %s (fd %d): %w", ss.Network, ss.Address, ss.FD, err)
			}
			so = &ownedSocket{name: ss.Name, network: ss.Network, address: ss.Address, fd: ss.FD, addr: addr, adopted: ss.Adopted, blocked: ss.Blocked}
			byFD[ss.FD] = so
		}
		r.byKey[ss.Key] = so
	}
	for _, key := range st.Passed {
		so, ok := r.byKey[key]
		if !ok {
			return fmt.Errorf("the passed socket %q is missing from the state", key)
		}
		r.passed = append(r.passed, so)
	}
	r.unlinks = st.Unlinks
	for k, v := range st.Bound {
		r.bound[k] = v
	}
	return nil
}

// adopt tracks a child this process inherited from the master it replaced.
func (r *reaper) adopt(pid int, exited func(exitStatus)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	announced := make(chan struct{})
	close(announced)
	r.tracked[pid] = &trackedProcess{exited: exited, announced: announced}
}

// upgradeStatus adds the master's version and upgrades to st.
func (s *supervisor) upgradeStatus(st *Status) {
	st.Version = buildVersion()
	st.Upgrades, st.Upgraded, st.UpgradeFrozen = s.upgraded.count, s.upgraded.at, s.upgraded.frozen
}

var buildVersion = sync.OnceValue(func() string { return buildinfo.Read().String() })

// adoptOrFail adopts st, or fails Run with err, the reason the state
// given to this process could not be read.
func (s *supervisor) adoptOrFail(st *upgradeState, err error, result chan error) {
	// The program's signal handlers are in place by now (Run comes after
	// them): what came meanwhile goes to them.
	defer releaseHeldSignals()
	if err != nil {
		s.startFailed = true
		s.stop()
		result <- err
		return
	}
	s.adopt(st, result)
}
