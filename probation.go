package recluster

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// What happens after a reload commits: the new generation's probation
// (ReloadOption WithProbation), the progress a caller follows
// (WithProgress) until the generation it replaced is gone, and the
// crash-loop rule for workers that die soon after they became ready.

// ReloadOption changes how one Reload behaves.
type ReloadOption func(*reloadSettings)

type reloadSettings struct {
	probation time.Duration
	progress  func(Event)
}

// WithProbation makes Reload wait, once the new generation is active, until
// it has stayed up for d: Reload then returns nil only if none of the new
// workers died unasked during those d (a worker told to go by a newer
// reload, a scale-down or Terminate does not count). If one did, Reload
// returns an error that wraps ErrProbationFailed and names the slot, the
// pid and how it ended. The reload stays committed either way (the old
// generation is already draining): the slot's workers are respawned as
// after any crash, and a slot whose workers keep dying within the
// probation is marked failing (Status.FailingSlots).
func WithProbation(d time.Duration) ReloadOption {
	return func(r *reloadSettings) { r.probation = max(d, 0) }
}

// WithProgress has f called with every event of the reload as it happens:
// its workers' spawned, ready and exited events, the commit or abort, and
// then the old generation's disconnect, killed and exited events, until
// the last event f gets, which is always EventReloadAborted (the reload
// failed or was superseded), EventReloadDrained (every worker it replaced
// has exited) or EventStopped. Like Options.OnEventSync, f runs on the
// supervisor's goroutine: it must return at once and must not call the
// Cluster's methods. It may be called after Reload has returned, while the
// old generation drains.
func WithProgress(f func(Event)) ReloadOption {
	return func(r *reloadSettings) { r.progress = f }
}

// ErrProbationFailed is wrapped by the error of a Reload whose new
// generation did not stay up through its probation (WithProbation).
var ErrProbationFailed = errors.New("recluster: reload probation failed")

// reloadTrack follows one reload from its start until the generation it
// replaced has gone.
type reloadTrack struct {
	gen      int
	settings reloadSettings
	// committed is when the reload committed; zero until then.
	committed time.Time
	members   []*Worker  // the generation's workers at the commit
	verdict   chan error // the probation's outcome, once
	probation timer
	decided   bool // the verdict is given
	drained   bool // the generations it replaced have gone
}

// tracks is the supervisor's record of the reloads it follows after
// their commit.
type tracks struct {
	list []*reloadTrack
	// window is, by generation, how long its workers must stay up after
	// they are ready to break a crash loop, when longer than MinUptime:
	// the probation of the reload that started it.
	window map[int]time.Duration
}

// track starts following the reload that startReload is about to begin,
// when the cluster runs; it returns nil otherwise.
func (s *supervisor) track(settings reloadSettings) *reloadTrack {
	if s.phase != PhaseRunning {
		return nil
	}
	t := &reloadTrack{gen: s.lastGen + 1, settings: settings, verdict: make(chan error, 1)}
	s.tracks.list = append(s.tracks.list, t)
	if settings.probation > 0 {
		if s.tracks.window == nil {
			s.tracks.window = map[int]time.Duration{}
		}
		s.tracks.window[t.gen] = settings.probation
	}
	return t
}

// followReloads hands each event to the reloads it concerns; emit calls
// it for every event, after everyone else has had it.
func (s *supervisor) followReloads(e Event) {
	for _, t := range slices.Clone(s.tracks.list) {
		s.followReload(t, e)
	}
}

func (s *supervisor) followReload(t *reloadTrack, e Event) {
	if !slices.Contains(s.tracks.list, t) {
		return // ended by an event this one caused
	}
	// The old generation's events concern t from the moment t's generation
	// is active, which is just before the commit event is emitted.
	concerns := e.Generation == t.gen || e.Kind == EventStopped ||
		(s.gen >= t.gen && e.Slot >= 0 && e.Generation < t.gen)
	if !concerns {
		return
	}
	if t.settings.progress != nil {
		t.settings.progress(e)
	}
	switch {
	case e.Kind == EventReloadAborted && e.Generation == t.gen:
		t.drained = true
		s.decide(t, nil) // Reload reports the abort itself
		s.endTrack(t)
	case e.Kind == EventStopped:
		t.drained = true
		var err error
		if !t.committed.IsZero() {
			err = fmt.Errorf("%w: the cluster stopped before the probation of generation %d ended", ErrProbationFailed, t.gen)
		}
		s.decide(t, err) // already decided unless a probation was running
		s.endTrack(t)
	case e.Kind == EventReloadCommitted && e.Generation == t.gen:
		s.committed(t)
	case e.Kind == EventReloadDrained && e.Generation == t.gen:
		t.drained = true
		t.settings.progress = nil // its last event
		if t.decided {
			s.endTrack(t)
		}
	case e.Kind == EventExited && !t.committed.IsZero():
		if e.Generation == t.gen {
			s.probationExit(t, e)
		}
		s.checkDrained(t)
	}
}

