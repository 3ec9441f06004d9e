package recluster_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

// postClient sends POSTs on one keep-alive connection and never retries:
// an error is a failed request. It opens a new connection only after a
// response that said Connection: close.
type postClient struct {
	addr  string
	conn  net.Conn
	br    *bufio.Reader
	ports map[string]bool // local ports used
}

func (c *postClient) post(body string) (*http.Response, string, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return nil, "", err
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
		c.ports[conn.LocalAddr().String()] = true
	}
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if _, err := io.WriteString(c.conn, req); err != nil {
		c.close()
		return nil, "", err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return nil, "", err
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.close()
		return nil, "", err
	}
	if resp.Close {
		c.close()
	}
	return resp, string(got), nil
}

func (c *postClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// idleLoad runs keep-alive POST clients that pause up to maxPause between
// requests.
type idleLoad struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	ok       int
	failures []string
	ports    []int // connections used, per client
}

func startIdleLoad(addr string, clients int, maxPause time.Duration) *idleLoad {
	l := &idleLoad{stop: make(chan struct{}), ports: make([]int, clients)}
	for i := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &postClient{addr: addr, ports: map[string]bool{}}
			defer c.close()
			for n := 0; ; n++ {
				body := fmt.Sprintf("client %d request %d", i, n)
				local := "new connection"
				if c.conn != nil {
					local = c.conn.LocalAddr().String()
				}
				resp, got, err := c.post(body)
				l.mu.Lock()
				switch {
				case err != nil:
					l.failures = append(l.failures, fmt.Sprintf("client %d request %d (%s): %v", i, n, local, err))
				case resp.StatusCode != 200 || got != body:
					l.failures = append(l.failures, fmt.Sprintf("client %d request %d: status %d body %q", i, n, resp.StatusCode, got))
				default:
					l.ok++
				}
				l.ports[i] = len(c.ports)
				l.mu.Unlock()
				select {
				case <-l.stop:
					return
				case <-time.After(rand.N(maxPause + 1)):
				}
			}
		}()
	}
	return l
}

func (l *idleLoad) finish() {
	close(l.stop)
	l.wg.Wait()
}

func TestHandoffIdleKeepAliveClientsSeeNoReload(t *testing.T) {
	testIdleClientsSeeNoReload(t, recluster.Options{Workers: 2}, 64, 20)
}

// The same with the socket passed at start, the systemd way (as under
// recluster run --listen), instead of asked for over the channel.
func TestHandoffOnInheritedSockets(t *testing.T) {
	testIdleClientsSeeNoReload(t, recluster.Options{Workers: 2, Sockets: []recluster.Socket{{Address: "127.0.0.1:0"}}}, 16, 5)
}

func testIdleClientsSeeNoReload(t *testing.T, opts recluster.Options, clients, reloads int) {
	tc := newCluster(t, opts)
	if err := tc.Run(); err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, opts.Workers, 10*time.Second, kind(recluster.EventActive))
	tc.url = "http://" + tc.Addrs()[0].String()
	addr := strings.TrimPrefix(tc.url, "http://")
	l := startIdleLoad(addr, clients, 3*time.Second)
	for i := range reloads {
		time.Sleep(rand.N(time.Second))
		if err := tc.Reload(context.Background()); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
	}
	// Let the last drain end while the clients go on.
	tc.rec.waitN(t, 2*reloads, 10*time.Second, kind(recluster.EventExited))
	l.finish()
	st := tc.Status()
	kept := 0
	for _, n := range l.ports {
		if n == 1 {
			kept++
		}
	}
	t.Logf("%d requests, %d of %d clients kept their connection, handoffs %v, fallbacks %v", l.ok, kept, clients, st.Handoffs, st.HandoffFallbacks)
	if len(l.failures) > 0 {
		t.Fatalf("%d failed requests:\n%s", len(l.failures), strings.Join(l.failures, "\n"))
	}
	if kept < clients/2 {
		t.Errorf("only %d of %d clients kept their connection through %d reloads (connections per client: %v)", kept, clients, reloads, l.ports)
	}
	if st.Handoffs["handed"] == 0 {
		t.Errorf("no connection was handed over: %v", st.Handoffs)
	}
}

// reloadAtRandom runs n reloads with random pauses of up to a second, and
// waits until every worker they replaced has exited.
func reloadAtRandom(t *testing.T, tc *testCluster, n int) {
	t.Helper()
	exitedBefore := len(slices.DeleteFunc(tc.rec.all(), func(e recluster.Event) bool { return e.Kind != recluster.EventExited }))
	for i := range n {
		time.Sleep(rand.N(time.Second))
		if err := tc.Reload(context.Background()); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
	}
	tc.rec.waitN(t, exitedBefore+n*tc.Status().Slots, 20*time.Second, kind(recluster.EventExited))
}

