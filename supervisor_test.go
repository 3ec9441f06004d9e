package recluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
)

// The tests in this file drive the supervisor's state machine through a
// fake system and a fake clock: no process, no real timer, no goroutine.
// Everything the fake reports is queued and run on the test's goroutine,
// in order, by settle, so each test is deterministic.

type fakeSystem struct {
	clock   time.Time
	timers  []*fakeTimer
	procs   []*fakeProc
	nextPID int
	// startErr, when set, makes every start fail with it.
	startErr error
	// hold, when set, keeps starts pending until release is called.
	hold    bool
	pending []func()
	// stubborn workers ignore the disconnect message.
	stubborn       bool
	refuseHandoffs bool // handOff reports its queue full
	unreadHandoffs bool // handOff queues, and the write then times out
	usageCalls     int
	closedFDs      []int
	// program is the worker program's file on the fake disk.
	program programFile
}

type fakeTimer struct {
	sys     *fakeSystem
	at      time.Time
	f       func()
	stopped bool
	fired   bool
}

func (t *fakeTimer) Stop() bool {
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

type fakeProc struct {
	sys      *fakeSystem
	spec     workerSpec
	hooks    workerHooks
	id       int
	sent     []proto.Message
	signals  []syscall.Signal
	killed   bool
	released bool
	ended    bool
	// file is the program file it was started from; direct, whether it
	// was started without the trampoline.
	file   programFile
	direct bool
}

func (f *fakeSystem) now() time.Time { return f.clock }

func (f *fakeSystem) afterFunc(d time.Duration, fn func()) timer {
	t := &fakeTimer{sys: f, at: f.clock.Add(d), f: fn}
	f.timers = append(f.timers, t)
	return t
}

func (f *fakeSystem) prepare() error { return nil }
func (f *fakeSystem) cleanup()       {}

func (f *fakeSystem) start(spec workerSpec, hooks workerHooks) {
	begin := func() {
		if f.startErr != nil {
			hooks.started(nil, f.startErr)
			return
		}
		f.nextPID++
		p := &fakeProc{sys: f, spec: spec, hooks: hooks, id: 1000 + f.nextPID}
		if len(spec.passed) > 0 {
			p.file, p.direct = f.program, spec.direct.same(f.program)
		}
		f.procs = append(f.procs, p)
		hooks.started(p, nil)
	}
	if f.hold {
		f.pending = append(f.pending, begin)
		return
	}
	begin()
}

// releaseStarts lets the held starts finish.
func (f *fakeSystem) releaseStarts() {
	pending := f.pending
	f.pending = nil
	for _, begin := range pending {
		begin()
	}
}

func (f *fakeSystem) usage(pids []int) []procFigures {
	f.usageCalls++
	out := make([]procFigures, len(pids))
	for i := range out {
		out[i] = procFigures{rssBytes: 1 << 20, cpu: time.Second, ok: true}
	}
	return out
}

func (f *fakeSystem) closeFD(fd int) { f.closedFDs = append(f.closedFDs, fd) }

func (p *fakeProc) pid() int { return p.id }

func (p *fakeProc) programFile() programFile { return p.file }
func (p *fakeProc) unhandled() bool          { return false }

func (p *fakeProc) startedDirectly() bool { return p.direct }

func (p *fakeProc) send(m proto.Message, fd int) {
	p.sent = append(p.sent, m)
	if m.Cmd == proto.CmdDisconnect && !p.sys.stubborn {
		p.exit(0)
	}
}

func (p *fakeProc) handOff(m proto.Message, fd int) bool {
	if p.sys.refuseHandoffs {
		return false
	}
	p.sent = append(p.sent, m)
	p.hooks.handoffWritten(!p.sys.unreadHandoffs)
	return true
}

func (p *fakeProc) signal(sig syscall.Signal) { p.signals = append(p.signals, sig) }

func (p *fakeProc) kill() {
	p.killed = true
	p.end(exitStatus{code: -1, signal: syscall.SIGKILL})
}

func (p *fakeProc) release() { p.released = true }

func (p *fakeProc) drained() <-chan struct{} {
	done := make(chan struct{})
	close(done)
	return done
}

// say delivers a message from the worker.
func (p *fakeProc) say(cmd string) { p.hooks.message(proto.Message{Cmd: cmd}, -1) }

func (p *fakeProc) exit(code int) { p.end(exitStatus{code: code}) }

func (p *fakeProc) end(st exitStatus) {
	if !p.ended {
		p.ended = true
		p.hooks.exited(st)
	}
}

func (p *fakeProc) told(cmd string) bool {
	return slices.ContainsFunc(p.sent, func(m proto.Message) bool { return m.Cmd == cmd })
}

// harness is a supervisor wired to a fake system.
type harness struct {
	t     *testing.T
	sys   *fakeSystem
	s     *supervisor
	queue []func(*supervisor)
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	if opts.Workers == 0 {
		opts.Workers = 3
	}
	if opts.ReadyWhen == "" {
		opts.ReadyWhen = Ready
	}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts = withDefaults(opts)
	c := &Cluster{program: "/fake/worker", opts: opts, log: opts.Logger, done: make(chan struct{})}
	h := &harness{t: t, sys: &fakeSystem{clock: time.Unix(1_000_000, 0)}}
	h.s = newSupervisor(c, h.sys)
	h.s.post = func(f func(*supervisor)) { h.queue = append(h.queue, f) }
	return h
}

// settle runs what the fake reported until nothing is left.
func (h *harness) settle() {
	h.t.Helper()
	for i := 0; len(h.queue) > 0; i++ {
		if i > 100_000 {
			h.t.Fatal("the supervisor never settles")
		}
		f := h.queue[0]
		h.queue = h.queue[1:]
		f(h.s)
	}
}

// advance moves the fake clock on by d, firing the timers due on the way,
// in order.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	end := h.sys.clock.Add(d)
	for {
		h.settle()
		var next *fakeTimer
		for _, t := range h.sys.timers {
			if !t.stopped && !t.fired && !t.at.After(end) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		if next == nil {
			break
		}
		if next.at.After(h.sys.clock) {
			h.sys.clock = next.at
		}
		next.fired = true
		next.f()
	}
	h.sys.clock = end
	h.settle()
}

func (h *harness) run() {
	h.t.Helper()
	result := make(chan error, 1)
	h.s.run(result)
	h.settle()
	if err := <-result; err != nil {
		h.t.Fatalf("run: %v", err)
	}
}

// runReady starts the cluster and makes every first worker ready.
func (h *harness) runReady() {
	h.t.Helper()
	h.run()
	h.readyGen(1)
	for slot := 0; slot < h.s.slots; slot++ {
		if h.active(slot) == nil {
			h.t.Fatalf("slot %d has no active worker after start", slot)
		}
	}
}

func (h *harness) reload() chan error {
	result := make(chan error, 1)
	h.s.startReload(result)
	h.settle()
	return result
}

// workersOf returns slot's live workers of generation gen (any gen when 0).
func (h *harness) workersOf(slot, gen int) []*Worker {
	var ws []*Worker
	for _, w := range h.s.bySlot[slot] {
		if gen == 0 || w.gen == gen {
			ws = append(ws, w)
		}
	}
	return ws
}

// one returns slot's only live worker of generation gen.
func (h *harness) one(slot, gen int) *Worker {
	h.t.Helper()
	ws := h.workersOf(slot, gen)
	if len(ws) != 1 {
		h.t.Fatalf("slot %d has %d workers of generation %d, want 1: %v", slot, len(ws), gen, ws)
	}
	return ws[0]
}

func (h *harness) active(slot int) *Worker {
	h.t.Helper()
	var found *Worker
	for _, w := range h.s.bySlot[slot] {
		if w.state == WorkerActive {
			if found != nil {
				h.t.Fatalf("slot %d has two active workers: %v and %v", slot, found, w)
			}
			found = w
		}
	}
	return found
}

func proc(w *Worker) *fakeProc { return w.proc.(*fakeProc) }

func (h *harness) ready(w *Worker) {
	h.t.Helper()
	proc(w).say(proto.CmdReady)
	h.settle()
}

func (h *harness) readyGen(gen int) {
	h.t.Helper()
	for slot := 0; slot < h.s.slots; slot++ {
		for _, w := range h.workersOf(slot, gen) {
			if w.state == WorkerStarting {
				h.ready(w)
			}
		}
	}
}

// pending reports whether result has no answer yet.
func pending(result chan error) bool { return len(result) == 0 }

// mustServe fails unless every slot has an active worker of generation gen
// that was never told to go.
func (h *harness) mustServe(gen int) {
	h.t.Helper()
	for slot := 0; slot < h.s.slots; slot++ {
		w := h.active(slot)
		if w == nil || w.gen != gen || proc(w).told(proto.CmdDisconnect) || proc(w).killed {
			h.t.Fatalf("slot %d is served by %v, want an untouched active worker of generation %d", slot, w, gen)
		}
	}
}

func TestFakeReloadCommitsOnlyWhenEveryNewWorkerIsReady(t *testing.T) {
	h := newHarness(t, Options{Workers: 3})
	h.runReady()
	old := []*Worker{h.active(0), h.active(1), h.active(2)}
	result := h.reload()
	for slot := 0; slot < 2; slot++ {
		h.ready(h.one(slot, 2))
		if !pending(result) {
			t.Fatal("the reload finished before every new worker was ready")
		}
		h.mustServe(1)
	}
	h.ready(h.one(2, 2))
	if err := <-result; err != nil {
		t.Fatalf("reload: %v", err)
	}
	h.mustServe(2)
	for _, w := range old {
		if !proc(w).told(proto.CmdDisconnect) || h.s.alive(w) {
			t.Fatalf("old %v: told to disconnect %v, alive %v; want told and gone", w, proc(w).told(proto.CmdDisconnect), h.s.alive(w))
		}
	}
	if h.s.gen != 2 || h.s.reloads[ReloadCommitted] != 1 {
		t.Fatalf("generation %d, reloads %v; want 2 and one committed", h.s.gen, h.s.reloads)
	}
}

func TestFakeReloadAbortsWhenANewWorkerExitsBeforeReady(t *testing.T) {
	h := newHarness(t, Options{Workers: 3})
	h.runReady()
	result := h.reload()
	h.ready(h.one(0, 2))
	fresh := []*Worker{h.one(0, 2), h.one(1, 2), h.one(2, 2)}
	proc(fresh[1]).exit(3)
	h.settle()
	err := <-result
	if err == nil || !strings.Contains(err.Error(), "slot 1") || !strings.Contains(err.Error(), "exited with code 3") {
		t.Fatalf("want the reload aborted for slot 1 exiting with code 3, got %v", err)
	}
	if n := strings.Count(err.Error(), "recluster:"); n != 1 {
		t.Fatalf("the error says recluster: %d times: %q", n, err)
	}
	h.mustServe(1)
	for _, w := range fresh {
		if h.s.alive(w) {
			t.Fatalf("new %v is still there after the abort", w)
		}
	}
	if h.s.reloads[ReloadAborted] != 1 || h.s.gen != 1 || len(h.s.failures) != 0 {
		t.Fatalf("reloads %v, generation %d, failures %v; want one aborted, 1, none", h.s.reloads, h.s.gen, h.s.failures)
	}
	// The old generation goes on: nothing is respawned, the next reload works.
	if len(h.s.respawns) != 0 {
		t.Fatalf("respawns scheduled after an abort: %v", h.s.respawns)
	}
	result = h.reload()
	h.readyGen(3)
	if err := <-result; err != nil {
		t.Fatalf("the reload after the abort: %v", err)
	}
	h.mustServe(3)
}

func TestFakeReloadAbortsOnReadyTimeout(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, ReadyTimeout: 5 * time.Second})
	h.runReady()
	result := h.reload()
	h.ready(h.one(0, 2))
	slow := h.one(1, 2)
	h.advance(5*time.Second - time.Millisecond)
	if !pending(result) {
		t.Fatalf("the reload ended before ReadyTimeout: %v", <-result)
	}
	h.advance(time.Millisecond)
	err := <-result
	if err == nil || !strings.Contains(err.Error(), "slot 1") || !strings.Contains(err.Error(), "not ready within 5s") {
		t.Fatalf("want the reload aborted for slot 1 not ready within 5s, got %v", err)
	}
	if !proc(slow).killed {
		t.Fatal("the worker that missed ReadyTimeout was not killed")
	}
	h.mustServe(1)
}

