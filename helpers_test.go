package recluster_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/testbin"
)

// The test programs, built once: the worker program of most tests and a
// master for the tests of a master's death.
var serverBin, masterBin string

func TestMain(m *testing.M) {
	testbin.Main(m, func(bins map[string]string) {
		serverBin, masterBin = bins["testdata/server"], bins["testdata/master"]
	}, "testdata/server", "testdata/master")
}

// recorder keeps every event of a cluster and lets a test wait for one.
type recorder struct {
	mu     sync.Mutex
	events []recluster.Event
	added  chan struct{}
}

func newRecorder() *recorder { return &recorder{added: make(chan struct{}, 1)} }

func (r *recorder) add(e recluster.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.added <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []recluster.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recluster.Event(nil), r.events...)
}

// waitN waits until n events match, and returns the last of them.
func (r *recorder) waitN(t *testing.T, n int, timeout time.Duration, match func(recluster.Event) bool) recluster.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		var got []recluster.Event
		for _, e := range r.all() {
			if match(e) {
				got = append(got, e)
			}
		}
		if len(got) >= n {
			return got[n-1]
		}
		select {
		case <-r.added:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %d matching events; have %d; all events:\n%s", timeout, n, len(got), r.dump())
		}
	}
}

func (r *recorder) dump() string {
	var b strings.Builder
	for _, e := range r.all() {
		fmt.Fprintf(&b, "  %s %s\n", e.Time.Format("15:04:05.000"), e)
	}
	return b.String()
}

func kind(k recluster.EventKind) func(recluster.Event) bool {
	return func(e recluster.Event) bool { return e.Kind == k }
}

type testCluster struct {
	*recluster.Cluster
	rec  *recorder
	url  string
	mode string // the path of the mode file the server reads at start
}

// setMode changes what the next workers started will do.
func (tc *testCluster) setMode(t *testing.T, mode string) {
	t.Helper()
	if err := os.WriteFile(tc.mode, []byte(mode), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startCluster runs the test server with opts and waits until every slot
// has an active worker.
func startCluster(t *testing.T, opts recluster.Options, args ...string) *testCluster {
	t.Helper()
	tc := newCluster(t, opts, args...)
	if err := tc.Run(); err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, tc.Status().Slots, 10*time.Second, kind(recluster.EventActive))
	tc.learnURL(t)
	return tc
}

func newCluster(t *testing.T, opts recluster.Options, args ...string) *testCluster {
	t.Helper()
	tc := &testCluster{rec: newRecorder(), mode: filepath.Join(t.TempDir(), "mode")}
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if opts.Respawn == 0 {
		opts.Respawn = 20 * time.Millisecond
	}
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Second
	}
	opts.OnEvent = tc.rec.add
	opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Args = append([]string{"-modefile", tc.mode}, args...)
	tc.Cluster = recluster.New(serverBin, opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tc.Terminate(ctx)
	})
	return tc
}

func (tc *testCluster) learnURL(t *testing.T) {
	t.Helper()
	tc.rec.waitN(t, 1, 10*time.Second, kind(recluster.EventListening))
	addrs := tc.Addrs()
	if len(addrs) == 0 {
		t.Fatal("the cluster holds no socket")
	}
	tc.url = "http://" + addrs[0].String()
}

// testWriter sends the cluster's log to the test's log, shown on failure.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// response is what the never-retrying client got.
type response struct {
	status int
	body   string
	header http.Header
	close  bool
}

// client sends requests without ever retrying: net/http's Transport
// replays a failed request on a reused connection, which would hide the
// very failures these tests look for.
type client struct {
	addr      string
	keepAlive bool
	conn      net.Conn
	br        *bufio.Reader
}

func newClient(rawURL string, keepAlive bool) *client {
	return &client{addr: strings.TrimPrefix(rawURL, "http://"), keepAlive: keepAlive}
}

func (c *client) get(path string) (response, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return response{}, err
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
	}
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	connHeader := "keep-alive"
	if !c.keepAlive {
		connHeader = "close"
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: test\r\nConnection: " + connHeader + "\r\n\r\n"
	if _, err := io.WriteString(c.conn, req); err != nil {
		c.close()
		return response{}, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return response{}, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.close()
		return response{}, err
	}
	r := response{status: resp.StatusCode, body: string(body), header: resp.Header, close: resp.Close}
	if resp.Close || !c.keepAlive {
		c.close()
	}
	return r, nil
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// get sends one request on a new connection and fails the test on error.
func get(t *testing.T, url, path string) response {
	t.Helper()
	r, err := newClient(url, false).get(path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if r.status != 200 {
		t.Fatalf("GET %s: status %d: %s", path, r.status, r.body)
	}
	return r
}

// load runs clients until stop is closed and reports failures.
type load struct {
	mu       sync.Mutex
	ok       int
	failures []string
	wg       sync.WaitGroup
	stop     chan struct{}
}

func startLoad(url string, clients int, keepAlive bool, path string) *load {
	l := &load{stop: make(chan struct{})}
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := newClient(url, keepAlive)
			defer c.close()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				r, err := c.get(path)
				l.mu.Lock()
				switch {
				case err != nil:
					l.failures = append(l.failures, err.Error())
				case r.status != 200:
					l.failures = append(l.failures, fmt.Sprintf("status %d", r.status))
				default:
					l.ok++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// progress waits until n more requests have succeeded, so that what the
// test does next happens under load that really flows.
func (l *load) progress(t *testing.T, n int) {
	t.Helper()
	l.mu.Lock()
	target := l.ok + n
	l.mu.Unlock()
	eventually(t, 20*time.Second, fmt.Sprintf("%d more successful requests", n), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.ok >= target
	})
}

func (l *load) finish() (ok int, failures []string) {
	close(l.stop)
	l.wg.Wait()
	return l.ok, l.failures
}

// gone reports whether no process has pid any more (a zombie counts as
// gone for this purpose only if it was reaped, so ask the kernel).
func gone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pids(ws map[int]*recluster.Worker) map[int]int {
	m := map[int]int{}
	for slot, w := range ws {
		m[slot] = w.PID()
	}
	return m
}
