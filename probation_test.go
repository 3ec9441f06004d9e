package recluster

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// reloadWith starts a reload the way Cluster.Reload does, with options.
func (h *harness) reloadWith(opts ...ReloadOption) (chan error, *reloadTrack) {
	var settings reloadSettings
	for _, o := range opts {
		o(&settings)
	}
	result := make(chan error, 1)
	t := h.s.track(settings)
	h.s.startReload(result)
	h.settle()
	return result, t
}

// kinds lists the events' kinds and generations, as "kind/gen".
func kinds(events []Event) []string {
	var ks []string
	for _, e := range events {
		ks = append(ks, string(e.Kind)+"/"+string(rune('0'+e.Generation)))
	}
	return ks
}

func TestFakeProbationFailsWhenANewWorkerDiesSoon(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, Respawn: time.Second})
	h.runReady()
	var progress []Event
	result, track := h.reloadWith(WithProbation(5*time.Second), WithProgress(func(e Event) { progress = append(progress, e) }))
	h.readyGen(2)
	if err := <-result; err != nil {
		t.Fatalf("the reload did not commit: %v", err)
	}
	if len(track.verdict) != 0 {
		t.Fatal("the probation was decided at the commit")
	}
	h.advance(2 * time.Second)
	proc(h.active(1)).exit(3)
	h.settle()
	if len(track.verdict) == 0 {
		t.Fatal("a new worker died 2s into a 5s probation and the probation is still undecided")
	}
	err := <-track.verdict
	if !errors.Is(err, ErrProbationFailed) || !strings.Contains(err.Error(), "slot 1") || !strings.Contains(err.Error(), "exited with code 3") {
		t.Fatalf("probation error %v, want ErrProbationFailed naming slot 1 and its exit code", err)
	}
	got := kinds(progress)
	for _, want := range []string{"spawned/2", "ready/2", "reload-committed/2", "exited/1", "reload-drained/2"} {
		if !slices.Contains(got, want) {
			t.Errorf("progress %v has no %s", got, want)
		}
	}
	if i, j := slices.Index(got, "ready/2"), slices.Index(got, "reload-committed/2"); i > j {
		t.Errorf("progress %v: the commit came before a new worker's ready", got)
	}
	// It died 2s after ready, inside the 5s probation: twice more and the
	// slot is failing, although MinUptime (1s) has long passed each time.
	for range crashLoopThreshold - 1 {
		h.advance(2 * time.Second) // respawned (1s pacing) ...
		h.ready(h.one(1, 2))
		h.advance(2 * time.Second)
		proc(h.active(1)).exit(3) // ... and dead 2s later
		h.settle()
	}
	if got := h.s.status().FailingSlots; !slices.Equal(got, []int{1}) {
		t.Fatalf("failing slots %v, want [1]", got)
	}
	h.advance(2 * time.Second)
	h.ready(h.one(1, 2))
	h.advance(5 * time.Second)
	if got := h.s.status().FailingSlots; len(got) != 0 {
		t.Fatalf("a worker that stayed up through the probation window did not clear the slot: %v", got)
	}
}

func TestFakeProbationPassesAndIgnoresAskedExits(t *testing.T) {
	h := newHarness(t, Options{Workers: 2})
	h.runReady()
	var last Event
	result, track := h.reloadWith(WithProbation(5*time.Second), WithProgress(func(e Event) { last = e }))
	h.readyGen(2)
	<-result
	if last.Kind != EventReloadDrained {
		t.Fatalf("last progress event %v, want reload-drained once the old workers exited", last)
	}
	// A newer reload that takes over tells the generation to go: that is
	// no failure of its probation.
	next := h.reload()
	h.readyGen(3)
	if err := <-next; err != nil {
		t.Fatal(err)
	}
	if len(track.verdict) != 0 {
		t.Fatalf("the probation was decided early: %v", <-track.verdict)
	}
	h.advance(5 * time.Second)
	if err := <-track.verdict; err != nil {
		t.Fatalf("probation: %v", err)
	}
	if len(h.s.tracks.list) != 0 {
		t.Fatalf("%d reloads still followed after their old generations left", len(h.s.tracks.list))
	}
}

func TestFakeCrashLoopAfterReady(t *testing.T) {
	h := newHarness(t, Options{Workers: 2, Respawn: time.Second, MinUptime: time.Second})
	h.runReady()
	for i := range crashLoopThreshold {
		if got := h.s.status().FailingSlots; len(got) != 0 {
			t.Fatalf("after %d early deaths the failing slots are %v, want none", i, got)
		}
		h.advance(500 * time.Millisecond)
		proc(h.active(0)).exit(1) // half a second after it was ready
		h.advance(time.Second)
		h.ready(h.one(0, 1))
	}
	if got := h.s.status().FailingSlots; !slices.Equal(got, []int{0}) {
		t.Fatalf("failing slots %v, want [0]", got)
	}
	h.advance(time.Second)
	if got := h.s.status().FailingSlots; len(got) != 0 {
		t.Fatalf("failing slots %v after a worker stayed up for min uptime, want none", got)
	}
	// A worker that dies later than min uptime after ready is a crash, not
	// a crash loop.
	for range crashLoopThreshold {
		h.advance(2 * time.Second)
		proc(h.active(0)).exit(1)
		h.advance(time.Second)
		h.ready(h.one(0, 1))
	}
	if got := h.s.status().FailingSlots; len(got) != 0 {
		t.Fatalf("failing slots %v after late crashes, want none", got)
	}
}

func TestFakeStopDuringProbationIsNoSuccess(t *testing.T) {
	h := newHarness(t, Options{Workers: 2})
	h.runReady()
	result, track := h.reloadWith(WithProbation(5 * time.Second))
	h.readyGen(2)
	<-result
	done := make(chan error, 1)
	h.s.terminate(done)
	h.settle()
	if err := <-track.verdict; !errors.Is(err, ErrProbationFailed) || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("probation cut short by a stop: %v, want ErrProbationFailed saying the cluster stopped", err)
	}
}
