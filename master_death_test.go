package recluster_test

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A master killed by SIGKILL cannot clean up: the kernel must end its
// workers (parent-death signal), so that no orphan keeps the port.
func TestMasterKilledLeavesNoWorker(t *testing.T) {
	cmd := exec.Command(masterBin, serverBin)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var workers []int
	for len(workers) < 2 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("the master ended before its workers were active")
			}
			pid, _ := strconv.Atoi(strings.TrimPrefix(line, "pid "))
			workers = append(workers, pid)
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the master's workers")
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// The workers were re-parented; whoever reaps them, they must be gone
	// (or zombies, which hold no port) within two seconds.
	eventually(t, 2*time.Second, "the workers of a killed master to exit", func() bool {
		for _, pid := range workers {
			if !gone(pid) && !zombie(pid) {
				return false
			}
		}
		return true
	})
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}
