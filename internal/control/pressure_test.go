package control

import (
	"context"
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
