package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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

	"github.com/recluster-go/recluster/internal/control"
	"github.com/recluster-go/recluster/internal/testbin"
)

// upgradedVersion is the version linked into the second build that the
// upgrade tests switch to and from.
const upgradedVersion = "v0.0.0-upgrade-test"

var (
	otherBuild    sync.Once
	otherBin      string
	otherBuildErr error
	firstVersion  string
)

// upgradeBinaries returns a directory that all users can reach, holding
// "recluster", a copy of the test build that a master is started from,
// and the paths of the two builds a deploy puts there: the test build and
// one linked with upgradedVersion; and the test build's version.
func upgradeBinaries(t *testing.T) (dir, first, second, version string) {
	t.Helper()
	otherBuild.Do(func() {
		otherBin = filepath.Join(filepath.Dir(reclusterBin), "recluster-upgraded")
		// Without -race: the test build, which the masters also run, has
		// the race detector, and one more race build would cost a minute.
		cmd := exec.Command("go", "build", "-o", otherBin, "-ldflags", "-X github.com/recluster-go/recluster/internal/buildinfo.Version="+upgradedVersion, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			otherBuildErr = fmt.Errorf("building the upgraded recluster: %v\n%s", err, out)
		}
		v, err := exec.Command(reclusterBin, "version").Output()
		if err != nil {
			otherBuildErr = err
		}
		firstVersion = strings.TrimPrefix(strings.TrimSpace(string(v)), "recluster ")
	})
	if otherBuildErr != nil {
		t.Fatal(otherBuildErr)
	}
	base, err := os.MkdirTemp("", "recluster-upgrade-test-") // t.TempDir is not reachable by other users
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(reclusterBin), 0o755)
	deploy(t, reclusterBin, filepath.Join(base, "recluster"))
	return base, reclusterBin, otherBin, firstVersion
}

