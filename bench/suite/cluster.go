//go:build linux

package main

// Shared helpers: start a `recluster run` master as a subprocess, wait for
// its workers, reload it, and read its cost from /proc and --metrics.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/control"
)

// MasterConfig describes a `recluster run` master.
type MasterConfig struct {
	// Workers is -w; default 2.
	Workers int
	// Timeout is --timeout, the drain budget of an old worker; default 1s.
	Timeout time.Duration
	// ReusePort adds --reuseport.
	ReusePort bool
	// Metrics adds --metrics on a free 127.0.0.1 port (Master.MetricsAddr).
	Metrics bool
	// Flags are more flags for `recluster run`.
	Flags []string
	// Program and Args are the worker program (default env.Hello).
	Program string
	Args    []string
	// Env holds extra KEY=VALUE pairs for the master (and so the workers).
	Env []string
	// StartTimeout bounds the wait for the first generation; default 30s.
	StartTimeout time.Duration
	// Stdout, when set, is the master's stdout instead of its log file.
	Stdout *os.File
}

// Master is a running `recluster run` subprocess.
type Master struct {
	env *Env
	cmd *exec.Cmd
	// PID is the master's pid.
	PID int
	// Addr is the listening address, 127.0.0.1:PORT.
	Addr string
	// Control is the control socket path.
	Control string
	// MetricsAddr is the --metrics address, empty without Metrics.
	MetricsAddr string
	// LogPath is the file that holds the master's and workers' output.
	LogPath string
	// Workers is the number of slots.
	Workers int

	done   chan struct{}
	waited error
}

