package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

// The master's own Go runtime settings, read from its metrics (the Go
// collector's go_gc_gogc_percent and go_sched_gomaxprocs_threads): the
// defaults of tuneMasterRuntime, and the operator's GOGC and GOMAXPROCS
// winning over them.
func TestMasterRuntimeSettings(t *testing.T) {
	for _, tc := range []struct {
		name               string
		env                []string
		gogc, maxProcsMost int
	}{
		{"defaults", nil, masterGCPercent, masterMaxProcs},
		{"operator's", []string{"GOGC=100", "GOMAXPROCS=1"}, 100, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var env []string
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
					env = append(env, kv)
				}
			}
			ctl := filepath.Join(t.TempDir(), "ctl.sock")
			metricsAddr := freeTCPAddr(t)
			cmd := exec.Command(reclusterBin, "run", "--control", ctl, "-w", "1", "--listen", "127.0.0.1:0", "--metrics", metricsAddr, "--", sdworkerBin)
			cmd.Env = append(env, tc.env...)
			m := startCommand(t, ctl, cmd)
			m.waitControl()
			m.waitAllActive(20 * time.Second)
			metrics := scrape(t, metricsAddr)
			gogc := metricValue(metrics, "go_gc_gogc_percent")
			procs := metricValue(metrics, "go_sched_gomaxprocs_threads")
			if gogc != tc.gogc || procs < 1 || procs > tc.maxProcsMost {
				t.Fatalf("the master runs with GOGC %d and GOMAXPROCS %d, want %d and at most %d", gogc, procs, tc.gogc, tc.maxProcsMost)
			}
		})
	}
}

// The master returns its free heap once a reload's old generation has
// gone, and not on the way there.
func TestMasterReturnsMemoryWhenAReloadHasDrained(t *testing.T) {
	called := make(chan struct{}, 4)
	saved := returnMemory
	returnMemory = func() { called <- struct{}{} }
	t.Cleanup(func() { returnMemory = saved })
	m := &master{}
	m.onEvent(recluster.Event{Kind: recluster.EventSpawned, Generation: 2})
	m.onEvent(recluster.Event{Kind: recluster.EventReloadDrained, Generation: 2})
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("the master kept its free heap after the reload drained")
	}
	select {
	case <-called:
		t.Fatal("the master returned memory on an event that settles nothing")
	case <-time.After(100 * time.Millisecond):
	}
}