// ReadyTimeout counts from the process's start: the forks of a generation
// go one at a time, and a worker whose fork waited behind the others (or
// behind a loaded machine) must not spend its bound before it exists.
func TestFakeReadyTimeoutCountsFromTheStart(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, ReadyTimeout: 5 * time.Second})
	h.runReady()
	h.sys.hold = true
	result := h.reload()
	h.advance(10 * time.Second) // the starts take twice the bound
	h.sys.hold = false
	h.sys.releaseStarts()
	h.settle()
	h.advance(5*time.Second - time.Millisecond)
	if !pending(result) {
		t.Fatalf("the reload ended before the new workers had ReadyTimeout of their own: %v", <-result)
	}
	h.readyGen(2)
	if err := <-result; err != nil {
		t.Fatalf("reload: %v", err)
	}
}

func TestFakeNewReloadSupersedesTheOneInProgress(t *testing.T) {
	h := newHarness(t, Options{Workers: 2})
	h.runReady()
	first := h.reload()
	h.ready(h.one(0, 2))
	dropped := []*Worker{h.one(0, 2), h.one(1, 2)}
	second := h.reload()
	err := <-first
	if !errors.Is(err, ErrSuperseded) {
		t.Fatalf("the first reload returned %v, want ErrSuperseded", err)
	}
	for _, w := range dropped {
		if h.s.alive(w) {
			t.Fatalf("%v of the superseded reload is still there", w)
		}
	}
	h.mustServe(1)
	h.readyGen(3)
	if err := <-second; err != nil {
		t.Fatalf("the second reload: %v", err)
	}
	h.mustServe(3)
	if h.s.reloads[ReloadSuperseded] != 1 || h.s.reloads[ReloadCommitted] != 1 {
		t.Fatalf("reloads %v, want one superseded and one committed", h.s.reloads)
	}
}