var masterSeq atomic.Int64

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// StartMaster starts `recluster run --listen 127.0.0.1:PORT -w N ...` with a
// control socket of its own in env.Dir, and waits until N workers are
// active. The caller must Stop it.
func StartMaster(ctx context.Context, env *Env, cfg MasterConfig) (*Master, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Program == "" {
		cfg.Program = env.Hello
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	seq := masterSeq.Add(1)
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	m := &Master{
		env:     env,
		Addr:    fmt.Sprintf("127.0.0.1:%d", port),
		Control: filepath.Join(env.Dir, fmt.Sprintf("control-%d.sock", seq)),
		LogPath: filepath.Join(env.Dir, fmt.Sprintf("master-%d.log", seq)),
		Workers: cfg.Workers,
		done:    make(chan struct{}),
	}
	args := []string{"run", "--listen", m.Addr, "-w", strconv.Itoa(cfg.Workers),
		"--timeout", cfg.Timeout.String(), "--control", m.Control}
	if cfg.ReusePort {
		args = append(args, "--reuseport")
	}
	if cfg.Metrics {
		mport, err := FreePort()
		if err != nil {
			return nil, err
		}
		m.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", mport)
		args = append(args, "--metrics", m.MetricsAddr)
	}
	args = append(args, cfg.Flags...)
	args = append(args, "--", cfg.Program)
	args = append(args, cfg.Args...)

	logf, err := os.Create(m.LogPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	m.cmd = exec.Command(env.Recluster, args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if cfg.Stdout != nil {
		m.cmd.Stdout = cfg.Stdout
	}
	m.cmd.Env = append(os.Environ(), cfg.Env...)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	m.PID = m.cmd.Process.Pid
	go func() { m.waited = m.cmd.Wait(); close(m.done) }()
	env.Log("master %d: %s", m.PID, strings.Join(args, " "))

	wctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	if _, err := m.WaitSettled(wctx); err != nil {
		m.Stop(5 * time.Second)
		return nil, fmt.Errorf("master did not start %d workers: %w (log %s: %s)", cfg.Workers, err, m.LogPath, tail(m.LogPath, 600))
	}
	return m, nil
}

// Exited reports whether the master process has ended.
func (m *Master) Exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// Status asks the master for its status over the control socket (what
// `recluster status --json` prints).
func (m *Master) Status(ctx context.Context) (*control.Status, error) {
	resp, err := control.Do(ctx, m.Control, control.Request{Cmd: control.CmdStatus}, nil)
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, errors.New("status: empty answer")
	}
	return resp.Status, nil
}

// Settled reports whether st shows exactly the master's N workers, all
// active, and no other worker (none starting, none draining).
func (m *Master) Settled(st *control.Status) bool {
	if len(st.Workers) != m.Workers {
		return false
	}
	for _, w := range st.Workers {
		if w.State != "active" {
			return false
		}
	}
	return true
}

// WaitSettled polls the status every 2ms until Settled, and returns that
// status.
func (m *Master) WaitSettled(ctx context.Context) (*control.Status, error) {
	var last error
	for {
		if m.Exited() {
			return nil, fmt.Errorf("master exited: %v", m.waited)
		}
		st, err := m.Status(ctx)
		if err == nil && m.Settled(st) {
			return st, nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("%d workers, states %s", len(st.Workers), states(st))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func states(st *control.Status) string {
	var s []string
	for _, w := range st.Workers {
		s = append(s, fmt.Sprintf("%d:%s", w.Slot, w.State))
	}
	return strings.Join(s, ",")
}

// Reload runs `recluster reload --control PATH`, which returns once the new
// generation is active (not once the old one has gone).
func (m *Master) Reload(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, m.env.Recluster, "reload", "--control", m.Control).CombinedOutput()
	if err != nil {
		return fmt.Errorf("recluster reload: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ReloadDirect asks for a reload over the control socket and waits for the
// commit, without starting a CLI process.
func (m *Master) ReloadDirect(ctx context.Context) error {
	resp, err := control.Do(ctx, m.Control, control.Request{Cmd: control.CmdReload, Wait: true}, nil)
	if err != nil {
		return err
	}
	if !resp.OK {
		return fmt.Errorf("reload: %s", resp.Error)
	}
	return nil
}

// Signal sends sig to the master.
func (m *Master) Signal(sig syscall.Signal) error { return syscall.Kill(m.PID, sig) }

// Stop sends SIGTERM and waits up to timeout for the master to exit, then
// SIGKILLs it (its workers die with it by their parent-death signal).
func (m *Master) Stop(timeout time.Duration) error {
	if m.Exited() {
		return nil
	}
	_ = m.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return nil
	case <-time.After(timeout):
		_ = m.Signal(syscall.SIGKILL)
		<-m.done
		return fmt.Errorf("master %d did not stop in %v; killed", m.PID, timeout)
	}
}

// ProcSample is what /proc says about a process at one moment.
type ProcSample struct {
	At time.Time
	// UTicks and STicks are user and system CPU time in clock ticks.
	UTicks, STicks int64
	// RSS is the resident set size in bytes.
	RSS int64
	// Threads is the number of OS threads.
	Threads int
	// FDs is the number of open file descriptors.
	FDs int
}

// ClockTick is USER_HZ, the unit of the CPU times in /proc/PID/stat (100 on
// every Linux architecture Go supports).
const ClockTick = 100

// CPU returns the process's user+system CPU time.
func (s ProcSample) CPU() time.Duration {
	return time.Duration(s.UTicks+s.STicks) * time.Second / ClockTick
}

// ReadProc samples /proc/PID/stat, /proc/PID/status and /proc/PID/fd.
func ReadProc(pid int) (ProcSample, error) {
	s := ProcSample{At: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name may hold spaces; the fields after it are fixed.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return s, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime 15, threads 20,
	// rss 24 (pages).
	if len(f) < 22 {
		return s, errors.New("short /proc stat")
	}
	s.UTicks, _ = strconv.ParseInt(f[11], 10, 64)
	s.STicks, _ = strconv.ParseInt(f[12], 10, 64)
	s.Threads, _ = strconv.Atoi(f[17])
	pages, _ := strconv.ParseInt(f[21], 10, 64)
	s.RSS = pages * int64(os.Getpagesize())
	s.FDs, err = CountFDs(pid)
	return s, err
}

// CountFDs returns the number of open file descriptors of pid.
func CountFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// ScrapeMetrics fetches http://addr/metrics and returns each sample by its
// name with labels, as written ("go_goroutines", `recluster_phase{phase="running"}`).
func ScrapeMetrics(ctx context.Context, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}
