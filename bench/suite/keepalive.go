//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario 2: keep-alive drain with clients that pause between requests
// and never retry, so their connections are idle when a drain starts.
func init() {
	register(Scenario{Name: "keepalive", Order: 20, Run: runKeepAlive})
}

// idleClientStats counts what happened to pausing keep-alive clients.
type idleClientStats struct {
	requests, ok, toldToGo, errors atomic.Int64
	badGateway                     atomic.Int64 // 502 and 504 answers (from a proxy)
	clients, keptConnection        atomic.Int64
	mu                             sync.Mutex
	example                        string
}

func (s *idleClientStats) fail(err error) {
	s.errors.Add(1)
	s.mu.Lock()
	if s.example == "" {
		s.example = err.Error()
	}
	s.mu.Unlock()
}

// idleClient keeps one connection, sends a request (a POST when post is
// set, which no client or proxy replays), reads the response, pauses for a
// random time up to think, and sends again on the same connection. It
// never checks the connection before sending and never retries: a
// connection the server closed under it is an error. Only a response with
// Connection: close makes it open a new connection. A client that used one
// connection from start to end counts in keptConnection.
func idleClient(ctx context.Context, addr string, post bool, think time.Duration, st *idleClientStats) {
	var conn net.Conn
	var br *bufio.Reader
	opened := 0
	defer func() {
		if conn != nil {
			conn.Close()
		}
		st.clients.Add(1)
		if opened == 1 {
			st.keptConnection.Add(1)
		}
	}()
	req := []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")
	if post {
		const body = `{"hello":"world"}`
		req = []byte(fmt.Sprintf("POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", addr, len(body), body))
	}
	for ctx.Err() == nil {
		if conn == nil {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				st.requests.Add(1)
				st.fail(err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			conn, br = c, bufio.NewReader(c)
			opened++
		}
		st.requests.Add(1)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := conn.Write(req)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(br, nil)
		}
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err == nil && resp.StatusCode != http.StatusOK {
			if resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout {
				st.badGateway.Add(1)
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
			resp.Close = true
		}
		if err != nil {
			st.fail(err)
			conn.Close()
			conn = nil
		} else {
			st.ok.Add(1)
			if resp.Close {
				st.toldToGo.Add(1)
				conn.Close()
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(rand.N(think) + time.Millisecond):
		}
	}
}

// idleRun drives clients against addr while reload runs reloads times,
// one every `every`, then lets them go on for tail.
func idleRun(ctx context.Context, addr string, reload func(context.Context) error, clients, reloads int, every, tail time.Duration, post bool, think time.Duration) (*idleClientStats, int) {
	st := &idleClientStats{}
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() { defer wg.Done(); idleClient(lctx, addr, post, max(think, time.Microsecond), st) }()
	}
	reloadErrs := 0
	for range reloads {
		time.Sleep(every)
		if err := reload(ctx); err != nil {
			reloadErrs++
		}
	}
	time.Sleep(tail)
	stop()
	wg.Wait()
	return st, reloadErrs
}

func runKeepAlive(ctx context.Context, env *Env) (Section, error) {
	const clients, workers = 64, 4
	timeout := 2 * time.Second // grace = 1s
	reloads := 20
	if env.Quick {
		reloads = 5
	}
	var md strings.Builder
	md.WriteString("### The drain policy\n\n" +
		"A worker that serves with `worker.Serve` (or `worker.ServeDrain`) drains in these steps when the master tells it to disconnect:\n\n" +
		"1. it closes its copy of the listening socket: new connections go to the other workers (the master's socket, and its accept queue, stay);\n" +
		"2. **connection handoff** (on by default; `recluster run --no-handoff`, `Options.DisableHandoff` or `DrainOptions.DisableHandoff` turn it off): " +
		"every plain HTTP/1.1 connection is handed, at its next idle point between two requests, through the master to a worker of the new generation, " +
		"whose listener yields it from `Accept`: the client keeps its connection and never sees the reload (docs/protocol.md, \"Connection handoff\", has the race analysis). " +
		"TLS, HTTP/2 and hijacked connections, and connections still busy at the drain's bound, go on as below, counted by reason in `recluster_handoff_fallbacks_total`;\n" +
		"3. for a **grace period** every other response carries `Connection: close` (also a response whose handler started before the drain), " +
		"so each keep-alive client leaves after its next request instead of finding its connection closed under it; " +
		"the grace ends early once every connection has closed;\n" +
		"4. then `http.Server.Shutdown` closes the connections still idle and waits for requests in flight, up to the drain timeout, " +
		"after which the remaining connections are closed.\n\n" +
		"Settings (`worker.DrainOptions`): **Grace** defaults to half of the master's `--timeout` (`RECLUSTER_TIMEOUT`, read with `worker.DrainTimeout()`), " +
		"at least 100 ms and at most 5 s (1 s when the program runs alone); **Timeout** defaults to `--timeout` less 10%, so the worker ends before the master kills it " +
		"(10 s alone). Without handoff, a client that sends at least once per grace period always gets its `Connection: close`; one that stays idle longer has its idle connection closed, " +
		"which an HTTP client notices before reusing it (or, if it sends at that very moment, sees as a failed request). With handoff the pause does not matter.\n\n")
	fmt.Fprintf(&md, "### The measurement\n\n"+
		"A `recluster run -w %d --timeout %v` master serving examples/hello (so the grace is %v); %d keep-alive clients that pause a random time "+
		"between requests, never check their connection before sending and never retry (a stricter client than loadgen's, and than Go's http.Transport, "+
		"which replays such failures); %d reloads (`recluster reload`), one every 700 ms, then 1 s more.\n\n",
		workers, timeout, timeout/2, clients, reloads)
	md.WriteString("Target: **0 errors** (GET, default settings).\n\n")
	t := newTable("pause between requests", "requests", "told to go (Connection: close)", "errors", "verdict")
	allOK := true
	var notes strings.Builder
	note := func(label string, st *idleClientStats, reloadErrs int) {
		if st.example != "" {
			fmt.Fprintf(&notes, "- %s: first error `%s`\n", label, oneLine(st.example))
		}
		if reloadErrs > 0 {
			fmt.Fprintf(&notes, "- %s: %d reloads failed\n", label, reloadErrs)
		}
	}
	for _, think := range []time.Duration{0, 100 * time.Millisecond, 400 * time.Millisecond} {
		m, err := StartMaster(ctx, env, MasterConfig{Workers: workers, Timeout: timeout})
		if err != nil {
			return Section{}, err
		}
		st, reloadErrs := idleRun(ctx, m.Addr, m.Reload, clients, reloads, 700*time.Millisecond, time.Second, false, think)
		m.Stop(10 * time.Second)
		label := fmt.Sprintf("0 to %v", think)
		if think == 0 {
			label = "none"
		}
		ok := st.errors.Load() == 0 && reloadErrs == 0
		allOK = allOK && ok
		t.row(label, st.requests.Load(), st.toldToGo.Load(), st.errors.Load(), verdict(ok))
		note("pauses "+label, st, reloadErrs)
	}
	md.WriteString(t.String())
	if notes.Len() > 0 {
		md.WriteString(notes.String() + "\n")
		notes.Reset()
	}

	idle, idleOK, err := idleRows(ctx, env, clients, workers, reloads, note)
	if err != nil {
		return Section{}, err
	}
	allOK = allOK && idleOK
	md.WriteString(idle)
	if notes.Len() > 0 {
		md.WriteString(notes.String() + "\n")
		notes.Reset()
	}
	tp, tpOK, err := handoffThroughput(ctx, env, workers)
	if err != nil {
		return Section{}, err
	}
	allOK = allOK && tpOK
	md.WriteString(tp)
	md.WriteString("Scenario 1's keep-alive rows are the same policy under a closed loop of 64 clients with no pauses.\n\n")
	fmt.Fprintf(&md, "Result: %s\n", verdict(allOK))
	return Section{Title: "2. Keep-alive drain", Markdown: md.String()}, nil
}
