package polyglot_test

import (
	"github.com/recluster-go/recluster/internal/testbin"

	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Servers that know nothing of recluster and start to accept on their
// inherited socket late (examples/late): with the default readiness, a
// reload must not commit before the new workers accept.

const lateListen = 3 * time.Second

func TestLateListenersUnderCLI(t *testing.T) {
	cases := []struct {
		name string
		late time.Duration
		argv func(t *testing.T) []string
		env  []string
	}{
		{"express", lateListen, func(t *testing.T) []string { return []string{nodeExe(t), expressApp(t)} }, nil},
		{"python-asyncio", lateListen, func(t *testing.T) []string {
			return []string{python(t).interpreter, lateScript(t, "asyncio_server.py")}
		}, nil},
		{"python-accept", lateListen, func(t *testing.T) []string {
			return []string{python(t).interpreter, lateScript(t, "blocking_server.py")}
		}, nil},
		{"python-poll", time.Second, func(t *testing.T) []string {
			return []string{python(t).interpreter, lateScript(t, "blocking_server.py")}
		}, []string{"WAIT=poll"}},
		{"python-select", time.Second, func(t *testing.T) []string {
			return []string{python(t).interpreter, lateScript(t, "blocking_server.py")}
		}, []string{"WAIT=select"}},
		{"go", lateListen, func(t *testing.T) []string { return []string{goServer(t)} }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{fmt.Sprintf("LATE_MS=%d", tc.late.Milliseconds())}, tc.env...)
			m := startCLIMaster(t, env, []string{"--workers", "2", "--listen", "127.0.0.1:0", "--stop-signal", "TERM",
				"--timeout", drainTimeout.String(), "--respawn", "100ms"}, tc.argv(t))
			st := m.waitActive(t, 2, tc.late+20*time.Second)
			l := startLoad(strings.TrimPrefix(st.Addrs[0], "tcp:"), 4, 0)
			defer l.stop()
			l.waitOK(t, 50)
			began := time.Now()
			if out, err := m.command("reload"); err != nil {
				t.Fatalf("recluster reload: %v\n%s", err, out)
			}
			took := time.Since(began)
			if took < tc.late {
				t.Errorf("the reload committed after %v, before the new workers could accept (they listen %v after exec)", took, tc.late)
			}
			st = m.status(t)
			l.waitServedBy(t, activePIDs(st))
			l.waitOK(t, l.ok.Load()+50)
			l.stop()
			t.Logf("reload took %v; %d requests, %d failed", took.Round(time.Millisecond), l.ok.Load()+l.failed.Load(), l.failed.Load())
			if n := l.failed.Load(); n > 0 {
				t.Errorf("%d requests failed during the reload; first errors:\n%s", n, strings.Join(l.errors(), "\n"))
			}
			m.stop(t)
		})
	}
}

// A release that starts, accepts, and exits 2 s later (EXIT_AFTER_MS; one
// worker, so that a slow start of one slot cannot abort the reload before
// its commit):
// reload --probation must fail naming the slot and how it died, the slot
// must be marked failing once its workers keep dying within the
// probation, and it must recover when a worker stays up.
func TestProbationCatchesAVersionThatDiesSoon(t *testing.T) {
	dir := t.TempDir()
	mode := filepath.Join(dir, "mode")
	if err := os.WriteFile(mode, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "server.sh")
	script := fmt.Sprintf("#!/bin/sh\n. %s\nexec %s %s\n", mode, python(t).interpreter, lateScript(t, "asyncio_server.py"))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	m := startCLIMaster(t, []string{"LATE_MS=100"}, []string{"--workers", "1", "--listen", "127.0.0.1:0", "--stop-signal", "TERM",
		"--timeout", drainTimeout.String(), "--respawn", "100ms"}, []string{wrapper})
	m.waitActive(t, 1, 20*time.Second)

	if err := os.WriteFile(mode, []byte("export EXIT_AFTER_MS=2000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	out, err := m.command("reload", "--probation", "4s")
	if err == nil || !strings.Contains(out, "reload probation failed: slot ") || !strings.Contains(out, "exited with code 1") {
		t.Fatalf("reload --probation to a version that dies after 2s: %v\n%s", err, out)
	}
	if took := time.Since(began); took < 2*time.Second {
		t.Errorf("the probation failed after %v, before the new version died", took)
	}
	waitFor(t, 60*time.Second, "the slot to be marked failing", func() bool {
		st, err := m.tryStatus()
		return err == nil && len(st.FailingSlots) == 1
	})
	if out, _ := m.command("status"); !strings.Contains(out, "failing slots") {
		t.Errorf("recluster status does not show the failing slots:\n%s", out)
	}
	if n := strings.Count(m.out.String(), "slot is failing"); n != 1 {
		t.Errorf("%d \"slot is failing\" log lines, want one:\n%s", n, m.out.String())
	}
	// A fixed release: the respawned workers stay up and the slots recover.
	if err := os.WriteFile(mode, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the slots to recover", func() bool {
		st, err := m.tryStatus()
		return err == nil && len(st.FailingSlots) == 0 && len(activePIDs(st)) == 1
	})
	m.stop(t)
}

// ---------------------------------------------------------------- programs

func nodeExe(t *testing.T) string {
	t.Helper()
	exe, err := exec.LookPath("node")
	if err != nil {
		skipOutsideCI(t, "node is not installed")
	}
	exe, _ = filepath.Abs(exe)
	return exe
}

var npmOnce sync.Once

// expressApp installs the Express example's locked dependencies (npm ci)
// once, unless they are there already.
func expressApp(t *testing.T) string {
	t.Helper()
	dir := example(t, "late", "express")
	var err error
	var out []byte
	npmOnce.Do(func() {
		if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "express")); statErr == nil {
			return
		}
		npm, lookErr := exec.LookPath("npm")
		if lookErr != nil {
			err = lookErr
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		out, err = cmd.CombinedOutput()
	})
	if err != nil {
		skipOutsideCI(t, fmt.Sprintf("npm ci in %s failed: %v\n%s", dir, err, out))
	}
	if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "express")); statErr != nil {
		skipOutsideCI(t, "Express is not installed in "+dir+" (npm ci)")
	}
	return filepath.Join(dir, "server.js")
}

