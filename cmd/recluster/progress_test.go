package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// reloadLive runs recluster reload and hands each line of its stdout to
// the caller as it is written, with whether the command was still running
// when the line was read.
type reloadLive struct {
	lines  chan string
	exited chan struct{}
	cmd    *exec.Cmd
	err    error
}

func startReloadCommand(t *testing.T, env []string, args ...string) *reloadLive {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	r := &reloadLive{lines: make(chan string, 100), exited: make(chan struct{})}
	r.cmd = exec.CommandContext(ctx, reclusterBin, append([]string{"reload"}, args...)...)
	r.cmd.Env = append(os.Environ(), env...)
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
		r.err = r.cmd.Wait()
		close(r.exited)
	}()
	return r
}

// next returns the next line, or fails after a generous bound.
func (r *reloadLive) next(t *testing.T) (string, bool) {
	t.Helper()
	select {
	case line, ok := <-r.lines:
		return line, ok
	case <-time.After(30 * time.Second):
		t.Fatal("recluster reload printed nothing for 30s")
	}
	return "", false
}

var stepTime = regexp.MustCompile(`^\s*\+([0-9]+\.[0-9]{3})s (.*)$`)

func TestReloadShowsEachStepLive(t *testing.T) {
	// Slot 1 of the new generation is ready 1.5s after slot 0: the first
	// ready line must be on reload's stdout while it still waits.
	script := workerScript(t, "export SDWORKER_NOTIFY=1")
	m := startMaster(t, "-w", "2", "--listen", "127.0.0.1:0", "--ready-when", "ready", "--", script)
	writeScript(t, script, sdworkerScript(`export SDWORKER_NOTIFY=1; [ "$WORKER_ID" = 1 ] && export SDWORKER_READY_DELAY=1500ms`))

	r := startReloadCommand(t, []string{"NO_COLOR="}, "--control", m.ctl)
	var seen []string
	last := -1.0
	for {
		line, ok := r.next(t)
		if !ok {
			break
		}
		if strings.Contains(line, "\x1b[") {
			t.Errorf("colour codes in output that is not a terminal: %q", line)
		}
		seen = append(seen, line)
		if m := stepTime.FindStringSubmatch(line); m != nil {
			at, _ := strconv.ParseFloat(m[1], 64)
			if at < last {
				t.Errorf("step times go back: %q after %.3fs", line, last)
			}
			last = at
		}
		if strings.HasSuffix(line, "ready") && strings.Contains(line, "slot 0: pid") {
			select {
			case <-r.exited:
				t.Fatalf("slot 0's ready line was read only after reload exited:\n%s", strings.Join(seen, "\n"))
			default:
			}
			for _, l := range seen {
				if strings.Contains(l, "committed") {
					t.Fatalf("the commit came before slot 0 was ready:\n%s", strings.Join(seen, "\n"))
				}
			}
		}
	}
	<-r.exited
	out := strings.Join(seen, "\n")
	if r.err != nil {
		t.Fatalf("reload: %v\n%s", r.err, out)
	}
	// Every step, in order.
	want := []*regexp.Regexp{
		regexp.MustCompile(`reload started: generation 2`),
		regexp.MustCompile(`slot 0: pid [0-9]+ ready`),
		regexp.MustCompile(`slot 1: pid [0-9]+ ready`),
		regexp.MustCompile(`committed: generation 2 serves every slot \(took [0-9.]+m?s\)`),
		regexp.MustCompile(`slot [01]: old pid [0-9]+ exited`),
		regexp.MustCompile(`old workers gone, [0-9.]+m?s after the commit`),
		regexp.MustCompile(`^reload finished: generation 2 is active$`),
	}
	at := 0
	for _, re := range want {
		for at < len(seen) && !re.MatchString(seen[at]) {
			at++
		}
		if at == len(seen) {
			t.Fatalf("no line matching %q in order in:\n%s", re, out)
		}
	}
	if n := strings.Count(out, "old pid"); n != 2 {
		t.Errorf("%d old workers reported gone, want 2:\n%s", n, out)
	}

	// --quiet prints the outcome only.
	stdout, stderr, code := cli(t, nil, "reload", "--quiet", "--control", m.ctl)
	if code != 0 || strings.TrimSpace(stdout) != "reload finished: generation 3 is active" {
		t.Fatalf("reload --quiet: status %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestScaleWaitsForItsWorkers(t *testing.T) {
	script := workerScript(t, "export SDWORKER_NOTIFY=1 SDWORKER_READY_DELAY=700ms")
	m := startMaster(t, "-w", "1", "--listen", "127.0.0.1:0", "--ready-when", "ready", "--", script)
	began := time.Now()
	stdout, stderr, code := cli(t, nil, "scale", "3", "--control", m.ctl)
	if code != 0 || !strings.Contains(stdout, "scaled to 3 workers") {
		t.Fatalf("scale 3: status %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if took := time.Since(began); took < 700*time.Millisecond {
		t.Errorf("scale returned after %v, before the new workers could be ready", took)
	}
	if _, ok := activeSet(m.status()); !ok {
		t.Fatalf("scale returned before every slot had an active worker: %+v", m.status().Workers)
	}
	for _, slot := range []string{"slot 1: pid", "slot 2: pid"} {
		if !strings.Contains(stdout, slot) {
			t.Errorf("scale did not report %s...:\n%s", slot, stdout)
		}
	}
	// A worker that is never ready: a waiting scale could not return, one
	// with --no-wait returns at once.
	writeScript(t, script, sdworkerScript("export SDWORKER_NOTIFY=0"))
	stdout, stderr, code = cli(t, nil, "scale", "+1", "--no-wait", "--control", m.ctl)
	if code != 0 || strings.Contains(stdout, "slot 3") {
		t.Fatalf("scale +1 --no-wait: status %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if st := m.status(); st.Slots != 4 {
		t.Errorf("scale +1 --no-wait: %d slots, want 4", st.Slots)
	}
}