func TestFakeReloadStorm(t *testing.T) {
	const storm = 50
	h := newHarness(t, Options{Workers: 4})
	h.runReady()
	var results []chan error
	for i := 0; i < storm; i++ {
		results = append(results, h.reload())
		// Half of each generation gets ready before the next one comes.
		gen := h.s.lastGen
		h.ready(h.one(0, gen))
		h.ready(h.one(1, gen))
		h.mustServe(1)
	}
	last := h.s.lastGen
	h.readyGen(last)
	for i, r := range results[:storm-1] {
		if err := <-r; !errors.Is(err, ErrSuperseded) {
			t.Fatalf("reload %d returned %v, want ErrSuperseded", i, err)
		}
	}
	if err := <-results[storm-1]; err != nil {
		t.Fatalf("the last reload: %v", err)
	}
	h.mustServe(last)
	if n := len(h.s.workers); n != 4 {
		t.Fatalf("%d workers are left after the storm, want 4", n)
	}
	if h.s.reloads[ReloadSuperseded] != storm-1 || h.s.reloads[ReloadCommitted] != 1 {
		t.Fatalf("reloads %v", h.s.reloads)
	}
}

// respawnDelay returns the delay of slot's scheduled respawn.
func (h *harness) respawnDelay(slot int) time.Duration {
	h.t.Helper()
	t, ok := h.s.respawns[slot].(*dueTimer)
	if !ok {
		h.t.Fatalf("slot %d has no respawn scheduled", slot)
	}
	return t.due.Sub(h.sys.clock)
}

