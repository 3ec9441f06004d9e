package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster/internal/asynclog"
	"github.com/recluster-go/recluster/internal/testbin"
	"golang.org/x/sys/unix"
)

// httpLoad runs clients that never retry against a master's socket until
// finish, and counts what failed.
type httpLoad struct {
	mu       sync.Mutex
	ok       int
	failures []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startHTTPLoad(addr string, clients int) *httpLoad {
	l := &httpLoad{stop: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				// A POST without GetBody is never replayed by the Transport.
				resp, err := httpClient.Post("http://"+addr+"/", "text/plain", strings.NewReader("x"))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				l.mu.Lock()
				if err != nil {
					l.failures = append(l.failures, err.Error())
				} else {
					l.ok++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// flowing waits until n more requests have succeeded.
func (l *httpLoad) flowing(m *runningMaster, n int) {
	m.t.Helper()
	l.mu.Lock()
	target := l.ok + n
	l.mu.Unlock()
	m.waitFor(30*time.Second, fmt.Sprintf("%d more successful requests", n), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.ok >= target
	})
}

// finish stops the clients and fails the test if any request failed.
func (l *httpLoad) finish(t *testing.T, across string) int {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if len(l.failures) > 0 {
		t.Fatalf("%d of %d requests failed across %s: %v", len(l.failures), l.ok+len(l.failures), across, l.failures[:min(5, len(l.failures))])
	}
	return l.ok
}

// killAndAwaitRespawn SIGKILLs the active worker of slot and waits until
// another one serves the slot.
func (m *runningMaster) killAndAwaitRespawn(slot int) {
	m.t.Helper()
	old, _ := activeSet(m.status())
	if old[slot] == 0 {
		m.t.Fatalf("slot %d has no active worker", slot)
	}
	if err := syscall.Kill(old[slot], syscall.SIGKILL); err != nil {
		m.t.Fatal(err)
	}
	m.waitFor(30*time.Second, fmt.Sprintf("slot %d to be served again after pid %d was killed", slot, old[slot]), func() bool {
		st, err := m.tryStatus()
		if err != nil {
			return false
		}
		now, _ := activeSet(st)
		return now[slot] != 0 && now[slot] != old[slot]
	})
}

// reload runs recluster reload and fails the test unless generation gen
// becomes active (aborted reloads use up generations too).
func (m *runningMaster) reload(gen int) {
	m.t.Helper()
	out, errOut, code := cli(m.t, nil, "reload", "--control", m.ctl)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("generation %d is active", gen)) {
		m.t.Fatalf("reload: status %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// fullPipe returns a pipe whose buffer is already full: nobody reads it,
// so whatever writes to it next blocks, as a stalled journald or log
// collector makes a master's stderr block.
func fullPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	fd := int(w.Fd())
	unix.SetNonblock(fd, true)
	chunk := make([]byte, 4096)
	for {
		if _, err := unix.Write(fd, chunk); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	// A master inherits it blocking, as a real stderr is.
	unix.SetNonblock(fd, false)
	return r, w
}

// With the master's stderr a pipe that nobody reads, the master goes on
// supervising: status answers, a crashed worker is respawned, a reload
// commits and no request fails. Once the pipe drains, the master says how
// many log lines it dropped. The log volume comes from a worker that sends
// 20,000 lines of junk on its channel, each worth a warning today; were
// those rate-limited, this test would need another source of more lines
// than the log's queue holds (asynclog.DefaultCapacity).
func TestStuckStderrDoesNotStallTheMaster(t *testing.T) {
	stderrR, stderrW := fullPipe(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	m := &runningMaster{t: t, ctl: ctl, stdout: &testbin.Buffer{}, stderr: &testbin.Buffer{}, exited: make(chan struct{})}
	m.cmd = exec.Command(reclusterBin, "run", "--control", ctl, "-w", "2", "--listen", "127.0.0.1:0",
		"--ready-when", "ready", "--timeout", "5s", "--env", "SDWORKER_NOTIFY=1", "--env", "SDWORKER_DRAIN=200ms",
		"--env", "SDWORKER_FLOOD=20000", "--env", "SDWORKER_FLOOD_KIND=malformed", "--", sdworkerBin)
	m.cmd.Stdout, m.cmd.Stderr = m.stdout, stderrW
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stderrW.Close()
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-m.exited:
		default:
			m.cmd.Process.Kill()
			<-m.exited
		}
	})
	m.waitControl()
	m.waitAllActive(30 * time.Second)
	m.waitFor(30*time.Second, "the junk flood to be sent", func() bool { return strings.Contains(m.stdout.String(), "sdworker flood done") })

	// Status, timed in the master and through the command.
	var slowest time.Duration
	for range 20 {
		start := time.Now()
		m.status()
		slowest = max(slowest, time.Since(start))
	}
	start := time.Now()
	out, errOut, code := cli(t, nil, "status", "--control", ctl)
	cliTook := time.Since(start)
	if code != 0 || !strings.Contains(out, "active") {
		t.Fatalf("recluster status with a stuck stderr: status %d, stdout %q, stderr %q", code, out, errOut)
	}

	// A crash is seen and repaired. (It is not under load: a SIGKILL fails
	// the requests its worker held, stuck stderr or not.)
	m.killAndAwaitRespawn(1)
	l := startHTTPLoad(m.httpAddr(), 4)
	l.flowing(m, 20)
	m.reload(2)
	l.flowing(m, 20)
	requests := l.finish(t, "a reload with a stuck stderr")

	// Now the log collector comes back.
	drained := &testbin.Buffer{}
	go io.Copy(drained, stderrR)
	dropped := regexp.MustCompile(`msg="` + regexp.QuoteMeta(asynclog.DroppedMessage) + `" dropped=(\d+)`)
	var n int
	m.waitFor(30*time.Second, "the master to report the log lines it dropped", func() bool {
		match := dropped.FindStringSubmatch(drained.String())
		if match != nil {
			n, _ = strconv.Atoi(match[1])
		}
		return match != nil
	})
	if n <= 0 {
		t.Fatalf("the master reported %d dropped lines", n)
	}
	m.signal(syscall.SIGTERM)
	if code := m.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("exit status %d after TERM, want 0", code)
	}
	t.Logf("stuck stderr: status slowest of 20 %v, recluster status %v; a crash repaired; %d requests, 0 failed, across a reload; %d log lines dropped and reported",
		slowest.Round(time.Millisecond), cliTook.Round(time.Millisecond), requests, n)
}

// One worker floods its channel with 20,000 unknown commands while the
// other is killed 17 times: every account of the crashes says 17.
func TestFloodLosesNoLifecycleEvent(t *testing.T) {
	const kills = 17
	metricsAddr := freeTCPAddr(t)
	m := startMaster(t, "-w", "2", "--listen", "127.0.0.1:0", "--ready-when", "ready",
		"--respawn", "1ms", "--backoff", "0", "--metrics", metricsAddr,
		"--env", "SDWORKER_NOTIFY=1", "--env", "SDWORKER_FLOOD=20000", "--env", "SDWORKER_FLOOD_PAUSE=250ms", "--", sdworkerBin)
	floodDone := func() bool { return strings.Contains(m.stdout.String(), "sdworker flood done") }
	killsDuringFlood := 0
	for range kills {
		if !floodDone() {
			killsDuringFlood++
		}
		m.killAndAwaitRespawn(1)
	}
	m.waitFor(30*time.Second, "the flood to be sent", floodDone)
	if killsDuringFlood == 0 {
		t.Fatal("the flood was over before the first kill; the test proves nothing")
	}

	restarts := -1
	for _, w := range m.status().Workers {
		if w.Slot == 1 {
			restarts = w.Restarts
		}
	}
	metrics := scrape(t, metricsAddr)
	crashed := metricValue(metrics, `recluster_worker_exits_total{cause="crashed"}`)
	restartsTotal := metricValue(metrics, `recluster_worker_restarts_total{slot="1"}`)
	exitedLines := 0
	for _, line := range strings.Split(m.stderr.String(), "\n") {
		if strings.Contains(line, "event=exited") && strings.Contains(line, " slot=1 ") {
			exitedLines++
		}
	}
	if restarts != kills || crashed != kills || restartsTotal != kills || exitedLines != kills {
		t.Fatalf("%d kills: status says %d restarts, exits_total{cause=crashed} %d, restarts_total %d, %d exited lines\n%s",
			kills, restarts, crashed, restartsTotal, exitedLines, m.stderr.String())
	}
	if log := m.stderr.String(); strings.Contains(log, "events are being dropped") || strings.Count(log, "command the master does not know") != 1 {
		t.Fatalf("the flood made lifecycle events drop, or its commands were logged one by one:\n%s", log)
	}
	t.Logf("20,000 unknown commands and %d kills (%d while the flood went on): status, exits_total, restarts_total and the log all say %d", kills, killsDuringFlood, kills)
}

// freeTCPAddr returns a 127.0.0.1 address with a port that was free a
// moment ago.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricValue returns the value of the series named exactly so, or -1.
func metricValue(exposition, series string) int {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return int(f)
			}
		}
	}
	return -1
}

