package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// connCounter counts the connections an httptest server accepts.
type connCounter struct{ n atomic.Int64 }

func (c *connCounter) hook(_ net.Conn, s http.ConnState) {
	if s == http.StateNew {
		c.n.Add(1)
	}
}

// newServer starts an httptest server on 127.0.0.1 that counts its
// connections, and returns it with its address.
func newServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *connCounter) {
	t.Helper()
	cc := &connCounter{}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = cc.hook
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, cc
}

func addrOf(srv *httptest.Server) string { return srv.Listener.Addr().String() }

// rawServer accepts connections on 127.0.0.1 and hands each to handle in
// its own goroutine. It is closed (and its handlers awaited) at cleanup.
func rawServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// readRequest reads one request (and its body) from br.
func readRequest(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return req, err
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.StopReason == StopCanceled {
		t.Fatalf("run hit the test's safety timeout:\n%s", res)
	}
	t.Logf("\n%s", res)
	return res
}

func workerHandler(id string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderWorkerID, id)
		w.Header().Set(HeaderWorkerPID, "4242")
		io.WriteString(w, "hello")
	}
}

func TestSuccesses(t *testing.T) {
	for _, mode := range []Mode{ModeNew, ModeKeepAlive} {
		t.Run(string(mode), func(t *testing.T) {
			srv, _ := newServer(t, workerHandler("w0"))
			res := run(t, Config{Addr: addrOf(srv), Mode: mode, Clients: 4, Requests: 50})
			if res.Successes != 50 || res.Requests != 50 || res.Failures.Total() != 0 {
				t.Fatalf("successes=%d requests=%d failures=%+v, want 50/50/none", res.Successes, res.Requests, res.Failures)
			}
			if res.StopReason != StopRequests {
				t.Errorf("stop reason %q, want %q", res.StopReason, StopRequests)
			}
			if res.Latency.Count != 50 || res.Latency.Max <= 0 || res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max {
				t.Errorf("bad latency summary %+v", res.Latency)
			}
			if res.StatusCodes[200] != 50 || res.BodyBytes != 50*5 {
				t.Errorf("status codes %v, body bytes %d", res.StatusCodes, res.BodyBytes)
			}
			if len(res.Workers) != 1 || res.Workers[0].ID != "w0" || res.Workers[0].Responses != 50 ||
				len(res.Workers[0].PIDs) != 1 || res.Workers[0].PIDs[0] != "4242" || res.Balance != 1 {
				t.Errorf("workers %+v balance %v", res.Workers, res.Balance)
			}
			if mode == ModeNew && res.Connections != 50 {
				t.Errorf("new mode opened %d connections, want 50", res.Connections)
			}
		})
	}
}

func TestPostBody(t *testing.T) {
	var bad atomic.Int64
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || string(b) != `{"x":1}` || r.Header.Get("X-Test") != "yes" {
			bad.Add(1)
		}
		io.Copy(w, strings.NewReader(string(b)))
	})
	res := run(t, Config{
		Addr: addrOf(srv), Method: "POST", Body: []byte(`{"x":1}`),
		Header:  http.Header{"X-Test": {"yes"}, "Content-Type": {"application/json"}},
		Clients: 2, Requests: 20,
	})
	if res.Successes != 20 || bad.Load() != 0 {
		t.Fatalf("successes=%d, server saw %d bad requests", res.Successes, bad.Load())
	}
}

func TestStatusFailures(t *testing.T) {
	var n atomic.Int64
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderWorkerID, "w1")
		if n.Add(1)%2 == 0 {
			http.Error(w, "nope", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	res := run(t, Config{Addr: addrOf(srv), Clients: 1, Requests: 10})
	if res.Successes != 5 || res.Failures.Status != 5 || res.Failures.Total() != 5 {
		t.Fatalf("successes=%d failures=%+v, want 5 and 5 status", res.Successes, res.Failures)
	}
	if res.StatusCodes[503] != 5 || res.Latency.Count != 5 {
		t.Errorf("status codes %v, latency count %d", res.StatusCodes, res.Latency.Count)
	}
	if ex := res.Examples[KindStatus]; len(ex) != DefaultMaxExamples || !strings.Contains(ex[0].Error, "503") {
		t.Errorf("status examples %+v", ex)
	}
	// A non-2xx response is complete: the kept-alive connection is reused.
	if res.Connections != 1 {
		t.Errorf("opened %d connections, want 1", res.Connections)
	}
}

func TestMidResponseClose(t *testing.T) {
	cases := map[string]struct {
		reply string
		rst   bool // abort the connection (RST) instead of closing it
	}{
		"short body":      {reply: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part"},
		"partial headers": {reply: "HTTP/1.1 200 OK\r\nContent-Le"},
		"no response":     {reply: ""},
		"short chunked":   {reply: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"},
		"reset mid body":  {reply: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part", rst: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			addr := rawServer(t, func(c net.Conn) {
				if _, err := readRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, tc.reply)
				if tc.rst {
					c.(*net.TCPConn).SetLinger(0)
				}
			})
			for _, mode := range []Mode{ModeNew, ModeKeepAlive} {
				res := run(t, Config{Addr: addr, Mode: mode, Clients: 2, Requests: 10})
				f := res.Failures
				if res.Successes != 0 || f.EOF+f.Reset != 10 || f.Total() != 10 {
					t.Fatalf("%s: successes=%d failures=%+v, want 10 eof/reset", mode, res.Successes, f)
				}
				if len(res.Examples[KindEOF])+len(res.Examples[KindReset]) == 0 {
					t.Errorf("%s: no examples kept", mode)
				}
			}
		})
	}
}