// deploy puts a copy of src at dst the way deploys do: a new file renamed
// over the old one, which a running master keeps as a deleted file.
func deploy(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// rawLoad is a load of HTTP requests that never retries: each client
// sends a request, reads the answer, and counts any error as a failure.
type rawLoad struct {
	mu       sync.Mutex
	ok       int
	failures []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startRawLoad(addr string, clients int, keepAlive bool) *rawLoad {
	l := &rawLoad{stop: make(chan struct{})}
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var conn net.Conn
			var br *bufio.Reader
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				err := func() error {
					if conn == nil {
						c, err := net.DialTimeout("tcp", addr, 5*time.Second)
						if err != nil {
							return err
						}
						conn, br = c, bufio.NewReader(c)
					}
					conn.SetDeadline(time.Now().Add(10 * time.Second))
					header := "keep-alive"
					if !keepAlive {
						header = "close"
					}
					if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: t\r\nConnection: "+header+"\r\n\r\n"); err != nil {
						return err
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						return err
					}
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
					if resp.Close || !keepAlive {
						conn.Close()
						conn = nil
					}
					return err
				}()
				l.mu.Lock()
				if err != nil {
					l.failures = append(l.failures, err.Error())
					if conn != nil {
						conn.Close()
						conn = nil
					}
				} else {
					l.ok++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *rawLoad) finish() (ok int, failures []string) {
	close(l.stop)
	l.wg.Wait()
	return l.ok, l.failures
}

func workerPIDs(st *control.Status) map[int]int {
	pids := map[int]int{}
	for _, w := range st.Workers {
		pids[w.Slot] = w.PID
	}
	return pids
}

// upgrade runs recluster upgrade against m and fails the test unless it
// succeeds.
func (m *runningMaster) upgrade() string {
	m.t.Helper()
	out, errOut, code := cli(m.t, nil, "upgrade", "--control", m.ctl)
	if code != 0 {
		m.t.Fatalf("upgrade: exit %d: %s %s", code, out, errOut)
	}
	return out
}

// Under load in both modes, ten upgrades in a row, each after a deploy
// replaced the binary: no request fails, the master and every worker keep
// their pids, the master runs the new file and says so. Workers run as
// another user when the test runs as root, say READY=1 over their notify
// sockets, and the metrics listener survives. Then a reload works, and a
// stop leaves nothing behind.
func TestUpgradeInPlaceUnderLoad(t *testing.T) {
	dir, first, second, firstVer := upgradeBinaries(t)
	bin := filepath.Join(dir, "recluster")
	ctl := filepath.Join(dir, "ctl.sock")
	metricsAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	args := []string{bin, "run", "--control", ctl, "-w", "3", "--listen", "127.0.0.1:0", "--metrics", metricsAddr,
		"--ready-when", "ready", "--env", "SDWORKER_NOTIFY=1"}
	if os.Geteuid() == 0 {
		args = append(args, "--user", "nobody")
	}
	m := startProcess(t, ctl, append(args, "--", sdworkerBin), nil)
	m.waitControl()
	st := m.waitAllActive(20 * time.Second)
	masterPID := m.cmd.Process.Pid
	pids := workerPIDs(st)
	addr := m.httpAddr()

	keepAlive := startRawLoad(addr, 4, true)
	fresh := startRawLoad(addr, 4, false)
	builds := []struct{ path, version string }{{second, upgradedVersion}, {first, firstVer}}
	for i := 0; i < 10; i++ {
		build := builds[i%2]
		deploy(t, build.path, bin)
		out := m.upgrade()
		if !strings.Contains(out, "master pid "+strconv.Itoa(masterPID)) || !strings.Contains(out, build.version) {
			t.Errorf("upgrade %d answered %q", i+1, out)
		}
		st := m.status()
		if st.MasterPID != masterPID || st.Version != build.version || st.Upgrades != i+1 || st.Upgraded.IsZero() {
			t.Fatalf("after upgrade %d: master pid %d version %q upgrades %d (want pid %d, %q, %d)", i+1, st.MasterPID, st.Version, st.Upgrades, masterPID, build.version, i+1)
		}
		if got := workerPIDs(st); fmt.Sprint(got) != fmt.Sprint(pids) {
			t.Fatalf("after upgrade %d the workers are %v, want %v", i+1, got, pids)
		}
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(masterPID) + "/exe"); err != nil || exe != bin {
			t.Fatalf("after upgrade %d /proc/<master>/exe is %q (%v), want %s", i+1, exe, err, bin)
		}
	}
	ok1, failed1 := keepAlive.finish()
	ok2, failed2 := fresh.finish()
	if len(failed1)+len(failed2) > 0 || ok1 == 0 || ok2 == 0 {
		t.Fatalf("under 10 upgrades: keep-alive %d ok, failures %v; new connections %d ok, failures %v", ok1, failed1, ok2, failed2)
	}
	t.Logf("10 upgrades: %d keep-alive and %d new-connection requests, none failed", ok1, ok2)

	resp, err := httpClient.Get("http://" + metricsAddr + "/status")
	if err != nil {
		t.Fatalf("the metrics listener did not survive the upgrades: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"upgrades": 10`) && !strings.Contains(string(body), `"upgrades":10`) {
		t.Errorf("/status after 10 upgrades: %s", body)
	}

	if out, errOut, code := cli(t, nil, "reload", "--control", ctl); code != 0 || !strings.Contains(out, "generation 2 is active") {
		t.Fatalf("reload after the upgrades: exit %d: %s %s", code, out, errOut)
	}
	st = m.waitAllActive(20 * time.Second)
	if st.Generation != 2 {
		t.Fatalf("generation %d after the reload", st.Generation)
	}
	all := append(mapValues(pids), mapValues(workerPIDs(st))...)
	// The workers' notify sockets live in a directory that the first
	// master made; the last one must remove it.
	_, notifySocket, _ := strings.Cut(get(t, addr, "/info"), "NOTIFY_SOCKET=")
	notifySocket, _, _ = strings.Cut(notifySocket, " ")
	if notifySocket == "" {
		t.Fatal("the worker has no NOTIFY_SOCKET")
	}
	if _, errOut, code := cli(t, nil, "stop", "--control", ctl); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, errOut)
	}
	if code := m.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("the master exited %d after the upgrades", code)
	}
	if _, err := os.Lstat(ctl); err == nil {
		t.Error("the control socket is left behind after the stop")
	}
	if _, err := os.Lstat(filepath.Dir(notifySocket)); err == nil {
		t.Errorf("the notify sockets' directory %s is left behind after the stop", filepath.Dir(notifySocket))
	}
	for _, pid := range all {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("worker pid %d is still running after the stop", pid)
		}
	}
}