func (s *supervisor) committed(t *reloadTrack) {
	t.committed = s.sys.now()
	for w := range s.workers {
		if w.gen == t.gen {
			t.members = append(t.members, w)
		}
	}
	if p := t.settings.probation; p > 0 {
		t.probation = s.after(p, func(s *supervisor) { s.decide(t, nil) })
	} else {
		s.decide(t, nil)
	}
	s.checkDrained(t)
}

// probationExit fails the probation when one of the generation's workers
// ended unasked.
func (s *supervisor) probationExit(t *reloadTrack, e Event) {
	i := slices.IndexFunc(t.members, func(w *Worker) bool { return w.pid == e.PID })
	if t.decided || i < 0 || t.members[i].state == WorkerDraining {
		return
	}
	w := t.members[i]
	how := exitStatus{code: e.ExitCode, signal: e.Signal}.String()
	up := s.sys.now().Sub(w.readyAt).Round(time.Millisecond)
	s.decide(t, fmt.Errorf("%w: slot %d (pid %d) %s %v after it was ready (probation %v)",
		ErrProbationFailed, w.slot, w.pid, how, up, t.settings.probation))
}

// decide gives the reload's caller its probation's outcome, once.
func (s *supervisor) decide(t *reloadTrack, err error) {
	if t.decided {
		return
	}
	t.decided = true
	if t.probation != nil {
		t.probation.Stop()
	}
	if err != nil {
		s.log.Error(err.Error(), "generation", t.gen)
	} else if t.settings.probation > 0 && !t.committed.IsZero() {
		s.log.Info("recluster: reload probation passed", "generation", t.gen, "probation", t.settings.probation.String())
	}
	t.verdict <- err
	if t.drained {
		s.endTrack(t)
	}
}

// checkDrained reports EventReloadDrained once no worker of an older
// generation than t's is left.
func (s *supervisor) checkDrained(t *reloadTrack) {
	for w := range s.workers {
		if w.gen < t.gen {
			return
		}
	}
	e := s.clusterEvent(EventReloadDrained, t.gen)
	e.Duration = s.sys.now().Sub(t.committed)
	s.emit(e)
}

func (s *supervisor) endTrack(t *reloadTrack) {
	s.tracks.list = slices.DeleteFunc(s.tracks.list, func(o *reloadTrack) bool { return o == t })
	for gen := range s.tracks.window {
		if gen < t.gen && !slices.ContainsFunc(s.sortedWorkers(), func(w *Worker) bool { return w.gen == gen }) {
			delete(s.tracks.window, gen)
		}
	}
}

// uptimeWindow is how long w must stay up after it is ready for its slot
// to be healthy: MinUptime, or its generation's probation when longer.
// Zero means at once.
func (s *supervisor) uptimeWindow(w *Worker) time.Duration {
	return max(s.opts.MinUptime, s.tracks.window[w.gen], 0)
}

// diedEarly reports whether w's end counts towards its slot's crash loop:
// it was never ready, or died within its uptime window of being ready.
func (s *supervisor) diedEarly(w *Worker) bool {
	return w.readyAt.IsZero() || s.sys.now().Sub(w.readyAt) < s.uptimeWindow(w)
}

// settleSlot clears w's slot's crash loop once w has stayed up for its
// uptime window after it was ready.
func (s *supervisor) settleSlot(w *Worker) { s.settleSlotIn(w, s.uptimeWindow(w)) }

// settleSlotIn clears w's slot's crash loop once d has passed (at once
// when d is zero).
func (s *supervisor) settleSlotIn(w *Worker, d time.Duration) {
	clear := func(s *supervisor) {
		if !s.alive(w) || w.state == WorkerDraining || s.failures[w.slot] == 0 {
			return
		}
		if s.failures[w.slot] >= crashLoopThreshold {
			s.log.Info("recluster: slot recovered: a worker stayed up after it was ready", "worker", w.slot, "pid", w.pid)
		}
		delete(s.failures, w.slot)
	}
	if d == 0 {
		clear(s)
		return
	}
	w.uptimeTimer = s.after(d, clear)
}
