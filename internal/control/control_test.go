package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

func TestListenModeStaleAndLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v, want 0600", st.Mode(), err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use by another running recluster master") {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // leaves a stale socket behind
	ln, err = Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()

	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen on a file: %v", err)
	}
	if _, err := Listen(filepath.Join(t.TempDir(), "no", "c.sock")); err == nil {
		t.Fatal("Listen in a missing directory: no error")
	}
}

func TestDoWithoutMaster(t *testing.T) {
	_, err := Do(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Request{Cmd: CmdStatus}, nil)
	if err == nil || !strings.Contains(err.Error(), "no recluster master at") {
		t.Fatalf("got %v", err)
	}
}

// startCluster runs a small real cluster (sleep workers) behind a control
// server and returns the socket path.
func startCluster(t *testing.T, workers int) (*recluster.Cluster, string) {
	t.Helper()
	c, path, _ := startServer(t, workers, func(*Server) {})
	return c, path
}

// startServer is startCluster with a server that configure may adjust
// before it serves.
func startServer(t *testing.T, workers int, configure func(*Server)) (*recluster.Cluster, string, *Server) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	c := recluster.New(sleep, recluster.Options{
		Workers: workers, Args: []string{"600"}, ReadyWhen: recluster.Started,
		StopSignal: 15, Timeout: 2 * time.Second, Stdout: devNull{}, Stderr: devNull{},
	})
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{}, 1)
	srv := &Server{Cluster: c, Stop: func() {
		select {
		case stopped <- struct{}{}:
			go c.Terminate(context.Background())
		default:
		}
	}}
	configure(srv)
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Terminate(ctx)
		srv.Close(ctx)
	})
	return c, path, srv
}

type devNull struct{}

func (devNull) Write(p []byte) (int, error) { return len(p), nil }

func pids(c *recluster.Cluster) string {
	var s []string
	for _, w := range c.Workers() {
		s = append(s, fmt.Sprint(w.ID(), w.PID()))
	}
	return strings.Join(s, ",")
}

// No malformed request harms the cluster: each gets an error answer.
func TestMalformedRequests(t *testing.T) {
	c, path := startCluster(t, 2)
	before := pids(c)
	for _, req := range []string{
		"garbage",
		"{}",
		"[1,2]",
		`"status"`,
		`{"cmd":"frob"}`,
		`{"cmd":"status","extra":1}`,
		`{"cmd":"status"} {"cmd":"stop"}`,
		`{"cmd":"stop"`,
		`{"cmd":"scale"}`,
		`{"cmd":"scale","workers":0}`,
		`{"cmd":"scale","workers":-3}`,
		`{"cmd":"scale","workers":"many"}`,
		`{"cmd":"scale","delta":-2}`,
		`{"cmd":"scale","workers":2,"delta":1}`,
		`{"cmd":null}`,
		strings.Repeat("x", MaxRequest+10),
	} {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintln(conn, req)
		var resp Response
		line, err := bufio.NewReader(conn).ReadBytes('\n')
		conn.Close()
		if err != nil || json.Unmarshal(line, &resp) != nil || resp.OK || resp.Error == "" {
			t.Errorf("request %.40q: answer %q, %v", req, line, err)
		}
	}
	// Connections that close early or send half a line.
	for _, partial := range []string{"", `{"cmd":`} {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte(partial))
		conn.Close()
	}
	resp, err := Do(context.Background(), path, Request{Cmd: CmdStatus, Sample: true}, nil)
	if err != nil || resp.Status == nil || resp.Status.Slots != 2 || resp.Status.Phase != "running" {
		t.Fatalf("status after bad requests: %+v %v", resp, err)
	}
	if after := pids(c); after != before {
		t.Fatalf("workers changed: %s -> %s", before, after)
	}
	for _, w := range resp.Status.Workers {
		if w.RSSBytes <= 0 || w.CPUSeconds < 0 {
			t.Errorf("no resource figures: %+v", w)
		}
	}
}

func TestScaleReloadStop(t *testing.T) {
	c, path := startCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	three, minus := 3, -1
	if _, err := Do(ctx, path, Request{Cmd: CmdScale, Workers: &three}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Do(ctx, path, Request{Cmd: CmdScale, Delta: &minus}, nil); err != nil {
		t.Fatal(err)
	}
	if n := c.Status().Slots; n != 2 {
		t.Fatalf("%d slots, want 2", n)
	}
	var progress []string
	resp, err := Do(ctx, path, Request{Cmd: CmdReload, Wait: true}, func(r Response) { progress = append(progress, r.Progress) })
	if err != nil || !strings.Contains(resp.Message, "generation 2") || len(progress) != 1 {
		t.Fatalf("reload: %+v %v %v", resp, err, progress)
	}
	resp, err = Do(ctx, path, Request{Cmd: CmdStop}, nil)
	if err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("stop: %+v %v", resp, err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the cluster did not stop")
	}
}

func TestDefaultPathIsInAPrivateDirectory(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", t.TempDir())
	path := DefaultPath()
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	st, err := os.Stat(filepath.Dir(path))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("the default socket's directory: %v, %v", st, err)
	}
	// A directory that others may enter is refused, not used.
	os.Chmod(filepath.Dir(path), 0o755)
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not private") {
		t.Fatalf("Listen in a directory that is not private: %v", err)
	}
}
