//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// server is testdata/server, the reloadtime scenario's worker, built once
// by TestMain.
var server string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "recluster-suite-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code, err := buildAndRun(m, dir)
	os.RemoveAll(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M, dir string) (int, error) {
	root, err := repoRoot()
	if err != nil {
		return 0, err
	}
	server = filepath.Join(dir, "server")
	cmd := exec.Command("go", "build", "-o", server, "./testdata/server")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go build ./testdata/server: %v\n%s", err, out)
	}
	return m.Run(), nil
}

func TestBareSwapReplacesTheGeneration(t *testing.T) {
	const n, patience = 3, time.Minute
	b, err := newBareSwap(server, reloadTimeArgs, n, t.TempDir(), patience)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close(patience)
	for i := range 2 {
		old := b.current
		s, err := b.swap(patience)
		if err != nil {
			t.Fatalf("swap %d: %v", i+1, err)
		}
		if s.start <= 0 || s.ready < s.start || s.total < s.ready {
			t.Errorf("swap %d: timings out of order: %+v", i+1, s)
		}
		if len(b.current) != n {
			t.Fatalf("swap %d: %d workers run, want %d", i+1, len(b.current), n)
		}
		for _, p := range old {
			if err := p.Signal(syscall.Signal(0)); !errors.Is(err, os.ErrProcessDone) {
				t.Errorf("swap %d: old worker %d not reaped: %v", i+1, p.Pid, err)
			}
			for _, q := range b.current {
				if q.Pid == p.Pid {
					t.Errorf("swap %d: worker %d is in both generations", i+1, p.Pid)
				}
			}
		}
	}
	last := b.current
	b.close(patience)
	for _, p := range last {
		if err := p.Signal(syscall.Signal(0)); !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("worker %d not reaped by close: %v", p.Pid, err)
		}
	}
}

func TestBareSwapFailsWhenAWorkerIsNeverReady(t *testing.T) {
	_, err := newBareSwap(server, []string{"-mode", "never-ready"}, 2, t.TempDir(), 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "2 of 2 workers of server did not send READY=1 within 2s") {
		t.Fatalf("got %v, want the workers that did not send READY=1", err)
	}
}
