package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tmuxSession runs a command in a detached tmux session of a tmux server
// of its own, so that it has a real pseudo-terminal.
type tmuxSession struct {
	t      *testing.T
	tmux   string
	socket string
}

func (s *tmuxSession) run(args ...string) (string, error) {
	out, err := exec.Command(s.tmux, append([]string{"-S", s.socket}, args...)...).CombinedOutput()
	return string(out), err
}

func (s *tmuxSession) screen() string {
	out, _ := s.run("capture-pane", "-p", "-t", "top")
	return out
}

func (s *tmuxSession) waitScreen(m *runningMaster, what string, cond func(string) bool) string {
	s.t.Helper()
	var screen string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if screen = s.screen(); cond(screen) {
			return screen
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for the top screen to show %s; it shows:\n%s\nmaster:\n%s", what, screen, m.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// recluster top in a terminal shows the workers, a reload as it happens,
// and exits cleanly on q.
func TestTopInATerminal(t *testing.T) {
	tmux := needTool(t, "tmux", "tmux")
	m := startMaster(t, "-w", "2", "--listen", "127.0.0.1:0", "--ready-when", "ready", "--", workerScript(t, "export SDWORKER_NOTIFY=1 SDWORKER_READY_DELAY=1500ms"))
	st := m.status()
	dir := t.TempDir()
	s := &tmuxSession{t: t, tmux: tmux, socket: filepath.Join(dir, "tmux.sock")}
	done := filepath.Join(dir, "exit-status")
	shell := fmt.Sprintf("%s top --interval 200ms --control %s; echo $? > %s; sleep 30", reclusterBin, m.ctl, done)
	if out, err := s.run("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "132", "-y", "40", "env", "TERM=xterm-256color", "sh", "-c", shell); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(func() { s.run("kill-server") })

	s.waitScreen(m, "both workers", func(screen string) bool {
		for _, w := range st.Workers {
			if !strings.Contains(screen, strconv.Itoa(w.PID)) {
				return false
			}
		}
		return strings.Contains(screen, "SLOT") && strings.Contains(screen, "active") && strings.Contains(screen, "q quit")
	})
	if out, err := s.run("send-keys", "-t", "top", "r"); err != nil {
		t.Fatalf("tmux send-keys: %v\n%s", err, out)
	}
	// The reload shows while it runs (its workers are ready only after
	// 1.5s), then its outcome.
	s.waitScreen(m, "the reload in progress", func(screen string) bool {
		return strings.Contains(screen, "reload to generation 2 in progress")
	})
	screen := s.waitScreen(m, "the reload's commit", func(screen string) bool {
		return strings.Contains(screen, "generation 2 is active")
	})
	if os.Getenv("RECLUSTER_TOP_CAPTURE") != "" {
		os.WriteFile(os.Getenv("RECLUSTER_TOP_CAPTURE"), []byte(screen), 0o644)
	}
	s.run("send-keys", "-t", "top", "q")
	m.waitFor(20*time.Second, "top to exit after q", func() bool {
		b, err := os.ReadFile(done)
		return err == nil && len(b) > 0
	})
	if b, _ := os.ReadFile(done); strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("top exited with status %q after q", b)
	}
	if st := m.waitAllActive(20 * time.Second); st.Generation != 2 {
		t.Fatalf("generation %d after the reload from top", st.Generation)
	}
}

// Without a terminal, top prints the plain table every interval.
func TestTopWithoutATerminal(t *testing.T) {
	m := startMaster(t, "-w", "2", "--listen", "127.0.0.1:0", "--ready-when", "started", "--", sdworkerBin)
	out, errOut, code := cli(t, nil, "top", "--count", "3", "--interval", "100ms", "--control", m.ctl)
	if code != 0 {
		t.Fatalf("top: %d %s", code, errOut)
	}
	if n := strings.Count(out, "SLOT  PID"); n != 3 {
		t.Fatalf("want 3 tables, got %d:\n%s", n, out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Fatalf("escape codes in top's output to a pipe:\n%q", out)
	}
}
