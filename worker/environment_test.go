package worker_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A master built on package recluster that imports package worker to be
// its own worker (Self) keeps the NOTIFY_SOCKET that systemd gave it, and
// its READY=1 and STOPPING=1 reach systemd: importing package worker does
// not take the variable out of a master's environment. The fake systemd
// is a real datagram socket.
func TestSelfMasterKeepsNotifySocket(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "selfmaster")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/selfmaster").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	notifyPath := filepath.Join(dir, "notify.sock")
	systemd, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer systemd.Close()
	received := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := systemd.Read(buf)
			if err != nil {
				close(received)
				return
			}
			received <- string(buf[:n])
		}
	}()
	wait := func(want string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case msg, ok := <-received:
				if !ok {
					t.Fatalf("the fake systemd closed before %s", want)
				}
				if msg == want {
					return
				}
			case <-deadline:
				t.Fatalf("no %s on the master's NOTIFY_SOCKET", want)
			}
		}
	}

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		line <- sc.Text()
		for sc.Scan() {
		}
	}()
	select {
	case got := <-line:
		if got != "notified true <nil>" {
			t.Fatalf("the master says %q: importing package worker took NOTIFY_SOCKET out of its environment", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the master's worker never became ready")
	case err := <-exited:
		t.Fatalf("the master exited early: %v", err)
	}
	wait("READY=1")

	cmd.Process.Signal(syscall.SIGTERM)
	wait("STOPPING=1")
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("the master did not stop cleanly: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the master did not stop after SIGTERM")
	}
}
