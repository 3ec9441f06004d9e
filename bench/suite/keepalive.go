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

// idleClient keeps one connection, sends a request, reads the response,
// pauses for a random time up to think, and sends again on the same
// connection. It never checks the connection before sending and never
// retries: a connection the server closed under it is an error. Only a
// response with Connection: close makes it open a new connection.
func idleClient(ctx context.Context, addr string, think time.Duration, st *idleClientStats) {
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	req := []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")
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
		}
		st.requests.Add(1)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err := conn.Write(req)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(br, nil)
		}
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
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

func runKeepAlive(ctx context.Context, env *Env) (Section, error) {
	const clients, workers = 64, 4
	timeout := 2 * time.Second // grace = 1s
	reloads := 30
	if env.Quick {
		reloads = 5
	}
	var md strings.Builder
	md.WriteString("### The drain policy\n\n" +
		"A worker that serves with `worker.Serve` (or `worker.ServeDrain`) drains in three steps when the master tells it to disconnect:\n\n" +
		"1. it closes its copy of the listening socket: new connections go to the other workers (the master's socket, and its accept queue, stay);\n" +
		"2. for a **grace period** every response carries `Connection: close` (also a response whose handler started before the drain), " +
		"so each keep-alive client leaves after its next request instead of finding its connection closed under it; " +
		"the grace ends early once every connection has closed;\n" +
		"3. then `http.Server.Shutdown` closes the connections still idle and waits for requests in flight, up to the drain timeout, " +
		"after which the remaining connections are closed.\n\n" +
		"Settings (`worker.DrainOptions`): **Grace** defaults to half of the master's `--timeout` (`RECLUSTER_TIMEOUT`, read with `worker.DrainTimeout()`), " +
		"at least 100 ms and at most 5 s (1 s when the program runs alone); **Timeout** defaults to `--timeout` less 10%, so the worker ends before the master kills it " +
		"(10 s alone). A client that sends at least once per grace period always gets its `Connection: close`; one that stays idle longer has its idle connection closed, " +
		"which an HTTP client notices before reusing it (or, if it sends at that very moment, sees as a failed request). " +
		"Choose `--timeout` so that half of it is longer than your clients' idle gaps (or set `DrainOptions.Grace`).\n\n")
	fmt.Fprintf(&md, "### The measurement\n\n"+
		"A `recluster run -w %d --timeout %v` master serving examples/hello (so the grace is %v); %d keep-alive clients that pause a random time "+
		"between requests, never check their connection before sending and never retry (a stricter client than loadgen's, and than Go's http.Transport, "+
		"which replays such failures); %d reloads (`recluster reload`), one every 700 ms, then 1 s more.\n\n",
		workers, timeout, timeout/2, clients, reloads)
	md.WriteString("Target: **0 errors** for clients whose pauses are shorter than the grace period. The last row, with pauses longer than the grace, shows the limit of the policy (no target).\n\n")
	t := newTable("pause between requests", "requests", "told to go (Connection: close)", "errors", "verdict")
	allOK := true
	var notes strings.Builder
	for _, think := range []time.Duration{0, 100 * time.Millisecond, 400 * time.Millisecond, 3 * time.Second} {
		m, err := StartMaster(ctx, env, MasterConfig{Workers: workers, Timeout: timeout})
		if err != nil {
			return Section{}, err
		}
		var st idleClientStats
		lctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		pause := think
		if pause == 0 {
			pause = time.Microsecond
		}
		for range clients {
			wg.Add(1)
			go func() { defer wg.Done(); idleClient(lctx, m.Addr, pause, &st) }()
		}
		var reloadErrs int
		for range reloads {
			time.Sleep(700 * time.Millisecond)
			if err := m.Reload(ctx); err != nil {
				reloadErrs++
			}
		}
		time.Sleep(time.Second)
		stop()
		wg.Wait()
		m.Stop(10 * time.Second)
		label := fmt.Sprintf("0 to %v", think)
		if think == 0 {
			label = "none"
		}
		beyond := think > timeout/2
		ok := st.errors.Load() == 0 && reloadErrs == 0
		v := verdict(ok)
		if beyond {
			v = "(no target)"
		} else {
			allOK = allOK && ok
		}
		t.row(label, st.requests.Load(), st.toldToGo.Load(), st.errors.Load(), v)
		if st.example != "" {
			fmt.Fprintf(&notes, "- pauses %s: first error `%s`\n", label, oneLine(st.example))
		}
		if reloadErrs > 0 {
			fmt.Fprintf(&notes, "- pauses %s: %d reloads failed\n", label, reloadErrs)
		}
	}
	md.WriteString(t.String())
	if notes.Len() > 0 {
		md.WriteString(notes.String() + "\n")
	}
	md.WriteString("Scenario 1's keep-alive rows are the same policy under a closed loop of 64 clients with no pauses.\n\n")
	fmt.Fprintf(&md, "Result: %s\n", verdict(allOK))
	return Section{Title: "2. Keep-alive drain", Markdown: md.String()}, nil
}
