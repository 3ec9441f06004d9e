// Package polyglot_test runs the Python and Node examples as real worker
// processes under the recluster master (the library, and the CLI when it
// builds), drives a client load that never retries, reloads several times
// during it, and requires that not one request fails.
package polyglot_test

import (
	"github.com/recluster-go/recluster/internal/testbin"

	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

const (
	reloads        = 4
	drainTimeout   = 3 * time.Second
	requestTimeout = 10 * time.Second
)

// ---------------------------------------------------------------- programs

type program struct {
	interpreter string // absolute path
	script      string // absolute path
}

// python finds the real interpreter behind python3 (pyenv and friends put
// a shell script first in PATH).
func python(t *testing.T) program {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		skipOutsideCI(t, "python3 is not installed")
	}
	out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	exe := strings.TrimSpace(string(out))
	if err != nil || !filepath.IsAbs(exe) {
		skipOutsideCI(t, fmt.Sprintf("python3 does not run here (%v)", err))
	}
	return program{exe, example(t, "python", "server.py")}
}

func node(t *testing.T) program {
	t.Helper()
	exe, err := exec.LookPath("node")
	if err != nil {
		skipOutsideCI(t, "node is not installed")
	}
	exe, err = filepath.Abs(exe)
	if err != nil {
		t.Fatal(err)
	}
	return program{exe, example(t, "node", "server.js")}
}

func example(t *testing.T, dir, file string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", dir, file))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// ------------------------------------------------------------------- tests

// The Python example with its socket passed the systemd way and READY=1
// over NOTIFY_SOCKET.
func TestPythonPassedSocketNotify(t *testing.T) {
	p := python(t)
	runUnderLibrary(t, p, recluster.Options{
		Sockets: []recluster.Socket{{Name: "http", Address: "127.0.0.1:0"}},
		Notify:  true,
	})
}

// The Python example asking the master for its socket over the channel
// (an fd in SCM_RIGHTS) and saying {"cmd":"ready"} there.
func TestPythonListenOverChannel(t *testing.T) {
	p := python(t)
	runUnderLibrary(t, p, recluster.Options{Args: []string{p.script, "--addr", "127.0.0.1:0"}})
}

// The Node example with its socket passed the systemd way, {"cmd":"ready"}
// and disconnect over the channel.
func TestNodePassedSocket(t *testing.T) {
	p := node(t)
	runUnderLibrary(t, p, recluster.Options{
		Sockets: []recluster.Socket{{Name: "http", Address: "127.0.0.1:0"}},
	})
}

func runUnderLibrary(t *testing.T, p program, opts recluster.Options) {
	out := &testbin.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("master and worker output:\n%s", out.String())
		}
	})
	events := &eventLog{}
	opts.Workers = 2
	opts.ReadyWhen = recluster.Ready
	opts.StopSignal = syscall.SIGTERM
	opts.Timeout = drainTimeout
	opts.ReadyTimeout = 20 * time.Second
	opts.Respawn = 100 * time.Millisecond
	opts.Stdout, opts.Stderr = out, out
	opts.Logger = slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.OnEvent = events.add
	if opts.Args == nil {
		opts.Args = []string{p.script}
	}
	c := recluster.New(p.interpreter, opts)
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	terminated := false
	defer func() {
		if !terminated {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c.Terminate(ctx)
		}
	}()

	waitFor(t, 20*time.Second, "2 active workers", func() bool { return len(c.ActiveWorkers()) == 2 })
	var addr string
	waitFor(t, 5*time.Second, "the master's socket", func() bool {
		if a := c.Addrs(); len(a) > 0 {
			addr = a[0].String()
		}
		return addr != ""
	})
	firstGen := pidsOf(c.ActiveWorkers())

	l := startLoad(addr, 6, 6)
	defer l.stop()
	l.waitOK(t, 200)
	for i := 0; i < reloads; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := c.Reload(ctx)
		cancel()
		if err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
		active := pidsOf(c.ActiveWorkers())
		// Progress under the new generation before the next reload.
		l.waitServedBy(t, active)
		l.waitOK(t, l.ok.Load()+100)
	}
	// Every old worker drains and exits by itself.
	waitFor(t, drainTimeout+10*time.Second, "the old generations to exit", func() bool { return len(c.Workers()) == 2 })
	l.waitOK(t, l.ok.Load()+100)
	l.stop()

	st := c.Status()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Terminate(ctx); err != nil {
		t.Errorf("terminate: %v", err)
	}
	terminated = true

	t.Logf("%d requests, %d failed, %d over keep-alive connections, %d connections; served by %d pids",
		l.ok.Load()+l.failed.Load(), l.failed.Load(), l.keepAliveOK.Load(), l.conns.Load(), len(l.pids()))
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d requests failed; first errors:\n%s", n, strings.Join(l.errors(), "\n"))
	}
	if want := 1 + reloads; st.Generation != want {
		t.Errorf("active generation %d after %d reloads, want %d", st.Generation, reloads, want)
	}
	for pid := range pidsOf(c.ActiveWorkers()) {
		if firstGen[pid] {
			t.Errorf("pid %d of the first generation is still active", pid)
		}
	}
	if n := len(l.pids()); n < 1+reloads {
		t.Errorf("requests were served by %d distinct pids, want at least %d (one per generation)", n, 1+reloads)
	}
	if ids := l.workerIDs(); len(ids) == 0 || !subset(ids, []string{"0", "1"}) {
		t.Errorf("X-Worker-Id values %v, want a subset of [0 1]", ids)
	}
	for _, e := range events.all() {
		switch {
		case e.Kind == recluster.EventKilled:
			t.Errorf("a worker was killed instead of draining within %v: %v", drainTimeout, e)
		case e.Kind == recluster.EventExited && e.ExitCode != 0:
			t.Errorf("a worker did not exit cleanly: %v", e)
		case e.Kind == recluster.EventReloadAborted:
			t.Errorf("a reload was aborted: %v", e)
		}
	}
}

