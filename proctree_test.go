//go:build linux

package recluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

// forkingServer is a worker that does its work in children, as gunicorn's
// arbiter or `npm start` do: a small parent and two children that each
// hold childMB of memory.
const forkingServer = `#!/usr/bin/env python3
import os, signal, sys, time
mb = int(sys.argv[1])
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        blob = b"x" * (mb << 20)
        while True:
            time.sleep(3600)
    kids.append(pid)
def stop(*_):
    for k in kids:
        os.kill(k, signal.SIGKILL)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(3600)
`

const childMB = 40

func startForkingCluster(t *testing.T, opts recluster.Options) *recluster.Cluster {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is not installed (.ci/run installs it)")
		}
		t.Skip("python3 is not installed; skipping")
	}
	script := filepath.Join(t.TempDir(), "forking.py")
	if err := os.WriteFile(script, []byte(forkingServer), 0o755); err != nil {
		t.Fatal(err)
	}
	opts.Workers = 1
	opts.ReadyWhen = recluster.Started
	opts.StopSignal = 15
	opts.Args = []string{script, strconv.Itoa(childMB)}
	opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	c := recluster.New(py, opts)
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Terminate(ctx)
	})
	return c
}

// treeRSS sums VmRSS over pid and its descendants, found through
// /proc/PID/task/TID/children: another route than the master's.
func treeRSS(t *testing.T, pid int) (total int64, procs int) { return treeRSSOf(t, pid, true) }

func treeRSSOf(t *testing.T, pid int, descend bool) (total int64, procs int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if kb, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			total += n << 10
		}
	}
	procs = 1
	if !descend {
		return total, procs
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(b)) {
			child, _ := strconv.Atoi(f)
			n, p := treeRSS(t, child)
			total, procs = total+n, procs+p
		}
	}
	return total, procs
}

func TestStatusCountsTheWholeProcessTree(t *testing.T) {
	c := startForkingCluster(t, recluster.Options{})
	var w recluster.WorkerStatus
	eventually(t, 20*time.Second, "the children to hold their memory", func() bool {
		st := c.Status()
		if len(st.Workers) != 1 {
			return false
		}
		w = st.Workers[0]
		return w.RSSBytes > 2*childMB<<20
	})
	// Memory moves a little between two readings: compare a few times.
	var want int64
	var procs int
	eventually(t, 10*time.Second, "status RSS within 5% of the tree's sum", func() bool {
		want, procs = treeRSS(t, w.PID)
		w = c.Status().Workers[0]
		diff := float64(w.RSSBytes-want) / float64(want)
		return procs == 3 && diff < 0.05 && diff > -0.05
	})
	t.Logf("status RSS %d bytes; sum over the %d processes of the tree %d bytes", w.RSSBytes, procs, want)
}

func TestMaxRSSRecyclesOnTheTreesSize(t *testing.T) {
	// The parent alone is a few MB, far below the limit; its tree is over
	// 80 MB.
	rec := newRecorder()
	c := startForkingCluster(t, recluster.Options{MaxRSS: 60 << 20, OnEvent: rec.add})
	e := rec.waitN(t, 1, 30*time.Second, kind(recluster.EventRetire))
	if !strings.Contains(e.Reason, "process tree") || !strings.Contains(e.Reason, "over the limit") {
		t.Fatalf("worker retired for %q, want its process tree over the limit", e.Reason)
	}
	main, _, _ := strings.Cut(e.Reason, " bytes")
	rss, _ := strconv.ParseInt(strings.TrimPrefix(main, "RSS "), 10, 64)
	own, _ := treeRSSOf(t, e.PID, false)
	if rss <= 60<<20 || own >= 60<<20 {
		t.Fatalf("recycled at %d bytes for its tree; the worker alone holds %d: the limit must apply to the tree", rss, own)
	}
	t.Logf("recycled at %d bytes (the worker alone: %d)", rss, own)
	c.Terminate(context.Background())
}
