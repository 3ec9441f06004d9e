package control

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Idle clients, many more than the server keeps waiting, do not lock an
// operator out: each new caller takes the place of the newest idle one.
func TestIdleClientsDoNotLockOutTheOperator(t *testing.T) {
	_, path := startCluster(t, 1)
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range 500 {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("dial %d: %v", len(idle), err)
		}
		idle = append(idle, conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := Do(ctx, path, Request{Cmd: CmdStatus}, nil)
	if err != nil || resp.Status == nil || resp.Status.Phase != "running" {
		t.Fatalf("status with 500 idle clients: %+v, %v", resp, err)
	}
	resp, err = Do(ctx, path, Request{Cmd: CmdReload, Wait: true}, nil)
	if err != nil || !strings.Contains(resp.Message, "generation 2") {
		t.Fatalf("reload with 500 idle clients: %+v, %v", resp, err)
	}
}

// The server's decision, free of timing: a new caller costs nothing while
// fewer than the limit wait; then the newest idle connection gives up its
// place; and only when none is idle is the caller refused.
func TestAdmitDecision(t *testing.T) {
	a, b, c := &pendingConn{}, &pendingConn{}, &pendingConn{}
	idle := map[*pendingConn]bool{}
	isIdle := func(p *pendingConn) bool { return idle[p] }
	for _, tt := range []struct {
		name       string
		waiting    []*pendingConn
		idle       []*pendingConn
		wantVictim *pendingConn
		wantRefuse bool
	}{
		{"room", []*pendingConn{a, b}, nil, nil, false},
		{"room, some idle", []*pendingConn{a, b}, []*pendingConn{a}, nil, false},
		{"full, the newest idle goes", []*pendingConn{a, b, c}, []*pendingConn{a, b}, b, false},
		{"full, the only idle goes", []*pendingConn{a, b, c}, []*pendingConn{a}, a, false},
		{"full, none idle", []*pendingConn{a, b, c}, nil, nil, true},
	} {
		clear(idle)
		for _, p := range tt.idle {
			idle[p] = true
		}
		victim, refuse := admit(tt.waiting, 3, isIdle)
		if victim != tt.wantVictim || refuse != tt.wantRefuse {
			t.Errorf("%s: victim %p refuse %v, want %p %v", tt.name, victim, refuse, tt.wantVictim, tt.wantRefuse)
		}
	}
}

// A refused client gets the busy answer even when the master has said it
// and closed before the client sent its request: the send fails, the
// answer is in the socket all the same.
func TestBusyAnswerSurvivesAFailedSend(t *testing.T) {
	ours, theirs := unixPair(t)
	sayBusy(theirs, 7) // nothing was sent: it reads until the linger ends
	theirs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := exchange(ctx, ours, "test.sock", Request{Cmd: CmdStatus}, nil)
	var remote *RemoteError
	if !errors.As(err, &remote) || remote.Msg != busyMessage(7) {
		t.Fatalf("got %v, want the answer %q", err, busyMessage(7))
	}
}

// unixPair returns the two ends of a connected Unix stream socket.
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	return conns[0], conns[1]
}

// When every waiting connection has sent part of a request, a new caller
// is told that the master is busy, not reset; once one of them finishes
// its request, callers are served again. The slow requests are given a
// minute, so nothing here depends on how fast the machine is: the test
// waits for the server to hold them all, then every caller must be told.
func TestBusyMasterSaysSo(t *testing.T) {
	const limit = 4
	_, path, srv := startServer(t, 1, func(s *Server) {
		s.Logger = slog.New(slog.DiscardHandler)
		s.maxPending = limit
		s.requestTimeout = time.Minute
	})
	var slow []net.Conn
	for range limit {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := conn.Write([]byte(`{"cmd":`)); err != nil {
			t.Fatal(err)
		}
		slow = append(slow, conn)
	}
	waiting := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.pending)
	}
	waitUntil(t, "the server to hold every slow connection", func() bool { return waiting() == limit })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want := busyMessage(limit)
	for i := range 20 {
		_, err := Do(ctx, path, Request{Cmd: CmdStatus}, nil)
		var remote *RemoteError
		if !errors.As(err, &remote) || remote.Msg != want {
			t.Fatalf("caller %d, with %d half-sent requests waiting: %v, want the answer %q", i, limit, err, want)
		}
	}
	// One slow client finishes its request: it is answered, and its place
	// is free for the next caller.
	if _, err := slow[0].Write([]byte("\"status\"}\n")); err != nil {
		t.Fatal(err)
	}
	slow[0].SetReadDeadline(time.Now().Add(30 * time.Second))
	var resp Response
	if err := json.NewDecoder(slow[0]).Decode(&resp); err != nil || resp.Status == nil {
		t.Fatalf("the slow client's finished request: %+v, %v", resp, err)
	}
	waitUntil(t, "the finished request to leave the waiting set", func() bool { return waiting() < limit })
	resp, err := Do(ctx, path, Request{Cmd: CmdStatus}, nil)
	if err != nil || resp.Status == nil {
		t.Fatalf("status once a place is free: %+v, %v", resp, err)
	}
}

// waitUntil polls cond for up to 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