func TestFakeRespawnPacingAndBackoff(t *testing.T) {
	h := newHarness(t, Options{Workers: 1, Respawn: time.Second, Backoff: 8 * time.Second})
	h.runReady()
	h.advance(10 * time.Second)
	var delays []time.Duration
	for range 5 {
		w := h.one(0, 1)
		proc(w).exit(1)
		h.settle()
		d := h.respawnDelay(0)
		delays = append(delays, d)
		h.advance(d - time.Millisecond)
		if len(h.workersOf(0, 0)) != 0 {
			t.Fatalf("slot 0 was respawned before its delay %v", d)
		}
		h.advance(time.Millisecond)
		if len(h.workersOf(0, 1)) != 1 {
			t.Fatalf("slot 0 was not respawned after %v", d)
		}
	}
	want := []time.Duration{0, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	if !slices.Equal(delays, want) {
		t.Fatalf("respawn delays %v, want %v", delays, want)
	}
	if h.s.restarts[0] != 5 {
		t.Fatalf("restarts of slot 0: %d, want 5", h.s.restarts[0])
	}
}

func TestFakeCrashLoopMarksTheSlotFailing(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, Respawn: time.Second})
	h.runReady()
	for i := 0; i < crashLoopThreshold; i++ {
		if got := h.s.status().FailingSlots; len(got) != 0 {
			t.Fatalf("after %d early deaths the failing slots are %v, want none", i, got)
		}
		var w *Worker
		if i == 0 {
			w = h.active(1)
			h.advance(h.s.opts.MinUptime) // it stayed up: its crash starts no streak ...
			proc(w).exit(1)
			h.advance(2 * time.Second)
			w = h.one(1, 1)
		} else {
			w = h.one(1, 1)
		}
		proc(w).exit(1) // ... a death before ready does
		h.advance(2 * time.Second)
	}
	if got := h.s.status().FailingSlots; !slices.Equal(got, []int{1}) {
		t.Fatalf("failing slots %v, want [1]", got)
	}
	// The new generation of a reload that dies before ready says nothing
	// about the slot's health.
	h.ready(h.one(1, 1))
	if got := h.s.status().FailingSlots; !slices.Equal(got, []int{1}) {
		t.Fatalf("a worker that has only just become ready cleared the failing slot: %v", got)
	}
	h.advance(h.s.opts.MinUptime)
	if got := h.s.status().FailingSlots; len(got) != 0 {
		t.Fatalf("a worker that stayed up did not clear the failing slot: %v", got)
	}
	for range crashLoopThreshold {
		result := h.reload()
		proc(h.one(0, h.s.lastGen)).exit(1)
		h.settle()
		<-result
	}
	if got := h.s.status().FailingSlots; len(got) != 0 {
		t.Fatalf("aborted reloads marked slots failing: %v", got)
	}
}