func mapValues(m map[int]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// A new binary that fails its pre-flight check is refused with its own
// error; the old master goes on serving and obeying. So is an upgrade in
// the middle of a reload.
func TestUpgradeRefused(t *testing.T) {
	dir, first, _, _ := upgradeBinaries(t)
	bin := filepath.Join(dir, "recluster")
	ctl := filepath.Join(dir, "ctl.sock")
	script := workerScript(t, "export SDWORKER_NOTIFY=1")
	m := startProcess(t, ctl, []string{bin, "run", "--control", ctl, "-w", "2", "--listen", "127.0.0.1:0",
		"--ready-when", "ready", "--ready-timeout", "15s", "--", script}, nil)
	m.waitControl()
	st := m.waitAllActive(20 * time.Second)
	pids := workerPIDs(st)
	addr := m.httpAddr()

	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'this build is broken: libfoo.so.3 is missing' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	deploy(t, broken, bin)
	out, errOut, code := cli(t, nil, "upgrade", "--control", ctl)
	if code != 1 || !strings.Contains(errOut, "upgrade refused") || !strings.Contains(errOut, "libfoo.so.3 is missing") || !strings.Contains(errOut, "exit status 3") {
		t.Fatalf("upgrade to a broken binary: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	st = m.status()
	if st.MasterPID != m.cmd.Process.Pid || st.Upgrades != 0 || fmt.Sprint(workerPIDs(st)) != fmt.Sprint(pids) {
		t.Fatalf("a refused upgrade changed the master: %+v", st)
	}
	get(t, addr, "/")
	deploy(t, first, bin)

	// A reload whose workers never get ready keeps the reload in progress
	// until --ready-timeout.
	writeScript(t, script, sdworkerScript("export SDWORKER_NOTIFY=0"))
	if _, errOut, code := cli(t, nil, "reload", "--no-wait", "--control", ctl); code != 0 {
		t.Fatalf("reload --no-wait: %d %s", code, errOut)
	}
	m.waitFor(10*time.Second, "the reload to start", func() bool { return m.status().Reloading != 0 })
	_, errOut, code = cli(t, nil, "upgrade", "--control", ctl)
	if code != 1 || !strings.Contains(errOut, "a reload to generation 2 is in progress") {
		t.Fatalf("upgrade during a reload: exit %d, stderr %q", code, errOut)
	}
	m.waitFor(40*time.Second, "the reload to be aborted", func() bool { return m.status().Reloading == 0 })
	writeScript(t, script, sdworkerScript("export SDWORKER_NOTIFY=1"))
	m.upgrade()
	if got := workerPIDs(m.waitAllActive(20 * time.Second)); fmt.Sprint(got) != fmt.Sprint(pids) {
		t.Fatalf("workers after the refusals and an upgrade: %v, want %v", got, pids)
	}
	if _, errOut, code := cli(t, nil, "stop", "--control", ctl); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, errOut)
	}
	m.waitExit(20 * time.Second)
}

// A worker that exits while the master is being replaced (here: killed by
// the new "binary", a script that the master executes, before it hands
// over to the real one) is reaped by the new master and respawned; the
// others are kept.
func TestUpgradeReapsAWorkerThatExitedDuringTheExec(t *testing.T) {
	dir, first, _, _ := upgradeBinaries(t)
	bin := filepath.Join(dir, "recluster")
	ctl := filepath.Join(dir, "ctl.sock")
	m := startProcess(t, ctl, []string{bin, "run", "--control", ctl, "-w", "3", "--listen", "127.0.0.1:0",
		"--ready-when", "ready", "--respawn", "50ms", "--env", "SDWORKER_NOTIFY=1", "--", sdworkerBin}, nil)
	m.waitControl()
	st := m.waitAllActive(20 * time.Second)
	pids := workerPIDs(st)
	victimFile := filepath.Join(dir, "victim")
	os.WriteFile(victimFile, []byte(strconv.Itoa(pids[1])), 0o644)
	wrapper := filepath.Join(dir, "wrapper")
	// Only in the exec itself (the state descriptor is set), not in the
	// pre-flight check. The kill comes from an orphaned process 100 ms
	// after the shell's exec, while the new master starts: killed while
	// the process is still the shell, the worker would be reaped by the
	// shell's own SIGCHLD handler (dash waits for any child), which no
	// master could see.
	body := fmt.Sprintf("#!/bin/sh\nif [ -n \"$RECLUSTER_UPGRADE_STATE_FD\" ]; then ( (sleep 0.1; kill -9 $(cat %s)) & ); fi\nexec %s \"$@\"\n", victimFile, first)
	if err := os.WriteFile(wrapper, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	deploy(t, wrapper, bin)
	m.upgrade()
	m.waitFor(20*time.Second, "slot 1 to be respawned", func() bool {
		st = m.status()
		got := workerPIDs(st)
		_, all := activeSet(st)
		return all && got[1] != pids[1]
	})
	got := workerPIDs(st)
	if got[0] != pids[0] || got[2] != pids[2] {
		t.Fatalf("workers after the upgrade %v, want slots 0 and 2 kept from %v", got, pids)
	}
	if st.Workers[1].Restarts != 1 {
		t.Errorf("slot 1 restarts %d, want 1", st.Workers[1].Restarts)
	}
	if !strings.Contains(m.stderr.String(), "pid="+strconv.Itoa(pids[1])) || !strings.Contains(m.stderr.String(), "signal=killed") {
		t.Errorf("the new master did not report the exit of pid %d", pids[1])
	}
	deploy(t, first, bin)
	m.upgrade()
	m.signal(syscall.SIGTERM)
	if code := m.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// A master whose socket systemd passed in (systemd-socket-activate here)
// keeps it across an upgrade, tells systemd RELOADING=1 and then READY=1,
// and stays the main pid.
func TestUpgradeSocketActivated(t *testing.T) {
	activate := socketActivatePath(t)
	dir, _, second, _ := upgradeBinaries(t)
	bin := filepath.Join(dir, "recluster")
	notifyPath := filepath.Join(dir, "notify.sock")
	expect := fakeSystemdNotify(t, notifyPath)
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	ctl := filepath.Join(dir, "ctl.sock")
	m := startProcess(t, ctl, []string{activate, "-l", addr, "--fdname=web", "-E", "NOTIFY_SOCKET=" + notifyPath,
		bin, "run", "--control", ctl, "-w", "2", "--listen", "web=" + addr, "--ready-when", "ready",
		"--env", "SDWORKER_NOTIFY=1", "--", sdworkerBin}, nil)
	// systemd-socket-activate starts the master on the first connection.
	go func() {
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			resp, err := httpClient.Get("http://" + addr + "/")
			if err == nil {
				resp.Body.Close()
			}
			if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
				return
			}
		}
	}()
	m.waitControl()
	st := m.waitAllActive(20 * time.Second)
	expect("READY=1")
	pids := workerPIDs(st)
	deploy(t, second, bin)
	m.upgrade()
	expect("RELOADING=1")
	if ready := expect("READY=1"); !strings.Contains(ready, "MAINPID="+strconv.Itoa(m.cmd.Process.Pid)) {
		t.Errorf("READY after the upgrade %q does not keep the master as the main pid", ready)
	}
	st = m.status()
	if len(st.Addrs) != 1 || st.Addrs[0] != "tcp:"+addr || st.Version != upgradedVersion || fmt.Sprint(workerPIDs(st)) != fmt.Sprint(pids) {
		t.Fatalf("after the upgrade: addrs %v version %q workers %v (want %s, %s, %v)", st.Addrs, st.Version, workerPIDs(st), addr, upgradedVersion, pids)
	}
	get(t, addr, "/")
	if _, errOut, code := cli(t, nil, "reload", "--control", ctl); code != 0 {
		t.Fatalf("reload after the upgrade: %d %s", code, errOut)
	}
	if got := get(t, addr, "/"); !strings.Contains(got, "gen=2") {
		t.Fatalf("after the reload: %q", got)
	}
	m.signal(syscall.SIGTERM)
	expect("STOPPING=1")
	if code := m.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestVersionCommand(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errOut strings.Builder
		if code := realMain(args, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "recluster ") {
			t.Errorf("recluster %v: exit %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
	var out, errOut strings.Builder
	if code := realMain([]string{"version", "extra"}, &out, &errOut); code != exitUsage {
		t.Errorf("recluster version extra: exit %d, want %d", code, exitUsage)
	}
	got, err := exec.Command(upgradedBuild(t), "version").Output()
	if err != nil || !strings.Contains(string(got), upgradedVersion) {
		t.Errorf("a build linked with -X ...buildinfo.Version=%s says %q (%v)", upgradedVersion, got, err)
	}
}

func upgradedBuild(t *testing.T) string {
	t.Helper()
	_, _, second, _ := upgradeBinaries(t)
	return second
}

// The workers' output is relayed across upgrades: every line reaches the
// master's stdout once, whole (those the workers had half written when the
// master froze too), in order, and no worker notices (no SIGPIPE, no
// respawn); recluster logs has the lines from before the upgrades and
// those printed after them.
func TestUpgradeKeepsRelayingTheWorkersOutput(t *testing.T) {
	dir, first, second, _ := upgradeBinaries(t)
	bin := filepath.Join(dir, "recluster")
	ctl := filepath.Join(dir, "ctl.sock")
	// Each line in two writes, so that some are half written at the freeze.
	worker := shellWorker(t, `i=0
while :; do
  printf "tick slot=$WORKER_ID n=$i"
  sleep 0.01
  printf " end\n"
  i=$((i+1))
  sleep 0.01
done`)
	m := startProcess(t, ctl, []string{bin, "run", "--control", ctl, "-w", "2", "--ready-when", "started", "--", worker}, nil)
	m.waitControl()
	pids := workerPIDs(m.waitAllActive(20 * time.Second))
	line := regexp.MustCompile(`^\[(\d) (\d+) g1\] tick slot=(\d) n=(\d+) end$`)
	// last returns the highest n that each slot's lines reached, and
	// fails the test on a line that is not whole, out of order, twice or
	// missing, or from another pid.
	last := func() map[int]int {
		next := map[int]int{}
		for _, l := range strings.Split(strings.TrimSuffix(m.stdout.String(), "\n"), "\n") {
			g := line.FindStringSubmatch(l)
			if g == nil {
				if strings.Contains(l, "tick") {
					t.Fatalf("a worker's line came out broken: %q", l)
				}
				continue
			}
			slot, _ := strconv.Atoi(g[1])
			pid, _ := strconv.Atoi(g[2])
			n, _ := strconv.Atoi(g[4])
			if g[3] != g[1] || pid != pids[slot] || n != next[slot] {
				t.Fatalf("line %q: want slot %d pid %d n=%d", l, slot, pids[slot], next[slot])
			}
			next[slot] = n + 1
		}
		return next
	}
	m.waitFor(20*time.Second, "the workers' first lines", func() bool { n := last(); return n[0] > 3 && n[1] > 3 })
	for _, build := range []string{second, first, second} {
		deploy(t, build, bin)
		m.upgrade()
	}
	upgraded := last()
	m.waitFor(20*time.Second, "lines printed after the upgrades", func() bool {
		n := last()
		return n[0] > upgraded[0]+10 && n[1] > upgraded[1]+10
	})
	if got := workerPIDs(m.status()); fmt.Sprint(got) != fmt.Sprint(pids) {
		t.Fatalf("workers after the upgrades %v, want %v", got, pids)
	}
	logs, errOut, code := cli(t, nil, "logs", "--control", ctl, "--slot", "0", "--lines", "2000")
	if code != 0 || !strings.Contains(logs, "tick slot=0 n=0 end\n") || !strings.Contains(logs, fmt.Sprintf("tick slot=0 n=%d end\n", upgraded[0]+10)) {
		t.Fatalf("recluster logs after the upgrades (exit %d, %s) lacks the first line or one printed after the upgrades:\n%s", code, errOut, logs)
	}
	if _, errOut, code := cli(t, nil, "stop", "--control", ctl); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, errOut)
	}
	if code := m.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("the master exited %d", code)
	}
}

// Upgrades right after reloads, under keep-alive load, with workers that
// hand their idle connections to the new generation: an upgrade is refused
// while the reload's old generation drains, and once that has ended it
// waits for the connections still in transit in the channels of the
// workers that exited. No request fails.
func TestUpgradeRightAfterReloadsWithHandoff(t *testing.T) {
	dir, first, second, _ := upgradeBinaries(t)
	hello := helloBin
	bin := filepath.Join(dir, "recluster")
	ctl := filepath.Join(dir, "ctl.sock")
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	m := startProcess(t, ctl, []string{bin, "run", "--control", ctl, "-w", "2", "--listen", addr, "--timeout", "2s", "--", hello, "--addr", addr}, nil)
	m.waitControl()
	m.waitAllActive(20 * time.Second)
	load := startRawLoad(addr, 8, true)
	for i, build := range []string{second, first, second} {
		if _, errOut, code := cli(t, nil, "reload", "--control", ctl); code != 0 {
			t.Fatalf("reload %d: exit %d: %s", i+1, code, errOut)
		}
		deploy(t, build, bin)
		m.waitFor(30*time.Second, "an upgrade once the reload has ended", func() bool {
			_, errOut, code := cli(t, nil, "upgrade", "--control", ctl)
			if code != 0 && !strings.Contains(errOut, "is still followed") {
				t.Fatalf("upgrade %d: exit %d: %s", i+1, code, errOut)
			}
			return code == 0
		})
	}
	ok, failures := load.finish()
	st := m.status()
	if len(failures) > 0 || ok == 0 {
		t.Fatalf("3 reloads each followed by an upgrade: %d ok, failures %v", ok, failures)
	}
	if st.Upgrades != 3 || st.Generation != 4 || st.Handoffs["handed"] == 0 {
		t.Fatalf("after the reloads and upgrades: %d upgrades, generation %d, handoffs %v", st.Upgrades, st.Generation, st.Handoffs)
	}
	t.Logf("%d keep-alive requests, none failed; handoffs %v", ok, st.Handoffs)
	if _, errOut, code := cli(t, nil, "stop", "--control", ctl); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, errOut)
	}
	if code := m.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("the master exited %d", code)
	}
}