func TestRefused(t *testing.T) {
	addr := refusedAddr(t)
	for _, mode := range []Mode{ModeNew, ModeKeepAlive} {
		res := run(t, Config{Addr: addr, Mode: mode, Clients: 2, Requests: 6})
		if res.Failures.Refused != 6 || res.Failures.Total() != 6 || res.Successes != 0 || res.Connections != 0 {
			t.Fatalf("%s: failures=%+v successes=%d conns=%d, want 6 refused", mode, res.Failures, res.Successes, res.Connections)
		}
		ex := res.Examples[KindRefused]
		if len(ex) != DefaultMaxExamples || !strings.Contains(ex[0].Error, "refused") {
			t.Errorf("%s: refused examples %+v", mode, ex)
		}
	}
}

func TestTimeout(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		readRequest(bufio.NewReader(c))
		io.Copy(io.Discard, c) // never answer; returns when the client gives up
	})
	res := run(t, Config{Addr: addr, Clients: 2, Requests: 4, Timeout: 50 * time.Millisecond})
	if res.Failures.Timeout != 4 || res.Failures.Total() != 4 {
		t.Fatalf("failures=%+v, want 4 timeouts", res.Failures)
	}
}

func TestKeepAliveReusesConnections(t *testing.T) {
	// Hold every response until all three clients have connected, so that
	// each client takes part however the goroutines are scheduled.
	const clients = 3
	allConnected := make(chan struct{})
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-allConnected:
		case <-r.Context().Done():
		}
		io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew && conns.Add(1) == clients {
			close(allConnected)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	res := run(t, Config{Addr: addrOf(srv), Mode: ModeKeepAlive, Clients: clients, Requests: 90})
	if res.Successes != 90 || res.Failures.Total() != 0 {
		t.Fatalf("successes=%d failures=%+v", res.Successes, res.Failures)
	}
	if got := conns.Load(); got != clients {
		t.Errorf("server saw %d connections, want %d (one per client)", got, clients)
	}
	if res.Connections != clients || res.Reconnects != 0 {
		t.Errorf("connections=%d reconnects=%d, want %d and 0", res.Connections, res.Reconnects, clients)
	}
}

func TestKeepAliveReconnectsAfterConnectionClose(t *testing.T) {
	var n atomic.Int64
	srv, cc := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%4 == 0 {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "ok")
	})
	res := run(t, Config{Addr: addrOf(srv), Mode: ModeKeepAlive, Clients: 1, Requests: 40})
	if res.Successes != 40 || res.Failures.Total() != 0 {
		t.Fatalf("successes=%d failures=%+v examples=%v", res.Successes, res.Failures, res.Examples)
	}
	// Requests 4, 8, ..., 36 close the connection; 40 does too but
	// nothing follows it.
	if got := cc.n.Load(); got != 10 {
		t.Errorf("server saw %d connections, want 10", got)
	}
	if res.Connections != 10 || res.Reconnects != 10 {
		t.Errorf("connections=%d reconnects=%d, want 10 and 10", res.Connections, res.Reconnects)
	}
}