func TestFakeScaleUpDuringAReload(t *testing.T) {
	h := newHarness(t, Options{Workers: 2})
	h.runReady()
	result := h.reload()
	if err := h.s.scale(3); err != nil {
		t.Fatal(err)
	}
	h.settle()
	h.ready(h.one(2, 1))
	if h.active(2) == nil {
		t.Fatal("the new slot is not served by the active generation")
	}
	h.ready(h.one(0, 2))
	h.ready(h.one(1, 2))
	if !pending(result) {
		t.Fatal("the reload committed without the new slot")
	}
	h.ready(h.one(2, 2))
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	h.mustServe(2)
}

func TestFakeScaleDownDuringAReload(t *testing.T) {
	h := newHarness(t, Options{Workers: 3})
	h.runReady()
	result := h.reload()
	h.ready(h.one(0, 2))
	h.ready(h.one(1, 2))
	gone := []*Worker{h.one(2, 1), h.one(2, 2)}
	if err := h.s.scale(2); err != nil {
		t.Fatal(err)
	}
	h.settle()
	if err := <-result; err != nil {
		t.Fatalf("the reload did not commit once the slot it waited for was gone: %v", err)
	}
	h.mustServe(2)
	for _, w := range gone {
		if h.s.alive(w) {
			t.Fatalf("%v of the removed slot is still there", w)
		}
	}
}

func TestFakeRetiringWorkerServesUntilItsSuccessorIsReady(t *testing.T) {
	h := newHarness(t, Options{Workers: 1})
	h.runReady()
	old := h.active(0)
	proc(old).say(proto.CmdDisconnect)
	h.settle()
	if !old.retiring || proc(old).told(proto.CmdDisconnect) {
		t.Fatal("the retiring worker was told to go before its successor was ready")
	}
	successor := h.workersOf(0, 1)[1]
	h.ready(successor)
	if h.active(0) != successor || h.s.alive(old) {
		t.Fatalf("after the successor was ready: active %v, old alive %v", h.active(0), h.s.alive(old))
	}
	if len(h.s.respawns) != 0 {
		t.Fatal("a retirement scheduled a respawn")
	}
}

