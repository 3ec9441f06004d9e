package worker_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
	"github.com/recluster-go/recluster/worker"
)

const listenChildEnv = "WORKER_TEST_LISTEN_ADDR"

// TestListenChild is the child process of TestPassedSocketsWithoutListenPID:
// it does nothing unless that test started it.
func TestListenChild(t *testing.T) {
	addr := os.Getenv(listenChildEnv)
	if addr == "" {
		return
	}
	ln, err := worker.Listen("tcp", addr)
	if err != nil {
		os.Stdout.WriteString("RESULT error " + err.Error() + "\n")
		return
	}
	os.Stdout.WriteString("RESULT listened " + ln.Addr().String() + "\n")
	ln.Close()
}

// A socket passed without LISTEN_PID is taken under a master (the channel
// says it is the worker's own), and the listening message says that
// LISTEN_PID is optional; alone, the systemd rule stands and the socket is
// left alone (the program's own bind then finds the address taken).
func TestPassedSocketsWithoutListenPID(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	passed, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer passed.Close()
	addr := ln.Addr().String()

	run := func(channel *os.File) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestListenChild$", "-test.count=1")
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "LISTEN_") && !strings.HasPrefix(k, "RECLUSTER_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, listenChildEnv+"="+addr, "LISTEN_FDS=1", "LISTEN_FDNAMES=web")
		cmd.ExtraFiles = []*os.File{passed} // fd 3
		if channel != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, channel) // fd 4
			cmd.Env = append(cmd.Env, proto.EnvChannelFD+"=4")
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("the child did not finish:\n%s", out.String())
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if r, ok := strings.CutPrefix(line, "RESULT "); ok {
				return r
			}
		}
		t.Fatalf("the child said nothing:\n%s", out.String())
		return ""
	}

	if got := run(nil); !strings.HasPrefix(got, "error ") || !strings.Contains(got, "address already in use") {
		t.Fatalf("alone, without LISTEN_PID: %q, want the passed socket left alone", got)
	}

	conn, childFD, err := proto.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	channel := os.NewFile(uintptr(childFD), "channel")
	got := run(channel)
	channel.Close()
	if got != "listened "+addr {
		t.Fatalf("under a master, without LISTEN_PID: %q, want the passed socket", got)
	}
	said := make(chan proto.Message, 1)
	go func() {
		m, _, _ := conn.Receive()
		said <- m
	}()
	select {
	case m := <-said:
		if m.Cmd != proto.CmdListening || m.ListenPID != proto.ListenPIDOptional {
			t.Fatalf("the worker said %+v, want listening with listen_pid optional", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message on the channel")
	}
}