func lateScript(t *testing.T, name string) string { return example(t, "late", name) }

var (
	goServerOnce sync.Once
	goServerPath string
	goServerErr  error
)

func goServer(t *testing.T) string {
	t.Helper()
	goServerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "recluster-late-")
		if err != nil {
			goServerErr = err
			return
		}
		goServerPath = filepath.Join(dir, "goserver")
		out, err := exec.Command("go", "build", "-o", goServerPath, "github.com/recluster-go/recluster/examples/late/goserver").CombinedOutput()
		if err != nil {
			goServerErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if goServerErr != nil {
		t.Fatal(goServerErr)
	}
	return goServerPath
}

// skipOutsideCI skips a test whose tools are missing, except under CI,
// which installs them (.ci/run) and must never skip.
func skipOutsideCI(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why + "; skipping")
}

// ---------------------------------------------------------------- master

type cliMaster struct {
	bin, control string
	out          *testbin.Buffer
	exited       chan error
}

func startCLIMaster(t *testing.T, env, runArgs, argv []string) *cliMaster {
	t.Helper()
	m := &cliMaster{bin: cli(t), control: filepath.Join(t.TempDir(), "control.sock"), out: &testbin.Buffer{}, exited: make(chan error, 1)}
	args := append(append([]string{"run", "--control", m.control}, runArgs...), "--")
	cmd := exec.Command(m.bin, append(args, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = m.out, m.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-m.exited:
		default:
			cmd.Process.Kill() // the workers follow it (parent-death signal)
			<-m.exited
		}
		if t.Failed() {
			t.Logf("master and worker output:\n%s", m.out.String())
		}
	})
	return m
}

func (m *cliMaster) command(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, m.bin, append(args, "--control", m.control)...).CombinedOutput()
	return string(b), err
}

func (m *cliMaster) tryStatus() (cliStatus, error) {
	var st cliStatus
	b, err := m.command("status", "--json")
	if err != nil {
		return st, fmt.Errorf("%v: %s", err, b)
	}
	err = json.Unmarshal([]byte(b), &st)
	return st, err
}

func (m *cliMaster) status(t *testing.T) cliStatus {
	t.Helper()
	st, err := m.tryStatus()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitActive waits for n active workers and the master's addresses.
func (m *cliMaster) waitActive(t *testing.T, n int, limit time.Duration) cliStatus {
	t.Helper()
	var st cliStatus
	waitFor(t, limit, fmt.Sprintf("%d active workers", n), func() bool {
		select {
		case err := <-m.exited:
			m.exited <- err
			t.Fatalf("the master exited early: %v", err)
		default:
		}
		var err error
		st, err = m.tryStatus()
		return err == nil && len(activePIDs(st)) == n && len(st.Addrs) > 0
	})
	return st
}

func (m *cliMaster) stop(t *testing.T) {
	t.Helper()
	if out, err := m.command("stop"); err != nil {
		t.Errorf("recluster stop: %v\n%s", err, out)
	}
	select {
	case err := <-m.exited:
		m.exited <- err
		if err != nil {
			t.Errorf("the master exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("the master did not exit within 20s of recluster stop")
	}
}

func activePIDs(st cliStatus) map[int]bool {
	pids := map[int]bool{}
	for _, w := range st.Workers {
		if w.State == "active" {
			pids[w.PID] = true
		}
	}
	return pids
}