func TestFakeTerminateKillsStragglersAfterTimeout(t *testing.T) {
	h := newHarness(t, Options{Workers: 3, Timeout: 10 * time.Second})
	h.runReady()
	h.sys.stubborn = true
	ws := []*Worker{h.active(0), h.active(1), h.active(2)}
	reloading := h.reload()
	result := make(chan error, 1)
	h.s.terminate(result)
	h.settle()
	if err := <-reloading; err == nil || !strings.Contains(err.Error(), "terminating") {
		t.Fatalf("the reload in progress returned %v, want aborted because the cluster is terminating", err)
	}
	for _, w := range ws {
		if !proc(w).told(proto.CmdDisconnect) || proc(w).killed {
			t.Fatalf("%v: told %v, killed %v; want told to disconnect and not killed yet", w, proc(w).told(proto.CmdDisconnect), proc(w).killed)
		}
	}
	proc(ws[0]).exit(0) // one leaves in time
	h.advance(10*time.Second - time.Millisecond)
	if !pending(result) || h.s.phase != PhaseTerminating {
		t.Fatal("terminate finished before the stragglers' Timeout")
	}
	h.advance(time.Millisecond)
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	if proc(ws[0]).killed || !proc(ws[1]).killed || !proc(ws[2]).killed {
		t.Fatal("want only the two stragglers killed")
	}
	if h.s.phase != PhaseStopped || len(h.s.workers) != 0 {
		t.Fatalf("phase %s with %d workers, want stopped with none", h.s.phase, len(h.s.workers))
	}
}

// A slot is covered while it has a starting worker of the active
// generation or an active worker that has not asked to retire; a worker of
// an unfinished reload covers nothing.
func TestFakeCoveredSlot(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, Respawn: time.Second})
	h.runReady()
	h.advance(time.Minute)
	result := h.reload() // its slot-0 worker is starting
	proc(h.active(0)).exit(1)
	h.settle()
	if _, ok := h.s.respawns[0]; !ok {
		t.Fatal("slot 0 lost its active worker during a reload and got no respawn: the reload's worker covers nothing")
	}
	h.advance(0)
	if len(h.workersOf(0, 1)) != 1 {
		t.Fatal("slot 0 was not respawned in the active generation")
	}
	// A retiring worker does not cover its slot, its starting successor does.
	proc(h.active(1)).say(proto.CmdDisconnect)
	h.settle()
	if _, ok := h.s.respawns[1]; ok {
		t.Fatal("a slot with a starting successor got a respawn")
	}
	proc(h.workersOf(1, 1)[1]).exit(1) // the successor dies
	h.settle()
	if _, ok := h.s.respawns[1]; !ok {
		t.Fatal("a slot whose only worker retires got no respawn when its successor died")
	}
	h.advance(time.Second)
	h.readyGen(2)
	if err := <-result; err != nil {
		t.Fatal(err)
	}
}

// An aborted reload never leaves a slot without its last ready worker:
// when the old worker of a slot died during the reload, the new one that
// is ready stays, active.
func TestFakeAbortedReloadKeepsALoneReadyWorker(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, Respawn: time.Minute})
	h.runReady()
	h.advance(time.Second)
	result := h.reload()
	standby := h.one(0, 2)
	h.ready(standby)
	proc(h.active(0)).exit(1) // its respawn waits for the long Respawn
	h.settle()
	proc(h.one(1, 2)).exit(1)
	h.settle()
	if err := <-result; err == nil || !strings.Contains(err.Error(), "slot 1") {
		t.Fatalf("want the reload aborted for slot 1, got %v", err)
	}
	if h.active(0) != standby || proc(standby).told(proto.CmdDisconnect) {
		t.Fatalf("slot 0 is served by %v, want the ready new worker %v", h.active(0), standby)
	}
	if h.active(1) == nil || h.active(1).gen != 1 {
		t.Fatalf("slot 1 is served by %v, want its old worker", h.active(1))
	}
}

