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

// The examples under the recluster CLI, reloaded with `recluster reload`.

func TestPythonUnderCLI(t *testing.T) {
	p := python(t)
	runUnderCLI(t, p)
}

func TestNodeUnderCLI(t *testing.T) {
	p := node(t)
	runUnderCLI(t, p)
}

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

// cli builds cmd/recluster once per test binary.
func cli(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			cliErr = fmt.Errorf("the go command is not in PATH: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "recluster-cli-")
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(dir, "recluster")
		out, err := exec.Command(goTool, "build", "-o", cliPath, "github.com/recluster-go/recluster/cmd/recluster").CombinedOutput()
		if err != nil {
			cliErr = fmt.Errorf("go build ./cmd/recluster: %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliPath
}

// cliStatus is the part of `recluster status --json` that the test reads.
type cliStatus struct {
	Phase      string   `json:"phase"`
	Generation int      `json:"generation"`
	Addrs      []string `json:"addrs"`
	Workers    []struct {
		Slot       int    `json:"slot"`
		PID        int    `json:"pid"`
		Generation int    `json:"generation"`
		State      string `json:"state"`
	} `json:"workers"`
	FailingSlots []int `json:"failing_slots"`
}

func runUnderCLI(t *testing.T, p program) {
	bin := cli(t)
	control := filepath.Join(t.TempDir(), "control.sock")
	out := &testbin.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("master and worker output:\n%s", out.String())
		}
	})
	master := exec.Command(bin, "run", "--workers", "2", "--listen", "http=127.0.0.1:0",
		"--ready-when", "ready", "--timeout", drainTimeout.String(), "--respawn", "100ms",
		"--control", control, "--", p.interpreter, p.script)
	master.Stdout, master.Stderr = out, out
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- master.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			master.Process.Kill() // the workers follow it (parent-death signal)
			<-exited
		}
	}()

	command := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := exec.CommandContext(ctx, bin, append(args, "--control", control)...).CombinedOutput()
		return string(b), err
	}
	status := func() (cliStatus, error) {
		var st cliStatus
		b, err := command("status", "--json")
		if err != nil {
			return st, fmt.Errorf("%v: %s", err, b)
		}
		err = json.Unmarshal([]byte(b), &st)
		return st, err
	}
	activeWorkers := func(st cliStatus) map[int]bool {
		pids := map[int]bool{}
		for _, w := range st.Workers {
			if w.State == "active" {
				pids[w.PID] = true
			}
		}
		return pids
	}

	var st cliStatus
	waitFor(t, 20*time.Second, "2 active workers", func() bool {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("the master exited early: %v", err)
		default:
		}
		var err error
		st, err = status()
		return err == nil && len(activeWorkers(st)) == 2 && len(st.Addrs) > 0
	})
	addr := strings.TrimPrefix(st.Addrs[0], "tcp:")
	firstGen := activeWorkers(st)

	const cliReloads = 3
	l := startLoad(addr, 6, 6)
	defer l.stop()
	l.waitOK(t, 200)
	for i := 0; i < cliReloads; i++ {
		if b, err := command("reload"); err != nil {
			t.Fatalf("recluster reload %d: %v\n%s", i+1, err, b)
		}
		st, err := status()
		if err != nil {
			t.Fatal(err)
		}
		l.waitServedBy(t, activeWorkers(st))
		l.waitOK(t, l.ok.Load()+100)
	}
	waitFor(t, drainTimeout+10*time.Second, "the old generations to exit", func() bool {
		st, err := status()
		return err == nil && len(st.Workers) == 2
	})
	l.waitOK(t, l.ok.Load()+100)
	l.stop()

	st, err := status()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := command("stop"); err != nil {
		t.Errorf("recluster stop: %v\n%s", err, b)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("the master exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("the master did not exit within 15s of recluster stop")
	}

	t.Logf("%d requests, %d failed, %d over keep-alive connections, %d connections; served by %d pids",
		l.ok.Load()+l.failed.Load(), l.failed.Load(), l.keepAliveOK.Load(), l.conns.Load(), len(l.pids()))
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d requests failed; first errors:\n%s", n, strings.Join(l.errors(), "\n"))
	}
	if want := 1 + cliReloads; st.Generation != want {
		t.Errorf("active generation %d after %d reloads, want %d", st.Generation, cliReloads, want)
	}
	for pid := range activeWorkers(st) {
		if firstGen[pid] {
			t.Errorf("pid %d of the first generation is still active", pid)
		}
	}
	if n := len(l.pids()); n < 1+cliReloads {
		t.Errorf("requests were served by %d distinct pids, want at least %d", n, 1+cliReloads)
	}
	if log := out.String(); strings.Contains(log, "worker killed") || strings.Contains(log, "event=killed") {
		t.Errorf("a worker was killed instead of draining within %v", drainTimeout)
	}
}
