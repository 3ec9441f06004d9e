package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// As PID 1 (here: of a new pid namespace, as in a container) the master
// reaps the orphans that workers leave behind, and still reloads and stops
// cleanly.
func TestPID1ReapsOrphans(t *testing.T) {
	if out, err := exec.Command("unshare", "-fp", "--mount-proc", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot make a pid namespace here (needs root and unshare): %v %s", err, out)
	}
	// Each worker leaves an orphan that ends soon after: only PID 1 can
	// reap it.
	script := workerScript(t, "(sleep 0.3 &)")
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	m := startProcess(t, ctl, []string{"unshare", "-fp", "--mount-proc", "--kill-child",
		reclusterBin, "run", "--control", ctl, "-w", "2", "--listen", "127.0.0.1:0", "--", script}, nil)
	m.waitControl()
	m.waitAllActive(20 * time.Second)
	master := childOf(t, m.cmd.Process.Pid)
	m.waitFor(10*time.Second, "the orphans to end and be reaped", func() bool {
		for _, child := range children(master) {
			state, comm := procState(child)
			if state == "Z" || comm == "sleep" {
				return false
			}
		}
		return true
	})
	if _, stderr, code := cli(t, nil, "reload", "--control", ctl); code != 0 {
		t.Fatalf("reload as PID 1: exit %d: %s", code, stderr)
	}
	if _, stderr, code := cli(t, nil, "stop", "--control", ctl); code != 0 {
		t.Fatalf("stop as PID 1: exit %d: %s", code, stderr)
	}
	if code := m.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("the master as PID 1 exited %d after a clean stop", code)
	}
}

// childOf returns the only child of pid (unshare's child: the master).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	kids := children(pid)
	if len(kids) != 1 {
		t.Fatalf("unshare (pid %d) has children %v, want one", pid, kids)
	}
	return kids[0]
}

func children(pid int) []int {
	var kids []int
	tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + task.Name() + "/children")
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				kids = append(kids, n)
			}
		}
	}
	return kids
}

// procState returns a process's state letter and command name.
func procState(pid int) (state, comm string) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", ""
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", ""
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) == 0 {
		return "", s[open+1 : end]
	}
	return fields[0], s[open+1 : end]
}
