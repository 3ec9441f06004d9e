package recluster

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A restart is a reload of one slot: a successor starts in the slot, the
// old worker serves until the successor is ready and is told to disconnect
// only then (activate does that, as for any replacement). A successor that
// exits before it is ready, misses ReadyTimeout, or is dropped (by a
// reload, a scale-down, Terminate) aborts the restart and the old worker
// goes on serving.
type restartOp struct {
	slot      int
	old       *Worker
	successor int // its pid, once spawned
	succ      *Worker
	cause     string // why the successor went, when known before it exited
	started   time.Time
	waiters   []chan error
}

// ErrRestartAborted wraps every error of a restart that did not replace its
// worker; the old worker still serves the slot.
var ErrRestartAborted = errors.New("recluster: restart aborted")

// Restart replaces the worker of one slot the way Reload replaces them all:
// a successor starts in the slot, and the old worker is told to disconnect
// only once the successor is ready. It returns nil once the successor is
// the slot's active worker. If the successor exits or misses ReadyTimeout
// before it is ready, or ctx ends first, the restart is aborted: the
// successor is stopped, the old worker keeps serving, and the error (which
// wraps ErrRestartAborted) names the slot and the cause. A Restart of a
// slot already being restarted waits for that one.
func (c *Cluster) Restart(ctx context.Context, slot int) error {
	result := make(chan error, 1)
	if !c.call(func(s *supervisor) { s.startRestart(slot, result) }) {
		return ErrNotRunning
	}
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		c.call(func(s *supervisor) { s.abortRestartFor(slot, result, ctx.Err()) })
		return <-result
	}
}

func (s *supervisor) startRestart(slot int, result chan error) {
	if s.phase != PhaseRunning {
		result <- ErrNotRunning
		return
	}
	if slot < 0 || slot >= s.slots {
		result <- fmt.Errorf("recluster: cannot restart slot %d: the cluster has slots 0 to %d", slot, s.slots-1)
		return
	}
	if op := s.restartOps[slot]; op != nil {
		op.waiters = append(op.waiters, result)
		return
	}
	var old *Worker
	for _, w := range s.bySlot[slot] {
		if w.state == WorkerActive && w.gen == s.gen {
			old = w
		}
	}
	switch {
	case old == nil:
		result <- fmt.Errorf("recluster: cannot restart slot %d: it has no active worker (it is starting or being respawned); try again once it serves", slot)
		return
	case old.retiring:
		result <- fmt.Errorf("recluster: cannot restart slot %d: its worker (pid %d) is already being replaced", slot, old.pid)
		return
	}
	op := &restartOp{slot: slot, old: old, started: s.sys.now(), waiters: []chan error{result}}
	if s.restartOps == nil {
		s.restartOps = map[int]*restartOp{}
	}
	s.restartOps[slot] = op
	s.log.Info("recluster: restart started", "worker", slot, "pid", old.pid)
	// The old worker is retiring: no sweep recycles it meanwhile, and the
	// successor's activation drains it.
	old.retiring = true
	op.succ = s.spawn(slot, s.gen)
}

// observeRestart follows the events of the restarts in progress; emit
// calls it for every event, on the supervisor goroutine.
func (s *supervisor) observeRestart(e Event) {
	op := s.restartOps[e.Slot]
	if op == nil || e.Slot < 0 {
		return
	}
	if e.Kind == EventSpawned && op.successor == 0 {
		if s.alive(op.succ) && op.succ.pid == e.PID {
			op.successor = e.PID
		}
		return
	}
	if e.PID != op.successor || op.successor == 0 {
		return
	}
	switch e.Kind {
	case EventActive:
		s.finishRestart(op, nil)
	case EventKilled, EventDisconnect:
		op.cause = e.Reason
	case EventExited:
		// Like a reload's new worker, a successor that fails says nothing
		// about its slot's health: the old worker still serves it. Its
		// exit is the restart's to report (exited reads this next).
		if op.succ != nil {
			op.succ.state = WorkerDraining
		}
		cause := op.cause
		if cause == "" {
			cause = describeExitEvent(e) + " before it was ready"
		}
		s.finishRestart(op, fmt.Errorf("%w: slot %d (pid %d) %s", ErrRestartAborted, op.slot, e.PID, cause))
	}
}

func describeExitEvent(e Event) string {
	if e.Signal != 0 {
		return "was killed by signal " + e.Signal.String()
	}
	return fmt.Sprintf("exited with code %d", e.ExitCode)
}

// finishRestart answers the restart's callers; on failure the old worker
// is back to being the slot's worker that stays.
func (s *supervisor) finishRestart(op *restartOp, err error) {
	delete(s.restartOps, op.slot)
	if err != nil {
		if s.alive(op.old) && op.old.state == WorkerActive {
			op.old.retiring = false
			err = fmt.Errorf("%w; pid %d still serves the slot", err, op.old.pid)
		}
		s.log.Error(err.Error())
	} else {
		s.log.Info("recluster: restart finished", "worker", op.slot, "old_pid", op.old.pid, "pid", op.successor, "took", s.sys.now().Sub(op.started).Round(time.Millisecond).String())
	}
	for _, ch := range op.waiters {
		ch <- err
	}
}

// abortRestartFor stops the successor of a restart whose caller gave up.
func (s *supervisor) abortRestartFor(slot int, result chan error, cause error) {
	op := s.restartOps[slot]
	if op == nil {
		return // it finished meanwhile; result holds the answer
	}
	if len(op.waiters) > 1 {
		// Others still wait for it: only this caller leaves.
		for i, ch := range op.waiters {
			if ch == result {
				op.waiters = append(op.waiters[:i], op.waiters[i+1:]...)
				result <- fmt.Errorf("%w: slot %d: %w", ErrRestartAborted, slot, cause)
				return
			}
		}
	}
	reason := fmt.Sprintf("its restart was abandoned: %v", cause)
	if w := op.succ; w != nil && s.alive(w) && w.state == WorkerStarting {
		if w.listening {
			s.drain(w, reason) // it may be serving connections already
		} else {
			w.state = WorkerDraining // its exit is expected now
			s.kill(w, reason)
		}
	}
	s.finishRestart(op, fmt.Errorf("%w: slot %d: %w", ErrRestartAborted, slot, cause))
}
