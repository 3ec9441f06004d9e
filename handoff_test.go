package recluster_test

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
	const clients, reloads = 64, 20
	tc := startCluster(t, recluster.Options{Workers: 2})
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
