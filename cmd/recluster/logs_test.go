package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/testbin"
)

// shellWorker writes a worker script and returns its path.
func shellWorker(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "worker.sh")
	writeScript(t, path, body)
	return path
}

// A worker that prints a line every 50ms, labelled with its slot and
// generation; USR1 (forwarded by the master) does not kill it.
const tickerWorker = `trap '' USR1
i=0
while :; do
  echo "tick slot=$WORKER_ID gen=$RECLUSTER_GENERATION n=$i"
  i=$((i+1))
  sleep 0.05
done`

// startLogs runs recluster logs with args against m, in the background.
func startLogs(t *testing.T, m *runningMaster, args ...string) (*exec.Cmd, *testbin.Buffer, chan error) {
	t.Helper()
	out := &testbin.Buffer{}
	cmd := exec.Command(reclusterBin, append([]string{"logs", "--control", m.ctl}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		exited <- cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return cmd, out, exited
}

// recluster logs -f shows the lines of every worker, old and new
// generation alike, while a reload replaces them, and ends quietly with
// Ctrl-C.
func TestLogsFollowDuringReload(t *testing.T) {
	m := startMaster(t, "-w", "2", "--ready-when", "started", "--timeout", "500ms", "--", shellWorker(t, tickerWorker))
	logs, out, exited := startLogs(t, m, "-f", "--lines", "0")
	seen := func(gen int) func() bool {
		return func() bool {
			s := out.String()
			for slot := range 2 {
				label := regexp.MustCompile(fmt.Sprintf(`(?m)^\[%d \d+ g%d\] tick slot=%d gen=%d n=\d+$`, slot, gen, slot, gen))
				if !label.MatchString(s) {
					return false
				}
			}
			return true
		}
	}
	m.waitFor(20*time.Second, "recluster logs -f to show both workers of generation 1", seen(1))
	if _, stderr, code := cli(t, nil, "reload", "--control", m.ctl); code != 0 {
		t.Fatalf("reload: exit %d: %s", code, stderr)
	}
	m.waitFor(20*time.Second, "recluster logs -f to show both workers of generation 2", seen(2))
	logs.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("recluster logs -f after Ctrl-C: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("recluster logs -f did not end on Ctrl-C")
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasPrefix(line, "[") || !strings.Contains(line, "] tick slot=") {
			t.Errorf("not a labelled worker line: %q", line)
		}
	}

	// Without -f: the most recent lines, of one slot when asked.
	stdout, stderr, code := cli(t, nil, "logs", "--control", m.ctl, "--slot", "1", "--lines", "5")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != 0 || len(lines) != 5 {
		t.Fatalf("logs --slot 1 --lines 5: exit %d, %d lines:\n%s%s", code, len(lines), stdout, stderr)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "[1 ") {
			t.Errorf("logs --slot 1 printed %q", l)
		}
	}
}

// 4 workers each print 10,000 lines in bursts: every line reaches the
// master's log file once, whole and labelled, and no line is dropped.
func TestOutputFloodLosesNothing(t *testing.T) {
	pad := strings.Repeat("x", 80)
	worker := shellWorker(t, `b=0
while [ $b -lt 10 ]; do
  i=0
  while [ $i -lt 1000 ]; do
    echo "flood slot=$WORKER_ID n=$((b*1000+i)) `+pad+`"
    i=$((i+1))
  done
  b=$((b+1))
  sleep 0.1
done
echo "flood slot=$WORKER_ID done"
exec sleep 600`)
	// A file keeps up: a write to it never waits for a reader.
	path := filepath.Join(t.TempDir(), "recluster.log")
	m := startMaster(t, "-w", "4", "--ready-when", "started", "--timeout", "0", "--log-file", path, "--", worker)
	var out string
	m.waitFor(120*time.Second, "every worker to finish its bursts", func() bool {
		b, _ := os.ReadFile(path)
		out = string(b)
		return strings.Count(out, " done\n") == 4
	})
	rss := peakRSS(t, m.cmd.Process.Pid)
	line := regexp.MustCompile(`^\[(\d) \d+ g1\] flood slot=(\d) n=(\d+) ` + pad + `$`)
	seen := map[int]map[int]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if strings.HasSuffix(sc.Text(), " done") || strings.Contains(sc.Text(), "msg=") {
			continue // the end of a worker's bursts, or the master's own log
		}
		g := line.FindStringSubmatch(sc.Text())
		if g == nil || g[1] != g[2] {
			t.Fatalf("a line is split, mixed or mislabelled: %q", sc.Text())
		}
		slot, _ := strconv.Atoi(g[1])
		n, _ := strconv.Atoi(g[3])
		if seen[slot] == nil {
			seen[slot] = map[int]int{}
		}
		seen[slot][n]++
	}
	for slot := range 4 {
		for n := range 10000 {
			if seen[slot][n] != 1 {
				t.Fatalf("slot %d line %d seen %d times", slot, n, seen[slot][n])
			}
		}
	}
	if strings.Contains(out, "dropped") {
		t.Errorf("the master dropped lines for a sink that keeps up")
	}
	t.Logf("master peak RSS after 40,000 lines: %d KiB", rss)
}