// A response whose body ends with the connection (no Content-Length, no
// chunking) and an HTTP/1.0 response are complete when the server closes
// the connection: the next request goes on a new connection, no failure.
func TestKeepAliveReconnectsAfterCloseDelimitedResponse(t *testing.T) {
	for name, reply := range map[string]string{
		"eof body": "HTTP/1.1 200 OK\r\nX-Worker-Id: raw\r\n\r\nbody until close",
		"http/1.0": "HTTP/1.0 200 OK\r\nX-Worker-Id: raw\r\nContent-Length: 2\r\n\r\nok",
	} {
		t.Run(name, func(t *testing.T) {
			var conns atomic.Int64
			addr := rawServer(t, func(c net.Conn) {
				conns.Add(1)
				if _, err := readRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, reply)
			})
			res := run(t, Config{Addr: addr, Mode: ModeKeepAlive, Clients: 2, Requests: 12})
			if res.Successes != 12 || res.Failures.Total() != 0 {
				t.Fatalf("successes=%d failures=%+v examples=%v", res.Successes, res.Failures, res.Examples)
			}
			if conns.Load() != 12 || res.Reconnects != 12 {
				t.Errorf("server saw %d connections, reconnects=%d, want 12 and 12", conns.Load(), res.Reconnects)
			}
		})
	}
}

// A kept-alive connection that the server closes while the client sends its
// next request is a failure, never silently replayed: the server answers
// each connection's first request and closes the connection as soon as the
// second request arrives.
func TestKeepAliveCloseOnNextRequestIsFailure(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		readRequest(br) // the second request: close without answering
	})
	res := run(t, Config{Addr: addr, Mode: ModeKeepAlive, Clients: 1, Requests: 6})
	// Odd requests open a connection and succeed, even ones are sent on
	// the reused connection and fail; no request is retried.
	if res.Successes != 3 || res.Failures.EOF+res.Failures.Reset != 3 || res.Requests != 6 || res.Connections != 3 {
		t.Fatalf("successes=%d failures=%+v connections=%d", res.Successes, res.Failures, res.Connections)
	}
	for _, ex := range append(res.Examples[KindEOF], res.Examples[KindReset]...) {
		if !ex.Reused {
			t.Errorf("failure example not marked as on a reused connection: %+v", ex)
		}
	}
}

func TestConnAliveDetectsPeerClose(t *testing.T) {
	accepted := make(chan net.Conn, 1)
	addr := rawServer(t, func(c net.Conn) {
		accepted <- c
		io.Copy(io.Discard, c)
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srvConn := <-accepted
	if !connAlive(c) {
		t.Fatal("open idle connection reported dead")
	}
	srvConn.Close()
	// The FIN arrives asynchronously; poll (bounded) until it is seen.
	deadline := time.Now().Add(10 * time.Second)
	for connAlive(c) {
		if time.Now().After(deadline) {
			t.Fatal("peer close never detected")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWorkersAndBalance(t *testing.T) {
	var n atomic.Int64
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		id := "a"
		if i%4 == 0 {
			id = "b"
		}
		w.Header().Set(HeaderWorkerID, id)
		w.Header().Set(HeaderWorkerPID, strconv.Itoa(100+int(i%2)))
	})
	res := run(t, Config{Addr: addrOf(srv), Clients: 1, Requests: 40})
	if len(res.Workers) != 2 || res.Workers[0].ID != "a" || res.Workers[0].Responses != 30 ||
		res.Workers[1].ID != "b" || res.Workers[1].Responses != 10 || res.Balance != 3 {
		t.Fatalf("workers %+v balance %v", res.Workers, res.Balance)
	}
	if got := strings.Join(res.Workers[0].PIDs, ","); got != "100,101" {
		t.Errorf("worker a pids %q", got)
	}
	if got := strings.Join(res.Workers[1].PIDs, ","); got != "100" {
		t.Errorf("worker b pids %q", got)
	}
}

func TestReloadHook(t *testing.T) {
	// The first reload waits for a request to have been served, so that
	// the reloads overlap the load however slowly the clients start.
	served := make(chan struct{})
	var once sync.Once
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(served) })
		io.WriteString(w, "ok")
	})
	var calls atomic.Int64
	res := run(t, Config{
		Addr: addrOf(srv), Clients: 2,
		Reload: func(ctx context.Context) error {
			select {
			case <-served:
			case <-ctx.Done():
				return ctx.Err()
			}
			if calls.Add(1) == 2 {
				return errors.New("boom")
			}
			return nil
		},
		ReloadEvery: 5 * time.Millisecond,
		Reloads:     3,
		Tail:        5 * time.Millisecond,
	})
	if calls.Load() != 3 || len(res.Reloads) != 3 {
		t.Fatalf("reload called %d times, %d recorded; want 3", calls.Load(), len(res.Reloads))
	}
	if res.StopReason != StopReloads {
		t.Errorf("stop reason %q, want %q", res.StopReason, StopReloads)
	}
	for i, rr := range res.Reloads {
		if rr.Index != i+1 || (rr.Error != "") != (i == 1) || rr.At < 5*time.Millisecond {
			t.Errorf("reload %d: %+v", i, rr)
		}
	}
	if res.ReloadErrors() != 1 || res.Failures.Total() != 0 || res.Successes == 0 {
		t.Errorf("reload errors=%d failures=%+v successes=%d", res.ReloadErrors(), res.Failures, res.Successes)
	}
}

