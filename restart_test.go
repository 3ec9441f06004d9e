package recluster_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

// Restarting slot 1 under load replaces slot 1's worker and nothing else,
// and fails no request.
func TestRestartUnderLoadChangesOnlyItsSlot(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 3, Timeout: 5 * time.Second})
	before := pids(tc.ActiveWorkers())
	l := startLoad(tc.url, 8, true, "/?sleep=5")
	l.progress(t, 16)
	if err := tc.Restart(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	l.progress(t, 16)
	ok, failures := l.finish()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed across a restart: %v", len(failures), ok+len(failures), failures[:min(5, len(failures))])
	}
	after := pids(tc.ActiveWorkers())
	for slot := range 3 {
		if changed := after[slot] != before[slot]; changed != (slot == 1) {
			t.Fatalf("pids went from %v to %v: only slot 1's may change", before, after)
		}
	}
	eventually(t, 10*time.Second, "the old worker of slot 1 to exit", func() bool { return gone(before[1]) })
	if st := tc.Status(); st.Generation != 1 {
		t.Fatalf("a restart is not a reload, yet the generation is %d", st.Generation)
	}
	t.Logf("%d requests, 0 failed, across a restart of slot 1", ok)
}

// A successor that dies or is never ready aborts the restart, as it would
// a reload: the old worker keeps its slot and no respawn replaces it.
func TestRestartAbortRules(t *testing.T) {
	cases := []struct {
		name, mode, want string
		opts             recluster.Options
	}{
		{"exits", "broken", "exited with code 1 before it was ready", recluster.Options{Workers: 2}},
		{"never-ready", "never-ready", "not ready within", recluster.Options{Workers: 2, ReadyWhen: recluster.Ready, ReadyTimeout: 2 * time.Second}},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{}
			if tt.opts.ReadyWhen == recluster.Ready {
				args = []string{"-mode", "ready"}
			}
			tc := startCluster(t, tt.opts, args...)
			before := pids(tc.ActiveWorkers())
			tc.setMode(t, tt.mode)
			err := tc.Restart(context.Background(), 0)
			if !errors.Is(err, recluster.ErrRestartAborted) || !strings.Contains(err.Error(), "slot 0") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an aborted restart naming slot 0 and %q, got %v", tt.want, err)
			}
			if !strings.Contains(err.Error(), "still serves") {
				t.Fatalf("the error does not say the old worker still serves: %v", err)
			}
			fixed := "ok"
			if tt.opts.ReadyWhen == recluster.Ready {
				fixed = "ready"
			}
			tc.setMode(t, fixed)
			// The supervisor has settled the exit before Restart returned:
			// an uncovered slot would have its respawn scheduled by now.
			for _, w := range tc.Status().Workers {
				if w.Restarts != 0 {
					t.Fatalf("slot %d got a respawn after the aborted restart\n%s", w.Slot, tc.rec.dump())
				}
			}
			if after := pids(tc.ActiveWorkers()); !equalMaps(before, after) {
				t.Fatalf("an aborted restart changed the active workers from %v to %v\n%s", before, after, tc.rec.dump())
			}
			// More failures than make a crash loop: the slot is not failing,
			// as a reload's failed workers do not make it so.
			tc.setMode(t, tt.mode)
			for range 3 {
				if err := tc.Restart(context.Background(), 0); !errors.Is(err, recluster.ErrRestartAborted) {
					t.Fatalf("want an aborted restart, got %v", err)
				}
			}
			if st := tc.Status(); len(st.FailingSlots) > 0 {
				t.Fatalf("failed restarts marked slots %v failing", st.FailingSlots)
			}
			tc.setMode(t, fixed)
			if len(tc.Workers()) != 2 {
				t.Fatalf("want the 2 old workers only, got %v", tc.Workers())
			}
			// The slot can be restarted again once the program is fixed.
			// never-ready's ReadyTimeout is the fixed worker's too: it is
			// long enough for a worker started on a loaded machine.
			if err := tc.Restart(context.Background(), 0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRestartRefusals(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 2})
	for _, slot := range []int{-1, 2} {
		if err := tc.Restart(context.Background(), slot); err == nil || !strings.Contains(err.Error(), "slots 0 to 1") {
			t.Fatalf("restart of slot %d: want an error naming the slots, got %v", slot, err)
		}
	}
	// A caller that gives up aborts the restart and the old worker stays.
	before := pids(tc.ActiveWorkers())
	tc.setMode(t, "late")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tc.Restart(ctx, 1); !errors.Is(err, context.Canceled) || !errors.Is(err, recluster.ErrRestartAborted) {
		t.Fatalf("want an aborted restart wrapping context.Canceled, got %v", err)
	}
	if after := pids(tc.ActiveWorkers()); !equalMaps(before, after) {
		t.Fatalf("an abandoned restart changed the active workers from %v to %v", before, after)
	}
}
