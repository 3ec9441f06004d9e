package worker_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Alone, without a master, a worker program listens by itself, says it
// is WORKER_ID 0, and drains on SIGTERM without failing a keep-alive
// client: responses after the signal carry Connection: close, and the
// process exits cleanly.
func TestAloneServesAndDrainsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "server")
	if out, err := exec.Command("go", "build", "-o", bin, "../testdata/server").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	cmd := exec.Command(bin, "-addr", addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	var conn net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for conn == nil {
		if conn, err = net.Dial("tcp", addr); err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("the worker never listened on %s: %v", addr, err)
			}
			conn = nil
			time.Sleep(10 * time.Millisecond)
		}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	send := func() *http.Response {
		t.Helper()
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
			t.Fatalf("write: %v", err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("body: %v", err)
		}
		if !strings.HasPrefix(string(body), "worker 0 ") {
			t.Fatalf("alone, the worker says %q", body)
		}
		return resp
	}
	if resp := send(); resp.Close {
		t.Fatal("a response before the drain closed the connection")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	// The keep-alive connection stays usable until a response tells the
	// client to go.
	for i := 0; ; i++ {
		if send().Close {
			break
		}
		if i > 1000 {
			t.Fatal("no response said Connection: close after SIGTERM")
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the drained worker exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the worker did not exit after draining")
	}
}