// A master upgraded in place goes on starting the workers that said they
// need no LISTEN_PID without the exec trampoline: the declaration travels
// in the state. The first worker went through the trampoline; the
// workers of the reloads before and after the upgrade are executed
// directly, and serve.
func TestUpgradeCarriesTheListenPIDDeclaration(t *testing.T) {
	dir, _, second, _ := upgradeBinaries(t)
	bin := filepath.Join(dir, "recluster")
	ctl := filepath.Join(dir, "ctl.sock")
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	m := startProcess(t, ctl, []string{bin, "run", "--control", ctl, "-w", "1", "--listen", "web=" + addr, "--timeout", "2s", "--", helloBin, "--addr", addr}, nil)
	m.waitControl()
	// check asserts how the worker of gen was started, and that it serves
	// alone once the one before it has gone.
	check := func(gen int, trampolined bool) {
		t.Helper()
		var pid int
		m.waitFor(20*time.Second, "generation "+strconv.Itoa(gen)+" alone", func() bool {
			st := m.status()
			if len(st.Workers) != 1 || st.Workers[0].Generation != gen || st.Workers[0].State != "active" {
				return false
			}
			pid = st.Workers[0].PID
			return true
		})
		testbin.WantPassedSocketExec(t, gen, pid, "web", trampolined)
		if got := get(t, addr, "/"); !strings.Contains(got, "(pid "+strconv.Itoa(pid)+",") {
			t.Fatalf("generation %d (pid %d) answered %q", gen, pid, got)
		}
	}
	reload := func() {
		t.Helper()
		if _, errOut, code := cli(t, nil, "reload", "--control", ctl); code != 0 {
			t.Fatalf("reload: exit %d: %s", code, errOut)
		}
	}
	check(1, true)
	reload()
	check(2, false)
	deploy(t, second, bin)
	m.waitFor(30*time.Second, "an upgrade once the reload has ended", func() bool {
		_, errOut, code := cli(t, nil, "upgrade", "--control", ctl)
		if code != 0 && !strings.Contains(errOut, "is still followed") {
			t.Fatalf("upgrade: exit %d: %s", code, errOut)
		}
		return code == 0
	})
	reload()
	check(3, false)
	if _, errOut, code := cli(t, nil, "stop", "--control", ctl); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, errOut)
	}
	if code := m.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("the master exited %d", code)
	}
}
