package recluster

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
	rss, _, ok := newProcFS().usage(os.Getpid())
	if !ok || rss <= 0 {
		t.Fatalf("usage of the test process: rss %d, ok %v", rss, ok)
	}
}

// A kernel built without the children files (CONFIG_PROC_CHILDREN off)
// gets the tree from every process's parent, read into a table that the
// accept watcher reads again once it is older than acceptPollMax.
func TestProcTreeFromTheParentsTable(t *testing.T) {
	startSleeper := func() int {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd.Process.Pid
	}
	first := startSleeper()
	r := newProcFS()
	r.table = r.readProcTable()
	if kids := r.tree(os.Getpid())[1:]; !slices.Contains(kids, first) {
		t.Fatalf("the table's tree %v lacks the child %d", kids, first)
	}
	taken := time.Now()
	tree := procTree{r: r, taken: taken}
	second := startSleeper()
	if kids := tree.descendants(os.Getpid(), taken); slices.Contains(kids, second) {
		t.Fatalf("the table was read again before acceptPollMax: %v holds %d", kids, second)
	}
	if kids := tree.descendants(os.Getpid(), taken.Add(acceptPollMax)); !slices.Contains(kids, second) || !slices.Contains(kids, first) {
		t.Fatalf("the table read again after acceptPollMax gave %v, want %d and %d among them", kids, first, second)
	}
	if tree.r != r {
		t.Fatal("the watcher's reader was replaced instead of refreshed")
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

// The command name in /proc/PID/stat may hold spaces and parentheses: the
// fields are counted from the last ')'.
func TestProcStatReadsPastAnOddCommandName(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(t.TempDir(), "a) b (c")
	if err := os.Symlink(sleep, odd); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	r := newProcFS()
	// Until its exec has mapped sleep, the child has no resident pages.
	var st procStat
	for deadline := time.Now().Add(10 * time.Second); st.rssPages == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var ok bool
		if st, ok = r.stat(cmd.Process.Pid); !ok {
			t.Fatalf("stat of %d failed: %q", cmd.Process.Pid, r.file)
		}
	}
	if st.ppid != os.Getpid() {
		t.Fatalf("parent of %d read as %d, want %d (stat: %q)", cmd.Process.Pid, st.ppid, os.Getpid(), r.file)
	}
	if st.rssPages <= 0 {
		t.Fatalf("resident pages read as %d (stat: %q)", st.rssPages, r.file)
	}
	if tree := r.tree(os.Getpid()); !slices.Contains(tree, cmd.Process.Pid) || tree[0] != os.Getpid() {
		t.Fatalf("the test's tree %v lacks its child %d", tree, cmd.Process.Pid)
	}
}

// A status, a `recluster top` refresh and a metrics scrape read every
// worker's tree; on a master whose live heap is about a megabyte, the
// garbage of those reads is what its resident memory grows by. Once its
// buffers have grown, a reader allocates only the paths it opens.
func TestProcReaderMakesNoGarbage(t *testing.T) {
	r := newProcFS()
	pid := os.Getpid()
	r.tree(pid)
	r.stat(pid)
	threads := func() int { tids, _ := r.threads(pid); return len(tids) }
	before := threads()
	got := testing.AllocsPerRun(20, func() {
		for _, p := range r.tree(pid) {
			r.stat(p)
		}
	})
	// The runtime may start a thread meanwhile: count the most there were.
	tids := max(before, threads())
	opens := 2.0 + float64(tids) // the task directory, each thread's children, the stat file
	if got > 2*opens+2 {
		t.Fatalf("a tree and stat read of the test process (%d threads) allocated %.0f times, want at most %.0f (two per path opened)", tids, got, 2*opens+2)
	}
}