// The request bound ends the run even if reloads remain; the reload in
// progress is told to stop through its context.
// The request bound ends the run even if reloads remain; the reload in
// progress is told to stop through its context. The server holds every
// response until the reload has started, so the run cannot end before.
func TestReloadStopsWithRun(t *testing.T) {
	started := make(chan struct{})
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-started:
		case <-r.Context().Done():
		}
	})
	res := run(t, Config{
		Addr: addrOf(srv), Clients: 2, Requests: 6,
		Reload: func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		},
		ReloadEvery: time.Millisecond,
		Reloads:     5,
	})
	if res.StopReason != StopRequests || res.Successes != 6 || len(res.Reloads) != 1 ||
		!strings.Contains(res.Reloads[0].Error, "canceled") {
		t.Fatalf("stop=%q successes=%d reloads=%+v", res.StopReason, res.Successes, res.Reloads)
	}
}

func TestCancelAbortsInFlight(t *testing.T) {
	inFlight := make(chan struct{}, 16)
	addr := rawServer(t, func(c net.Conn) {
		readRequest(bufio.NewReader(c))
		inFlight <- struct{}{}
		io.Copy(io.Discard, c) // hang until the client aborts
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-inFlight
		<-inFlight
		cancel()
	}()
	res, err := Run(ctx, Config{Addr: addr, Clients: 2, Duration: time.Hour, Timeout: time.Hour})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if res.StopReason != StopCanceled || res.Aborted != 2 || res.Requests != 0 {
		t.Fatalf("stop=%q aborted=%d requests=%d failures=%+v", res.StopReason, res.Aborted, res.Requests, res.Failures)
	}
}

func TestConfigErrors(t *testing.T) {
	reload := func(context.Context) error { return nil }
	for name, cfg := range map[string]Config{
		"no addr":        {Requests: 1},
		"no bound":       {Addr: "127.0.0.1:1"},
		"reload no tick": {Addr: "127.0.0.1:1", Reload: reload, Reloads: 1},
		"reloads no fn":  {Addr: "127.0.0.1:1", ReloadEvery: time.Second, Reloads: 1},
		"bad mode":       {Addr: "127.0.0.1:1", Requests: 1, Mode: "pipelined"},
		"bad method":     {Addr: "127.0.0.1:1", Requests: 1, Method: "GE T"},
		"bad header":     {Addr: "127.0.0.1:1", Requests: 1, Header: http.Header{"X": {"a\r\nb"}}},
		"managed header": {Addr: "127.0.0.1:1", Requests: 1, Header: http.Header{"Connection": {"close"}}},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := Run(context.Background(), Config{Addr: "127.0.0.1:1"}); !errors.Is(err, ErrNoBound) {
		t.Errorf("no bound: got %v, want ErrNoBound", err)
	}
}

func TestRequestBytes(t *testing.T) {
	cfg, err := Config{Addr: "127.0.0.1:8080", Mode: ModeNew, Body: []byte("hi"), Requests: 1}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(string(buildRequest(cfg)))))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	if req.Method != "POST" || req.Host != "127.0.0.1:8080" || !req.Close || string(body) != "hi" || req.ContentLength != 2 {
		t.Fatalf("parsed %s %s host=%s close=%v body=%q", req.Method, req.RequestURI, req.Host, req.Close, body)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Kind
	}{
		{io.EOF, KindEOF},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), KindEOF},
		{&net.OpError{Op: "dial", Err: errors.New("x")}, KindOther},
		{context.DeadlineExceeded, KindTimeout},
		{errors.New("malformed HTTP response"), KindOther},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, KindRefused},
		{&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, KindReset},
		{&net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)}, KindReset},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, KindTimeout},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestResultJSONAndMarkdown(t *testing.T) {
	srv, _ := newServer(t, workerHandler("w0"))
	res := run(t, Config{Addr: addrOf(srv), Clients: 1, Requests: 3})
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Successes != 3 || back.Latency.P99 != res.Latency.P99 || back.Workers[0].ID != "w0" {
		t.Errorf("JSON round trip lost data: %s", b)
	}
	md := res.String()
	for _, want := range []string{"| successes | 3 |", "p99.9", "| w0 | 3 |", "| refused | 0 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
}