// 500 idle clients on the control socket lock no operator out: status and
// reload succeed. When every waiting connection has begun a request, a
// caller is told the master is busy, never reset.
func TestControlSocketUnderPressure(t *testing.T) {
	m := startMaster(t, "-w", "2", "--listen", "127.0.0.1:0", "--ready-when", "ready",
		"--env", "SDWORKER_NOTIFY=1", "--", sdworkerBin)
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range 500 {
		c, err := net.Dial("unix", m.ctl)
		if err != nil {
			t.Fatalf("idle client %d: %v", len(idle), err)
		}
		idle = append(idle, c)
	}
	out, errOut, code := cli(t, nil, "status", "--control", m.ctl)
	if code != 0 || !strings.Contains(out, "active") {
		t.Fatalf("status with 500 idle clients: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	m.reload(2)

	// 64 callers that each send half a request hold every place for the
	// 2 s the master gives a request. A caller in that window must hear
	// "master busy"; one that comes after it (a machine slow enough to
	// take 2 s here) finds room and is served, and the round is tried
	// again. Any other answer, such as a reset, fails the test.
	const waiting = 64
	want := fmt.Sprintf("master busy: %d connections waiting", waiting)
	for round := 1; ; round++ {
		var half []net.Conn
		for range waiting {
			c, err := net.Dial("unix", m.ctl)
			if err != nil {
				t.Fatal(err)
			}
			half = append(half, c)
			c.Write([]byte(`{"cmd":`))
		}
		out, errOut, code := cli(t, nil, "status", "--control", m.ctl)
		for _, c := range half {
			c.Close()
		}
		if code == 1 && strings.Contains(errOut, want) {
			t.Logf("round %d: %s", round, strings.TrimSpace(errOut))
			break
		}
		if code != 0 || !strings.Contains(out, "active") {
			t.Fatalf("status with %d half-sent requests waiting: status %d, stdout %q, stderr %q; want %q or the status", waiting, code, out, errOut, want)
		}
		if round == 10 {
			t.Fatalf("in 10 rounds no caller came within 2 s of %d half-sent requests", waiting)
		}
	}
	m.waitFor(20*time.Second, "status once the half-sent requests are gone", func() bool {
		_, err := m.tryStatus()
		return err == nil
	})
}

// A deploy that leaves the program unexecutable, then deletes it: each
// recluster reload fails and its error names the cause and the fix, and
// the old generation serves every request.
func TestBadDeployNamesTheCause(t *testing.T) {
	script := workerScript(t, "export SDWORKER_NOTIFY=1 SDWORKER_DRAIN=200ms")
	m := startMaster(t, "-w", "2", "--listen", "127.0.0.1:0", "--ready-when", "ready", "--timeout", "5s", "--", script)
	good, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	replace := func(content []byte, perm os.FileMode) {
		tmp := script + ".new"
		if err := os.WriteFile(tmp, content, perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tmp, perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, script); err != nil {
			t.Fatal(err)
		}
	}
	l := startHTTPLoad(m.httpAddr(), 4)
	l.flowing(m, 20)
	for _, bad := range []struct {
		name   string
		deploy func()
		want   []string
	}{
		{"not executable", func() { replace(good, 0o644) }, []string{"permission denied", "is not executable (mode 0644); make it so with chmod +x"}},
		{"not a program", func() { replace([]byte("MZ\x90\x00 not a program\n"), 0o755) }, []string{"exec format error", "is not a program this system can run"}},
		{"deleted", func() { os.Remove(script) }, []string{"no such file or directory", script + " does not exist"}},
	} {
		bad.deploy()
		out, errOut, code := cli(t, nil, "reload", "--control", m.ctl)
		if code != 1 || !strings.Contains(errOut, "reload aborted") {
			t.Fatalf("%s: reload gave status %d, stdout %q, stderr %q", bad.name, code, out, errOut)
		}
		for _, w := range bad.want {
			if !strings.Contains(errOut, w) {
				t.Fatalf("%s: the reload's error %q does not say %q", bad.name, errOut, w)
			}
		}
		t.Logf("%s: %s", bad.name, strings.TrimSpace(errOut))
		l.flowing(m, 20)
	}
	replace(good, 0o755)
	m.reload(5)
	l.flowing(m, 20)
	n := l.finish(t, "three bad deploys and a good one")
	if strings.Contains(m.stderr.String(), "code 127") {
		t.Fatalf("a failed exec was reported as an exit:\n%s", m.stderr.String())
	}
	t.Logf("%d requests, 0 failed, across three bad deploys and a good one", n)
}