// peakRSS returns a process's peak resident memory in KiB (VmHWM).
func peakRSS(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Logf("no peak RSS without /proc: %v", err)
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kib, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kib
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// A line without a newline is relayed in marked pieces as it comes, not
// held until it ends; its end comes when the worker's output ends.
func TestHugeLineIsSplitWithTheMarker(t *testing.T) {
	worker := shellWorker(t, `head -c 40000 /dev/zero | tr '\0' a
exec sleep 600`)
	m := startMaster(t, "-w", "1", "--ready-when", "started", "--timeout", "0", "--", worker)
	piece := regexp.MustCompile(`(?m)^\[0 \d+ g1\] (a+)\.\.\.\[continued\]$`)
	m.waitFor(20*time.Second, "the two full pieces of the line", func() bool {
		return len(piece.FindAllString(m.stdout.String(), -1)) == 2
	})
	for _, p := range piece.FindAllStringSubmatch(m.stdout.String(), -1) {
		if len(p[1]) != recluster.MaxOutputLine {
			t.Errorf("a piece of %d bytes, want %d", len(p[1]), recluster.MaxOutputLine)
		}
	}
	stdout, _, code := cli(t, nil, "logs", "--control", m.ctl, "--json")
	if code != 0 || strings.Count(stdout, `"continued":true`) != 2 {
		t.Errorf("logs --json: exit %d, want two continued pieces:\n%.300s", code, stdout)
	}
	m.signal(syscall.SIGTERM)
	m.waitExit(20 * time.Second)
	rest := strings.Repeat("a", 40000-2*recluster.MaxOutputLine)
	if !regexp.MustCompile(`(?m)^\[0 \d+ g1\] ` + rest + `$`).MatchString(m.stdout.String()) {
		t.Errorf("the end of the line (%d bytes) was not written once the worker's output ended", len(rest))
	}
}

// --log-file gets the master's log and the workers' output; after a
// rename, recluster logs --reopen and USR1 each make the master write to
// a new file at the path.
func TestLogFileReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "recluster.log")
	m := startMaster(t, "-w", "2", "--ready-when", "started", "--timeout", "0", "--log-file", path, "--", shellWorker(t, tickerWorker))
	hasWorkerLines := func(p string) func() bool {
		return func() bool {
			b, _ := os.ReadFile(p)
			return strings.Contains(string(b), "] tick slot=0 ") && strings.Contains(string(b), "] tick slot=1 ")
		}
	}
	m.waitFor(20*time.Second, "worker lines in the log file", hasWorkerLines(path))
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "recluster: master running") {
		t.Errorf("the master's own log is not in the log file:\n%.500s", b)
	}
	for i, reopen := range []func(){
		func() {
			if stdout, stderr, code := cli(t, nil, "logs", "--reopen", "--control", m.ctl); code != 0 || !strings.Contains(stdout, "reopened") {
				t.Fatalf("logs --reopen: exit %d: %s%s", code, stdout, stderr)
			}
		},
		func() { m.signal(syscall.SIGUSR1) },
	} {
		rotated := fmt.Sprintf("%s.%d", path, i+1)
		if err := os.Rename(path, rotated); err != nil {
			t.Fatal(err)
		}
		reopen()
		m.waitFor(20*time.Second, "worker lines in the reopened log file", hasWorkerLines(path))
		m.waitFor(20*time.Second, "the reopen line in the new file", func() bool {
			b, _ := os.ReadFile(path)
			return strings.Contains(string(b), "recluster: log file reopened")
		})
		before, _ := os.ReadFile(rotated)
		if !strings.Contains(string(before), "] tick slot=") {
			t.Errorf("the rotated file %s lost its lines", rotated)
		}
	}
	if out := m.stdout.String() + m.stderr.String(); out != "" {
		t.Errorf("with --log-file, the master still wrote to stdout or stderr:\n%.500s", out)
	}
	if st := m.status(); st.Workers[0].Restarts != 0 || st.Workers[1].Restarts != 0 {
		t.Errorf("a worker restarted: %+v", st.Workers)
	}
}

// --output wins; without it, --prefix (kept from before) chooses between
// labelled, the default, and plain.
func TestOutputFormatSetting(t *testing.T) {
	for _, c := range []struct {
		args []string
		want recluster.OutputFormat
	}{
		{nil, recluster.OutputLabelled},
		{[]string{"--prefix"}, recluster.OutputLabelled},
		{[]string{"--prefix=false"}, recluster.OutputPlain},
		{[]string{"--output", "json", "--prefix"}, recluster.OutputJSON},
		{[]string{"--prefix=false", "--output", "labelled"}, recluster.OutputLabelled},
	} {
		cfg, err := parseRun(append(c.args, "--", "prog"), func(string) string { return "" })
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := cfg.outputFormat(); got != c.want {
			t.Errorf("%v: output %q, want %q", c.args, got, c.want)
		}
	}
	if _, err := parseRun([]string{"--output", "pretty", "--", "prog"}, func(string) string { return "" }); err == nil ||
		!strings.Contains(err.Error(), "labelled, plain, json") {
		t.Errorf("--output pretty: %v, want an error that lists the formats", err)
	}
}

// Reopening without --log-file, and bad logs flags, say what is wrong.
func TestLogsBadInput(t *testing.T) {
	m := startMaster(t, "-w", "1", "--ready-when", "started", "--", shellWorker(t, "exec sleep 600"))
	_, stderr, code := cli(t, nil, "logs", "--reopen", "--control", m.ctl)
	if code != exitFailure || !strings.Contains(stderr, "without --log-file") {
		t.Errorf("logs --reopen without --log-file: exit %d: %s", code, stderr)
	}
	for _, args := range [][]string{{"--slot", "-1"}, {"--lines", "x"}, {"--reopen", "-f"}, {"extra"}} {
		_, stderr, code := cli(t, nil, append([]string{"logs", "--control", m.ctl}, args...)...)
		if code != exitUsage || !strings.Contains(stderr, "recluster help logs") {
			t.Errorf("logs %v: exit %d: %s", args, code, stderr)
		}
	}
}