func TestFakeStartFailures(t *testing.T) {
	h := newHarness(t, Options{Workers: 2})
	h.runReady()
	h.sys.startErr = errors.New("fork/exec /fake/worker: no such file or directory")
	result := h.reload()
	err := <-result
	if err == nil || !strings.Contains(err.Error(), "cannot start worker 0") || strings.Count(err.Error(), "recluster:") != 1 {
		t.Fatalf("want the reload aborted because worker 0 could not start, said once, got %q", err)
	}
	h.mustServe(1)

	// At Run, a start failure is Run's error, and the cluster stops.
	h = newHarness(t, Options{Workers: 2})
	h.sys.startErr = errors.New("fork/exec /fake/worker: permission denied")
	run := make(chan error, 1)
	h.s.run(run)
	h.settle()
	if err := <-run; err == nil || !strings.HasPrefix(err.Error(), "recluster: cannot start worker 0") {
		t.Fatalf("run: %v", err)
	}
	if h.s.phase != PhaseStopped {
		t.Fatalf("phase %s after a failed run, want stopped", h.s.phase)
	}
}

// Starts finish off the loop: what the supervisor decides meanwhile (a
// reload aborted, a terminate) still holds when they do.
func TestFakeStartsThatFinishLate(t *testing.T) {
	h := newHarness(t, Options{Workers: 2})
	h.runReady()
	h.sys.hold = true
	result := h.reload()
	reloadWorkers := []*Worker{h.one(0, 2), h.one(1, 2)}
	if st := h.s.status(); len(st.Workers) != 2 {
		t.Fatalf("status lists %d workers, want the 2 started ones", len(st.Workers))
	}
	terminated := make(chan error, 1)
	h.s.terminate(terminated)
	h.settle()
	if err := <-result; err == nil {
		t.Fatal("the reload did not abort on terminate")
	}
	h.sys.releaseStarts()
	h.settle()
	for _, w := range reloadWorkers {
		if !proc(w).killed {
			t.Fatalf("%v started after its reload was dropped and was not killed", w)
		}
	}
	if err := <-terminated; err != nil || h.s.phase != PhaseStopped {
		t.Fatalf("terminate: %v, phase %s", err, h.s.phase)
	}
}

// The supervisor's per-event work depends on the slot, not on the size of
// the cluster: many slots, and status never reads /proc on the loop.
func TestFakeLargeClusterReload(t *testing.T) {
	h := newHarness(t, Options{Workers: 512})
	h.runReady()
	result := h.reload()
	h.readyGen(2)
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	h.mustServe(2)
	h.s.status()
	if h.sys.usageCalls != 0 {
		t.Fatalf("status read process figures %d times on the loop", h.sys.usageCalls)
	}
}

func TestFakeDescriptorsFromWorkersAreClosed(t *testing.T) {
	h := newHarness(t, Options{Workers: 1})
	h.runReady()
	w := h.active(0)
	proc(w).hooks.message(proto.Message{Cmd: "something-new"}, 42)
	h.settle()
	if !slices.Equal(h.sys.closedFDs, []int{42}) {
		t.Fatalf("closed %v, want the descriptor 42 the worker sent", h.sys.closedFDs)
	}
}

func TestStatesEncodeAsTheirNames(t *testing.T) {
	for _, tc := range []struct {
		v    interface{ MarshalText() ([]byte, error) }
		want string
	}{{WorkerStandby, "standby"}, {PhaseTerminating, "terminating"}, {ReloadSuperseded, "superseded"}} {
		b, err := tc.v.MarshalText()
		if err != nil || string(b) != tc.want || fmt.Sprint(tc.v) != tc.want {
			t.Fatalf("%v encodes as %q, %v", tc.v, b, err)
		}
	}
	var s WorkerState
	if err := s.UnmarshalText([]byte("draining")); err != nil || s != WorkerDraining {
		t.Fatalf("draining decodes as %q, %v", s, err)
	}
	var p Phase
	if err := p.UnmarshalText([]byte("dancing")); err == nil || !strings.Contains(err.Error(), "idle, running, terminating, stopped") {
		t.Fatalf("an unknown phase gives %v, want an error naming the phases", err)
	}
}
