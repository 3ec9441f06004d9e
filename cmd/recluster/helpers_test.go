package main

import (
	"github.com/recluster-go/recluster/internal/testbin"

	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster/internal/control"
)

// Binaries built once by TestMain.
var (
	reclusterBin string
	sdworkerBin  string
	helloBin     string // examples/hello
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "recluster-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	reclusterBin = filepath.Join(dir, "recluster")
	sdworkerBin = filepath.Join(dir, "sdworker")
	build := func(out, pkg string, race bool) error {
		args := []string{"build", "-o", out}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Stderr = os.Stderr
		return cmd.Run()
	}
	if err := build(reclusterBin, ".", raceEnabled); err != nil {
		fmt.Fprintln(os.Stderr, "building recluster:", err)
		os.Exit(1)
	}
	if err := build(sdworkerBin, "./testdata/sdworker", false); err != nil {
		fmt.Fprintln(os.Stderr, "building sdworker:", err)
		os.Exit(1)
	}
	// examples/hello: workers that hand their idle keep-alive connections
	// to the next generation.
	helloBin = filepath.Join(dir, "hello")
	if err := build(helloBin, "../../examples/hello", false); err != nil {
		fmt.Fprintln(os.Stderr, "building examples/hello:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runningMaster is a recluster run process started by a test.
type runningMaster struct {
	t       *testing.T
	cmd     *exec.Cmd
	ctl     string
	stdout  *testbin.Buffer
	stderr  *testbin.Buffer
	exited  chan struct{}
	waitErr error
}

// startMaster runs recluster run with a control socket of its own and
// waits until every slot has an active worker.
func startMaster(t *testing.T, args ...string) *runningMaster {
	t.Helper()
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	m := startProcess(t, ctl, append([]string{reclusterBin, "run", "--control", ctl}, args...), nil)
	m.waitControl()
	m.waitAllActive(20 * time.Second)
	return m
}

// startProcess starts argv (a recluster master, maybe under a wrapper)
// whose control socket is ctl.
func startProcess(t *testing.T, ctl string, argv []string, env []string) *runningMaster {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	return startCommand(t, ctl, cmd)
}

// startCommand starts cmd, a master whose control socket is ctl, with its
// output in the master's buffers unless cmd already has somewhere to put
// it, and kills it when the test ends.
func startCommand(t *testing.T, ctl string, cmd *exec.Cmd) *runningMaster {
	t.Helper()
	m := &runningMaster{t: t, ctl: ctl, cmd: cmd, stdout: &testbin.Buffer{}, stderr: &testbin.Buffer{}, exited: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = m.stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = m.stderr
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-m.exited:
		default:
			m.cmd.Process.Kill()
			<-m.exited
		}
		if t.Failed() {
			t.Logf("master stderr:\n%s", m.stderr.String())
		}
	})
	return m
}

// waitControl waits until the master answers on its control socket.
func (m *runningMaster) waitControl() {
	m.t.Helper()
	m.waitFor(20*time.Second, "the control socket to answer", func() bool {
		_, err := m.tryStatus()
		return err == nil
	})
}

func (m *runningMaster) tryStatus() (*control.Status, error) {
	select {
	case <-m.exited:
		return nil, fmt.Errorf("master exited: %v", m.waitErr)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := control.Do(ctx, m.ctl, control.Request{Cmd: control.CmdStatus}, nil)
	if err != nil {
		return nil, err
	}
	return resp.Status, nil
}

func (m *runningMaster) status() *control.Status {
	m.t.Helper()
	st, err := m.tryStatus()
	if err != nil {
		m.t.Fatalf("status: %v", err)
	}
	return st
}

// waitFor polls cond until it holds or d passes.
func (m *runningMaster) waitFor(d time.Duration, what string, cond func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		select {
		case <-m.exited:
			m.t.Fatalf("waiting for %s: the master exited: %v\n%s", what, m.waitErr, m.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// activeSet returns slot -> pid of the active workers, and whether every
// slot has one and nothing else is running.
func activeSet(st *control.Status) (map[int]int, bool) {
	active := map[int]int{}
	for _, w := range st.Workers {
		if w.State == "active" {
			active[w.Slot] = w.PID
		}
	}
	return active, len(active) == st.Slots && len(st.Workers) == st.Slots && st.Reloading == 0
}

func (m *runningMaster) waitAllActive(d time.Duration) *control.Status {
	m.t.Helper()
	var st *control.Status
	m.waitFor(d, "every slot to have one active worker", func() bool {
		var err error
		if st, err = m.tryStatus(); err != nil {
			return false
		}
		_, ok := activeSet(st)
		return ok
	})
	return st
}

// waitExit waits for the master to exit and returns its exit status.
func (m *runningMaster) waitExit(d time.Duration) int {
	m.t.Helper()
	select {
	case <-m.exited:
	case <-time.After(d):
		m.t.Fatalf("the master did not exit within %v", d)
	}
	var ee *exec.ExitError
	if errors.As(m.waitErr, &ee) {
		return ee.ExitCode()
	}
	if m.waitErr != nil {
		m.t.Fatal(m.waitErr)
	}
	return 0
}

func (m *runningMaster) signal(sig syscall.Signal) {
	m.t.Helper()
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Fatal(err)
	}
}

// httpAddr returns the first listening address of the master.
func (m *runningMaster) httpAddr() string {
	m.t.Helper()
	st := m.status()
	if len(st.Addrs) == 0 {
		m.t.Fatal("the master has no listening address")
	}
	_, addr, _ := strings.Cut(st.Addrs[0], ":")
	return addr
}

// cli runs the recluster binary and returns its output and exit status.
func cli(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, reclusterBin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("recluster %v did not finish in time", args)
	}
	return o.String(), e.String(), code
}

var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get fetches a path from addr and returns the body.
func get(t *testing.T, addr, path string) string {
	t.Helper()
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v %s", path, resp.StatusCode, err, b)
	}
	return string(b)
}

// writeScript writes an executable shell script atomically (a rename, so
// that a worker starting at that moment sees the old or the new one).
func writeScript(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// workerScript returns a script that runs sdworker after the shell
// commands in prelude (such as exports).
func workerScript(t *testing.T, prelude string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "worker.sh")
	writeScript(t, path, sdworkerScript(prelude))
	return path
}

func sdworkerScript(prelude string) string {
	return prelude + "\nexec " + sdworkerBin + ` "$@"`
}

// socketActivatePath finds systemd-socket-activate, the real peer that
// passes sockets the systemd way. Under CI (CI=true) a missing one fails,
// since .ci/run installs the systemd package; elsewhere the test skips.
func socketActivatePath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-socket-activate")
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("systemd-socket-activate is not installed; .ci/run installs the systemd package")
	}
	t.Skip("systemd-socket-activate is not installed (Debian: apt-get install systemd); skipping")
	return ""
}
