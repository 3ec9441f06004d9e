package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
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

// When every waiting connection has sent part of a request, a new caller
// is told that the master is busy, not reset; once the slow ones time out,
// callers are served again.
func TestBusyMasterSaysSo(t *testing.T) {
	_, path := startCluster(t, 1)
	var slow []net.Conn
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()
	for range maxPending {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		slow = append(slow, conn)
		if _, err := conn.Write([]byte(`{"cmd":`)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Every answer is either the status or a busy notice, never a reset;
	// the notice comes while the slow ones wait, the status once they
	// have timed out.
	want := fmt.Sprintf("master busy: %d connections waiting", maxPending)
	busy := 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := Do(ctx, path, Request{Cmd: CmdStatus}, nil)
		var remote *RemoteError
		switch {
		case err == nil && resp.Status != nil:
			if busy == 0 {
				t.Fatalf("no caller was told %q while %d half-sent requests waited", want, maxPending)
			}
			return
		case !errors.As(err, &remote) || !strings.Contains(err.Error(), want):
			t.Fatalf("status with %d half-sent requests waiting: %v, want an answer saying %q", maxPending, err, want)
		case time.Now().After(deadline):
			t.Fatal("the slow requests never timed out")
		}
		busy++
		time.Sleep(100 * time.Millisecond)
	}
}