// -------------------------------------------------------------------- load

// load is a closed-loop HTTP client that never retries: each request is
// sent once, and anything but a complete 200 response is a failure.
type load struct {
	addr        string
	ok, failed  atomic.Int64
	keepAliveOK atomic.Int64
	conns       atomic.Int64
	done        chan struct{}
	wg          sync.WaitGroup

	mu      sync.Mutex
	errs    []string
	servers map[string]int // pid -> responses
	ids     map[string]bool
	changed chan struct{} // closed and replaced when servers gains a pid
}

func startLoad(addr string, fresh, keepAlive int) *load {
	l := &load{addr: addr, done: make(chan struct{}), servers: map[string]int{}, ids: map[string]bool{}, changed: make(chan struct{})}
	for i := 0; i < fresh; i++ {
		l.wg.Add(1)
		go l.client(false)
	}
	for i := 0; i < keepAlive; i++ {
		l.wg.Add(1)
		go l.client(true)
	}
	return l
}

func (l *load) stop() {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	l.wg.Wait()
}

func (l *load) client(keepAlive bool) {
	defer l.wg.Done()
	var conn net.Conn
	var br *bufio.Reader
	sent := 0 // requests sent on conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		select {
		case <-l.done:
			return
		default:
		}
		if conn == nil {
			c, err := net.DialTimeout("tcp", l.addr, requestTimeout)
			if err != nil {
				l.fail("dial: %v", err)
				continue
			}
			l.conns.Add(1)
			conn, br, sent = c, bufio.NewReader(c), 0
		}
		reused := sent > 0
		sent++
		closeAfter, err := l.request(conn, br, keepAlive)
		if err != nil {
			l.fail("%s: %v", map[bool]string{true: "keep-alive", false: "new connection"}[keepAlive], err)
			closeAfter = true
		} else if reused {
			l.keepAliveOK.Add(1)
		}
		if closeAfter || !keepAlive {
			conn.Close()
			conn = nil
		}
	}
}

var (
	freshRequest     = []byte("GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
	keepAliveRequest = []byte("POST / HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
)

// request sends one request on conn and reads its response; it reports
// whether the server asked to close the connection.
func (l *load) request(conn net.Conn, br *bufio.Reader, keepAlive bool) (closeAfter bool, err error) {
	conn.SetDeadline(time.Now().Add(requestTimeout))
	req := freshRequest
	if keepAlive {
		req = keepAliveRequest
	}
	if _, err := conn.Write(req); err != nil {
		return true, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return true, fmt.Errorf("read response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return true, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, []byte("hello")) {
		return true, fmt.Errorf("status %d, body %q", resp.StatusCode, body)
	}
	pid, id := resp.Header.Get("X-Worker-Pid"), resp.Header.Get("X-Worker-Id")
	if pid == "" || id == "" {
		return true, fmt.Errorf("missing X-Worker-Pid or X-Worker-Id: %v", resp.Header)
	}
	l.ok.Add(1)
	l.mu.Lock()
	if l.servers[pid] == 0 {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	l.servers[pid]++
	l.ids[id] = true
	l.mu.Unlock()
	return resp.Close, nil
}

func (l *load) fail(format string, args ...any) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 20 {
		l.errs = append(l.errs, fmt.Sprintf(time.Now().Format("15:04:05.000 ")+format, args...))
	}
	l.mu.Unlock()
}

func (l *load) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

func (l *load) pids() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[string]int{}
	for k, v := range l.servers {
		m[k] = v
	}
	return m
}

func (l *load) workerIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id := range l.ids {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// waitOK waits until n requests have succeeded.
func (l *load) waitOK(t *testing.T, n int64) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d successful requests", n), func() bool { return l.ok.Load() >= n })
}

// waitServedBy waits until one of pids has answered a request.
func (l *load) waitServedBy(t *testing.T, pids map[int]bool) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		changed := l.changed
		for pid := range pids {
			if l.servers[fmt.Sprint(pid)] > 0 {
				l.mu.Unlock()
				return
			}
		}
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no request was served by the new generation %v within 30s", pids)
		}
	}
}

// ----------------------------------------------------------------- helpers

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // poll interval, not a synchronization
	}
}

func pidsOf(ws map[int]*recluster.Worker) map[int]bool {
	m := map[int]bool{}
	for _, w := range ws {
		m[w.PID()] = true
	}
	return m
}

func subset(got, allowed []string) bool {
	for _, g := range got {
		found := false
		for _, a := range allowed {
			found = found || g == a
		}
		if !found {
			return false
		}
	}
	return true
}

type eventLog struct {
	mu     sync.Mutex
	events []recluster.Event
}

func (e *eventLog) add(ev recluster.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, ev)
}

func (e *eventLog) all() []recluster.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]recluster.Event(nil), e.events...)
}
