package recluster_test

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

// largeCluster is the size of the cluster that proves the supervisor has
// nothing quadratic in the workers and never waits on the loop: start,
// reload and terminate must work with it as with two.
const largeCluster = 256

// needRoomFor skips a test that needs about procs processes and fds
// descriptors when the machine's limits do not allow them, except under
// CI, where a skipped test would hide a regression: there it fails.
func needRoomFor(t *testing.T, procs, fds uint64) {
	t.Helper()
	var nofile, nproc syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile)
	syscall.Getrlimit(rlimitNPROC, &nproc)
	var short string
	switch {
	case nofile.Cur < fds:
		short = "open files"
	case nproc.Cur < procs:
		short = "processes"
	}
	if short == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("this test needs %d processes and %d open files, and the limit on %s is too low (ulimit -u %d, ulimit -n %d): raise it in the CI job", procs, fds, short, nproc.Cur, nofile.Cur)
	}
	t.Skipf("needs %d processes and %d open files; the limit on %s is too low here (ulimit -u %d, ulimit -n %d)", procs, fds, short, nproc.Cur, nofile.Cur)
}

// RLIMIT_NPROC has the same number on every Linux architecture, but the
// syscall package defines it on none.
const rlimitNPROC = 6

// Hundreds of real workers start, serve, reload in one generation and
// terminate; the supervisor answers calls all along.
func TestTwoHundredFiftySixWorkers(t *testing.T) {
	// Two generations during the reload, each a Go program with a few
	// threads; the master holds a few descriptors per worker.
	needRoomFor(t, 2*largeCluster*8, 2*largeCluster*4+256)
	tc := newCluster(t, recluster.Options{
		Workers:      largeCluster,
		ReadyTimeout: 2 * time.Minute, // 2 cores start 256 processes
		Timeout:      time.Minute,
	})
	if err := tc.Run(); err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, largeCluster, 3*time.Minute, kind(recluster.EventActive))
	tc.learnURL(t)
	first := tc.ActiveWorkers()
	if len(first) != largeCluster {
		t.Fatalf("%d slots have an active worker, want %d", len(first), largeCluster)
	}
	get(t, tc.url, "/")

	// The supervisor must answer while it starts a whole generation: an
	// Addrs call waits for the loop and nothing else, so a loop that
	// blocks shows here.
	probe := startLoopProbe(tc.Cluster)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	err := tc.Reload(ctx)
	cancel()
	slowest, calls := probe.stop()
	t.Logf("during the reload of %d workers, %d calls answered; the slowest took %v", largeCluster, calls, slowest)
	if err != nil {
		t.Fatal(err)
	}
	second := tc.ActiveWorkers()
	if len(second) != largeCluster {
		t.Fatalf("after the reload %d slots have an active worker, want %d", len(second), largeCluster)
	}
	for slot, w := range second {
		if w.Generation() != 2 || w.PID() == first[slot].PID() {
			t.Fatalf("after the reload slot %d holds %v (before: %v)", slot, w, first[slot])
		}
	}
	// Every old worker is told to go and is reaped.
	tc.rec.waitN(t, largeCluster, 2*time.Minute, func(e recluster.Event) bool {
		return e.Kind == recluster.EventExited && e.Generation == 1
	})
	get(t, tc.url, "/")

	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := tc.Terminate(ctx); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	for slot, w := range second {
		if !gone(w.PID()) {
			t.Errorf("slot %d's worker %d is still there after Terminate", slot, w.PID())
		}
	}
	if n := len(tc.Status().Workers); n != 0 {
		t.Fatalf("Status lists %d workers after Terminate", n)
	}
}

// loopProbe calls the supervisor over and over and keeps the slowest
// answer.
type loopProbe struct {
	done   chan struct{}
	result chan [2]int64
}

func startLoopProbe(c *recluster.Cluster) *loopProbe {
	p := &loopProbe{done: make(chan struct{}), result: make(chan [2]int64, 1)}
	go func() {
		var slowest time.Duration
		calls := int64(0)
		for {
			select {
			case <-p.done:
				p.result <- [2]int64{int64(slowest), calls}
				return
			case <-time.After(5 * time.Millisecond):
			}
			t0 := time.Now()
			c.Addrs()
			slowest = max(slowest, time.Since(t0))
			calls++
		}
	}()
	return p
}

func (p *loopProbe) stop() (slowest time.Duration, calls int64) {
	close(p.done)
	r := <-p.result
	return time.Duration(r[0]), r[1]
}
