package recluster

import (
	"strings"
	"testing"
	"time"
)

// A worker whose process starts late (a slow fork, or a trampoline slow to
// exec on a swamped machine) gets its whole ReadyTimeout from its start;
// missing it then, it is killed, and the kill names the timeout, not "no
// longer needed".
func TestKillBeforeTheStartKeepsItsReason(t *testing.T) {
	var killed []Event
	h := newHarness(t, Options{Workers: 1, ReadyTimeout: time.Second, OnEventSync: func(e Event) {
		if e.Kind == EventKilled {
			killed = append(killed, e)
		}
	}})
	h.runReady()
	h.sys.hold = true
	h.active(0).proc.(*fakeProc).exit(1)
	h.advance(time.Minute) // the respawn is due, its start is held for longer than ReadyTimeout
	if len(h.sys.pending) == 0 {
		t.Fatal("no respawn was started")
	}
	h.sys.hold = false
	h.sys.releaseStarts()
	h.settle()
	if len(killed) != 0 {
		t.Fatalf("killed at its start for the time its fork took: %v", killed)
	}
	h.advance(time.Second)
	if len(killed) != 1 || !strings.Contains(killed[0].Reason, "was not ready within 1s") {
		t.Fatalf("killed events %v, want one naming the ReadyTimeout", killed)
	}
}
