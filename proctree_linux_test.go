package recluster

import (
	"net"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestProcTreeFindsChildren(t *testing.T) {
	var tree procTree
	kids := tree.descendants(os.Getppid(), time.Now())
	if !slices.Contains(kids, os.Getpid()) {
		t.Fatalf("the test process %d is not among its parent's descendants %v", os.Getpid(), kids)
	}
	rss, _, ok := procUsage(os.Getpid())
	if !ok || rss <= 0 {
		t.Fatalf("procUsage of the test process: rss %d, ok %v", rss, ok)
	}
}

// A worker that serves from a child (a shell that runs the server, as
// `npm start` or gunicorn's arbiter do) is seen accepting through its
// descendants.
func TestAcceptingSeesTheWorkersChild(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is not installed; .ci/run installs it")
		}
		t.Skip("python3 is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ino, ok := socketInode(int(f.Fd()))
	if !ok {
		t.Fatal("no inode for the socket")
	}
	// The shell holds the socket too, but only its child accepts on it.
	cmd := exec.Command("/bin/sh", "-c", py+` -c "import socket; socket.socket(fileno=3).accept()"; exit $?`)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}()
	var tree procTree
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := acceptingOn(cmd.Process.Pid, map[uint64]bool{ino: true}, &tree, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shell's child never counted as accepting on the socket; the shell's descendants: %v", tree.descendants(cmd.Process.Pid, time.Now()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEndedChildNamesTheChild(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pid, ok := endedChild()
		if !ok {
			t.Fatal("waitid could not say which child ended")
		}
		if pid == cmd.Process.Pid {
			return // and it is still there for cmd.Wait to reap
		}
		if time.Now().After(deadline) {
			t.Fatalf("endedChild never named the child %d that ended (last: %d)", cmd.Process.Pid, pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