// A request pipelined behind another, whose first bytes net/http had read
// when the drain began, is served by the old worker, exactly once, and the
// connection is handed over after its response.
func TestHandoffPipelinedRequestAnsweredOnce(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 1})
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(tc.url, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	post := func(path, body string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
	}
	first, second, third := post("/echo?until=disconnect", "first"), post("/echo", "second"), post("/echo", "third")
	// The first request waits for the drain; the head of the second comes
	// in the same segment, so net/http has it buffered when the drain begins.
	cut := len(second) / 2
	if _, err := io.WriteString(conn, first+second[:cut]); err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- tc.Reload(context.Background()) }()
	read := func(want string) *http.Response {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the response to %q: %v", want, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(got) != want || resp.StatusCode != 200 {
			t.Fatalf("response to %q: status %d body %q error %v", want, resp.StatusCode, got, err)
		}
		if resp.Close {
			t.Fatalf("the response to %q closed the connection", want)
		}
		return resp
	}
	r1 := read("first")
	if _, err := io.WriteString(conn, second[cut:]); err != nil {
		t.Fatal(err)
	}
	r2 := read("second")
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, 1, 20*time.Second, kind(recluster.EventExited))
	if _, err := io.WriteString(conn, third); err != nil {
		t.Fatal(err)
	}
	r3 := read("third")
	if g1, g2, g3 := r1.Header.Get("X-Generation"), r2.Header.Get("X-Generation"), r3.Header.Get("X-Generation"); g1 != "1" || g2 != "1" || g3 != "2" {
		t.Errorf("generations that answered: %s, %s, %s; want 1, 1 (the old worker, which had read the second request's head), 2 (after the handoff)", g1, g2, g3)
	}
	// Nothing more comes: each request was answered once.
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := br.Read(make([]byte, 1)); n > 0 || !isTimeout(err) {
		t.Errorf("after the three responses the connection gave %d bytes, error %v; want nothing", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// openFDs counts this process's descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(entries)
}

// The new worker killed while idle connections are on their way to it: the
// master keeps none of them.
func TestHandoffNewWorkerKilledInTransfer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("descriptors are counted in /proc")
	}
	const conns = 64
	tc := startCluster(t, recluster.Options{Workers: 1})
	for i := range conns {
		c := &postClient{addr: strings.TrimPrefix(tc.url, "http://"), ports: map[string]bool{}}
		defer c.close()
		if _, _, err := c.post(fmt.Sprint("hello ", i)); err != nil {
			t.Fatal(err)
		}
	}
	baseline := openFDs(t)
	if err := tc.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The reload commits as it tells the old worker to go: its
	// connections are being handed over now.
	newPID := tc.Status().Workers[0].PID
	for _, w := range tc.Status().Workers {
		if w.Generation == 2 {
			newPID = w.PID
		}
	}
	syscall.Kill(newPID, syscall.SIGKILL)
	tc.rec.waitN(t, 2, 20*time.Second, kind(recluster.EventExited))
	tc.rec.waitN(t, 2, 20*time.Second, kind(recluster.EventActive)) // the respawned worker
	eventually(t, 20*time.Second, fmt.Sprintf("the master's descriptors back at %d", baseline), func() bool {
		return openFDs(t) <= baseline
	})
	st := tc.Status()
	t.Logf("handoffs %v, fallbacks %v", st.Handoffs, st.HandoffFallbacks)
}

// TLS and HTTP/2 connections are not handed over: they drain as before,
// and the master counts them by reason.
func TestHandoffTLSAndH2FallBack(t *testing.T) {
	t.Run("tls", func(t *testing.T) {
		tc := startCluster(t, recluster.Options{Workers: 1}, "-tls")
		url := strings.Replace(tc.url, "http://", "https://", 1)
		h1 := &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
		}}
		h2 := &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: true,
		}}
		for _, c := range []*http.Client{h1, h2} {
			defer c.CloseIdleConnections()
		}
		wantProto := map[*http.Client]int{h1: 1, h2: 2}
		for c, major := range wantProto {
			resp, err := c.Get(url + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != major {
				t.Fatalf("got HTTP/%d, want HTTP/%d", resp.ProtoMajor, major)
			}
		}
		reloadAtRandom(t, tc, 1)
		st := tc.Status()
		if st.HandoffFallbacks["tls"] < 1 || st.HandoffFallbacks["h2"] < 1 || st.Handoffs["handed"] != 0 {
			t.Errorf("handoffs %v, fallbacks %v; want one tls and one h2 fallback, nothing handed", st.Handoffs, st.HandoffFallbacks)
		}
	})
	t.Run("h2c", func(t *testing.T) {
		tc := startCluster(t, recluster.Options{Workers: 1}, "-h2c")
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(tc.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("got HTTP/%d, want h2c", resp.ProtoMajor)
		}
		reloadAtRandom(t, tc, 1)
		st := tc.Status()
		if st.HandoffFallbacks["h2"] < 1 || st.Handoffs["handed"] != 0 {
			t.Errorf("handoffs %v, fallbacks %v; want one h2 fallback, nothing handed", st.Handoffs, st.HandoffFallbacks)
		}
	})
}
