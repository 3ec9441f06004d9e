package deploy_test

import (
	"github.com/recluster-go/recluster/internal/testbin"

	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// machine is a booted systemd-nspawn container: a real systemd as PID 1,
// on an overlay of the cached rootfs (nothing written survives it), with
// only a loopback network of its own.
type machine struct {
	nspawn *exec.Cmd
	exited chan struct{}
	leader int    // the container's PID 1, as a host pid
	bin    string // the host directory bound on /usr/local/bin
	log    *testbin.Buffer
	// listening is what each unit listened on (for "same address").
	listening map[string]string
}

// bootMachine boots the rootfs and waits until the boot is over. The
// cleanup powers it off (SIGTERM to nspawn), kills its pid namespace if
// that takes too long, and removes the cgroups nspawn made.
func bootMachine(t *testing.T, root string) *machine {
	t.Helper()
	needCommands(t, map[string]string{"systemd-nspawn": "systemd-container", "nsenter": "util-linux"})
	m := &machine{bin: t.TempDir(), log: &testbin.Buffer{}, exited: make(chan struct{}), listening: map[string]string{}}
	if err := os.Chmod(m.bin, 0o755); err != nil { // the service's user runs what is in it
		t.Fatal(err)
	}
	recluster, hello := staticBinaries(t)
	copyFile(t, recluster, filepath.Join(m.bin, "recluster"), 0o755)
	copyFile(t, hello, filepath.Join(m.bin, "hello"), 0o755)
	copyFile(t, hello, filepath.Join(m.bin, "hello.good"), 0o755)
	cgroupsBefore := nspawnCgroups()

	m.nspawn = exec.Command("systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
		"--private-network", "--volatile=overlay", "--console=read-only",
		"--directory", root, "--machine", fmt.Sprintf("recluster-ci-%d", os.Getpid()),
		"--bind", m.bin+":/usr/local/bin")
	m.nspawn.Stdout, m.nspawn.Stderr = m.log, m.log
	if err := m.nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.nspawn.Wait(); close(m.exited) }()
	t.Cleanup(func() {
		m.nspawn.Process.Signal(syscall.SIGTERM) // nspawn asks the container's systemd to power off
		select {
		case <-m.exited:
		case <-time.After(60 * time.Second):
			t.Errorf("the container did not power off within 60s: killing its pid namespace")
			if m.leader > 0 {
				syscall.Kill(m.leader, syscall.SIGKILL)
			}
			m.nspawn.Process.Kill()
			<-m.exited
		}
		removeNewCgroups(t, cgroupsBefore)
		if t.Failed() {
			t.Logf("systemd-nspawn's output:\n%s", m.log.String())
		}
	})
	waitUntil(t, 30*time.Second, "the container's systemd to start", func() (bool, string) {
		select {
		case <-m.exited:
			t.Fatalf("systemd-nspawn exited: %v\n%s", m.nspawn.ProcessState, m.log.String())
		default:
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", m.nspawn.Process.Pid, m.nspawn.Process.Pid))
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "systemd" {
				m.leader = pid
				return true, ""
			}
		}
		return false, "children " + string(b)
	})
	waitUntil(t, 30*time.Second, "the container's systemd to listen", func() (bool, string) {
		_, err := os.Stat(fmt.Sprintf("/proc/%d/root/run/systemd/private", m.leader))
		return err == nil, fmt.Sprint(err)
	})
	out, err := m.exec(60*time.Second, "systemctl", "is-system-running", "--wait")
	if s := strings.TrimSpace(out); err != nil && s != "degraded" {
		t.Fatalf("boot: systemctl is-system-running: %s %v", s, err)
	}
	if s := strings.TrimSpace(out); s == "degraded" {
		failed, _ := m.exec(10*time.Second, "systemctl", "--failed", "--no-legend")
		t.Logf("the container booted degraded; failed units (none of them ours):\n%s", failed)
	}
	version, _ := m.exec(10*time.Second, "systemctl", "--version")
	t.Logf("booted %s", strings.SplitN(version, "\n", 2)[0])
	return m
}

// exec runs a command inside the container (all its namespaces).
func (m *machine) exec(timeout time.Duration, args ...string) (string, error) {
	return runErr(timeout, "nsenter", append([]string{"--target", strconv.Itoa(m.leader),
		"--mount", "--uts", "--ipc", "--net", "--pid", "--"}, args...)...)
}

// must runs a command inside the container and fails the test if it fails.
func (m *machine) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := m.exec(2*time.Minute, args...)
	if err != nil {
		t.Fatalf("in the container: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// writeFile writes a file into the container's filesystem.
func (m *machine) writeFile(t *testing.T, path, text string) {
	t.Helper()
	full := filepath.Join(fmt.Sprintf("/proc/%d/root", m.leader), path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// show returns properties of a unit.
func (m *machine) show(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	out := m.must(t, "systemctl", "show", unit, "-p", strings.Join(props, ","))
	values := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			values[k] = v
		}
	}
	return values
}

// client makes new connections in the container's network namespace.
func (m *machine) client(timeout time.Duration) *http.Client {
	return netnsClient(fmt.Sprintf("/proc/%d/ns/net", m.leader), timeout)
}

// get fetches url in the container and returns the body of a 200.
func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return string(body), err
}

// processes returns the pids of the container's processes named name.
func (m *machine) processes(t *testing.T, names ...string) []string {
	t.Helper()
	var pids []string
	for _, line := range strings.Split(m.must(t, "ps", "-e", "-o", "pid=,comm="), "\n") {
		if f := strings.Fields(line); len(f) == 2 && slices.Contains(names, f[1]) {
			pids = append(pids, f[0])
		}
	}
	return pids
}

// journal returns the container's journal since boot, one entry a line.
func (m *machine) journal(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	out := m.must(t, append([]string{"journalctl", "-b", "-o", "json", "--no-pager"}, args...)...)
	var entries []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			entries = append(entries, e)
		}
	}
	return entries
}

func message(e map[string]any) string { s, _ := e["MESSAGE"].(string); return s }

// installUnit writes a shipped unit into the container with only the
// documented placeholders substituted: the program, and --workers.
func (m *machine) installUnit(t *testing.T, name string, edit func(string) string) {
	t.Helper()
	text := strings.NewReplacer(
		"/usr/local/bin/your-server", "/usr/local/bin/hello",
		"--workers 4", "--workers 2",
	).Replace(readFile(t, name))
	if edit != nil {
		text = edit(text)
	}
	m.writeFile(t, "/etc/systemd/system/"+name, text)
}

// TestPlatformSystemd runs the shipped units under a real systemd.
func TestPlatformSystemd(t *testing.T) {
	platformTests(t)
	start := time.Now()
	cache := cacheDir(t)
	lockCache(t, cache)
	m := bootMachine(t, rootfs(t, cache))
	t.Logf("cache and boot took %v", time.Since(start).Round(100*time.Millisecond))
	m.must(t, "useradd", "--system", "--no-create-home", "recluster") // docs/operations.md: the account must exist
	// Debug logging makes systemd log each notification it gets, and
	// from which pid.
	m.must(t, "systemd-analyze", "log-level", "debug")
	c := m.client(10 * time.Second)

	t.Run("recluster.service", func(t *testing.T) {
		m.installUnit(t, "recluster.service", unitEdit)
		m.must(t, "systemctl", "daemon-reload")
		checkServiceLifecycle(t, m, c, "recluster.service", "/run/recluster/control.sock")
	})
	t.Run("recluster.socket", func(t *testing.T) {
		m.installUnit(t, "recluster.socket", unitEdit)
		m.installUnit(t, "recluster-socket.service", unitEdit)
		m.must(t, "systemctl", "daemon-reload")
		checkSocketActivation(t, m, c)
	})
	t.Run("same address", func(t *testing.T) {
		// The two recipes are one service two ways: they must listen on
		// the same families.
		bound, passed := m.listening["recluster.service"], m.listening["recluster.socket"]
		if bound == "" || bound != passed {
			t.Errorf("recluster.service listens on %q, recluster.socket on %q", bound, passed)
		}
	})
	t.Run("notify-reload", func(t *testing.T) {
		version := m.must(t, "systemctl", "--version")
		n, _ := strconv.Atoi(strings.Fields(version)[1])
		if n < 253 {
			// Not a skip: this is the answer for this systemd.
			t.Logf("systemd %d has no Type=notify-reload (253 and later): not applicable here", n)
			return
		}
		m.installUnit(t, "recluster.service", func(s string) string {
			s = unitEdit(s)
			s = strings.Replace(s, "Type=notify\n", "Type=notify-reload\n", 1)
			return strings.Replace(s, "ExecReload=/bin/kill -HUP $MAINPID\n", "", 1)
		})
		m.must(t, "systemctl", "daemon-reload")
		checkServiceLifecycle(t, m, c, "recluster.service", "/run/recluster/control.sock")
	})
	t.Run("NotifyAccess=main", func(t *testing.T) {
		var got, rejected []string
		for _, e := range m.journal(t, "_PID=1") {
			msg := message(e)
			if strings.Contains(msg, "recluster") && strings.Contains(msg, "notification message") {
				got = append(got, msg)
			}
			if strings.Contains(msg, "reception only permitted") || strings.Contains(msg, "notification message from PID") && strings.Contains(msg, "but") {
				rejected = append(rejected, msg)
			}
		}
		if len(got) == 0 {
			t.Error("systemd logged no notification from recluster: debug logging was not on?")
		}
		if len(rejected) > 0 {
			t.Errorf("systemd rejected notifications:\n%s", strings.Join(rejected, "\n"))
		}
		t.Logf("%d notifications from the main pids, none rejected", len(got))
	})
	t.Logf("the systemd tests took %v", time.Since(start).Round(100*time.Millisecond))
}

// unitEdit is the test's only other change: none, unless
// RECLUSTER_PLATFORM_BREAK asks for a broken unit.
var unitEdit = platformBreak

// checkServiceLifecycle: start, reload, an aborted reload, kill -9 of the
// master and stop, for a service that binds its own socket.
func checkServiceLifecycle(t *testing.T, m *machine, c *http.Client, unit, control string) {
	base := "http://127.0.0.1:8080/"
	m.must(t, "systemctl", "start", unit)
	mainPID := checkStarted(t, m, unit)
	listenAddress(t, m, unit)
	if body, err := get(c, base); err != nil || !strings.Contains(body, "generation 1") {
		t.Fatalf("right after systemctl start: GET / = %q, %v; want generation 1", body, err)
	}
	if body, err := get(c, "http://127.0.0.1:9100/readyz"); err != nil {
		t.Fatalf("right after systemctl start: /readyz = %q, %v", body, err)
	}

	// systemctl reload: the unit goes running -> reload -> running while
	// the new generation starts (slowed by 2s to be seen), then serves it.
	slowProgram(t, m, 3)
	states := watchSubState(t, m, unit)
	m.must(t, "systemctl", "reload", unit)
	waitUntil(t, 30*time.Second, "generation 2 to serve", func() (bool, string) {
		body, err := get(c, base)
		return err == nil && strings.Contains(body, "generation 2"), fmt.Sprint(body, err)
	})
	waitUntil(t, 30*time.Second, "the unit to be running again", func() (bool, string) {
		s := m.show(t, unit, "SubState")["SubState"]
		return s == "running", s
	})
	seen := states()
	t.Logf("SubState during systemctl reload (ExecReload=/bin/kill): %v", seen)
	if i := slices.IndexFunc(seen, func(s string) bool { return strings.HasPrefix(s, "reload") }); i < 1 || i+1 >= len(seen) || !strings.HasPrefix(seen[i+1], "running") || !strings.HasPrefix(seen[0], "running") {
		t.Errorf("SubState during systemctl reload went %v, want running -> reload -> running", seen)
	}
	if s := m.show(t, unit, "StatusText")["StatusText"]; s != "generation 2 active" {
		t.Errorf("StatusText=%q after the reload, want \"generation 2 active\"", s)
	}
	restoreProgram(t, m)

	// An aborted reload, with the ExecReload= that docs/operations.md gives
	// for it: systemctl reload fails and the old generation serves.
	m.writeFile(t, "/etc/systemd/system/"+unit+".d/reload.conf",
		"[Service]\nExecReload=\nExecReload=/usr/local/bin/recluster reload --control "+control+"\n")
	m.must(t, "systemctl", "daemon-reload")
	// It waits for the outcome: the unit is in "reload" while the new
	// generation starts (with kill, systemd 252 leaves "reload" when kill
	// exits if the master's RELOADING=1 came first).
	slowProgram(t, m, 3)
	states = watchSubState(t, m, unit)
	m.must(t, "systemctl", "reload", unit)
	waitUntil(t, 30*time.Second, "the unit to be running again", func() (bool, string) {
		s := m.show(t, unit, "SubState")["SubState"]
		return s == "running", s
	})
	seen = states()
	t.Logf("SubState during systemctl reload (ExecReload=recluster reload): %v", seen)
	if i := slices.Index(seen, "reload(long)"); i < 1 || i+1 >= len(seen) || !strings.HasPrefix(seen[i+1], "running") {
		t.Errorf("SubState during systemctl reload went %v, want running -> reload (while the new generation starts: its workers count as listening after 1s) -> running", seen)
	}
	if body, err := get(c, base); err != nil || !strings.Contains(body, "generation 3") {
		t.Errorf("after systemctl reload returned: GET / = %q, %v; want generation 3", body, err)
	}
	brokenProgram(t, m)
	out, err := m.exec(time.Minute, "systemctl", "reload", unit)
	if err == nil {
		t.Errorf("systemctl reload of a broken program succeeded:\n%s", out)
	}
	if body, err := get(c, base); err != nil || !strings.Contains(body, "generation 3") {
		t.Errorf("after the aborted reload: GET / = %q, %v; want the old generation 3", body, err)
	}
	if p := m.show(t, unit, "ActiveState", "SubState", "MainPID"); p["ActiveState"] != "active" || p["SubState"] != "running" || p["MainPID"] != mainPID {
		t.Errorf("after the aborted reload: %v, want active running with MainPID %s", p, mainPID)
	}
	journal := m.must(t, "journalctl", "-b", "-u", unit, "-o", "cat", "--no-pager")
	if !strings.Contains(journal, "aborted") {
		t.Errorf("the journal does not say the reload was aborted")
	}
	restoreProgram(t, m)
	m.must(t, "rm", "-r", "/etc/systemd/system/"+unit+".d")
	m.must(t, "systemctl", "daemon-reload")

	// kill -9 of the master: Restart=on-failure starts it again, and no
	// worker of the killed master is left.
	workers := childrenOf(t, m, mainPID)
	if len(workers) != 2 {
		t.Fatalf("master %s has workers %v, want 2", mainPID, workers)
	}
	restarts := m.show(t, unit, "NRestarts")["NRestarts"]
	m.must(t, "kill", "-9", mainPID)
	waitUntil(t, 60*time.Second, "the unit to restart", func() (bool, string) {
		p := m.show(t, unit, "ActiveState", "SubState", "MainPID", "NRestarts")
		return p["SubState"] == "running" && p["MainPID"] != mainPID && p["MainPID"] != "0" && p["NRestarts"] != restarts, fmt.Sprint(p)
	})
	left := slices.DeleteFunc(m.processes(t, "hello", "recluster"), func(pid string) bool { return !slices.Contains(workers, pid) })
	if len(left) > 0 {
		t.Errorf("workers %v of the killed master are still there", left)
	}
	newMain := checkStarted(t, m, unit)
	if body, err := get(c, base); err != nil || !strings.Contains(body, "generation 1") {
		t.Errorf("after the restart: GET / = %q, %v; want the new master's generation 1", body, err)
	}

	// systemctl stop: succeeds, and nothing is left.
	m.must(t, "systemctl", "stop", unit)
	if p := m.show(t, unit, "ActiveState", "Result", "ExecMainStatus"); p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainStatus"] != "0" {
		t.Errorf("after systemctl stop: %v, want inactive, success, status 0", p)
	}
	if left := m.processes(t, "hello", "recluster"); len(left) > 0 {
		t.Errorf("after systemctl stop, processes %v are left (master was %s)", left, newMain)
	}
}

// listenAddress returns the local address of what listens on port 8080,
// as ss shows it (0.0.0.0:8080 is IPv4 only, *:8080 both), and keeps it
// in m.listening[unit].
func listenAddress(t *testing.T, m *machine, unit string) string {
	t.Helper()
	f := strings.Fields(m.must(t, "ss", "-Htln", "sport = 8080"))
	if len(f) < 4 {
		t.Fatalf("nothing listens on port 8080: %q", f)
	}
	t.Logf("%s: listening on %s", unit, f[3])
	m.listening[unit] = f[3]
	return f[3]
}

// checkStarted checks that the unit is active and running, that systemd
// took READY=1 from the main pid, and that the unit became active only
// after it (a Type=simple unit is active before the master is ready).
// It returns the main pid.
func checkStarted(t *testing.T, m *machine, unit string) string {
	t.Helper()
	p := m.show(t, unit, "ActiveState", "SubState", "MainPID", "StatusText", "InvocationID")
	if p["ActiveState"] != "active" || p["SubState"] != "running" {
		t.Fatalf("%s after start: %v, want active running", unit, p)
	}
	if !strings.HasSuffix(p["StatusText"], "workers active (generation 1)") {
		t.Errorf("StatusText=%q, want \"2 workers active (generation 1)\"", p["StatusText"])
	}
	if comm := strings.TrimSpace(m.must(t, "ps", "-o", "comm=", "-p", p["MainPID"])); comm != "recluster" {
		t.Errorf("MainPID %s is %q, want the recluster master", p["MainPID"], comm)
	}
	ready, started := -1, -1
	for i, e := range m.journal(t, "_PID=1", "INVOCATION_ID="+p["InvocationID"]) {
		msg := message(e)
		if strings.HasPrefix(msg, unit+": Got notification message from PID "+p["MainPID"]+" (READY=1") && ready < 0 {
			ready = i
		}
		if strings.HasPrefix(msg, "Started ") && started < 0 {
			started = i
		}
	}
	switch {
	case ready < 0:
		t.Errorf("the journal has no READY=1 from the main pid %s", p["MainPID"])
	case started < 0:
		t.Errorf("the journal has no \"Started\" for %s", unit)
	case started < ready:
		t.Errorf("systemd reported %s started before the master's READY=1: the start did not wait for the workers", unit)
	}
	return p["MainPID"]
}

// watchSubState records the unit's SubState every 20ms, in changes, until
// the returned function is called. A state that was seen for 500ms or more
// is written STATE(long), to tell the master's RELOADING=1 ... READY=1
// from the moment ExecReload= runs.
func watchSubState(t *testing.T, m *machine, unit string) func() []string {
	type run struct {
		state       string
		first, last time.Time
	}
	sample := func() string {
		out, _ := m.exec(10*time.Second, "systemctl", "show", "-P", "SubState", unit)
		return strings.TrimSpace(out)
	}
	runs := []run{{sample(), time.Now(), time.Now()}}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			s, now := sample(), time.Now()
			if last := &runs[len(runs)-1]; s == last.state {
				last.last = now
			} else if s != "" {
				runs = append(runs, run{s, now, now})
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() []string {
		close(stop)
		<-done
		var states []string
		for _, r := range runs {
			if r.last.Sub(r.first) >= 500*time.Millisecond {
				r.state += "(long)"
			}
			states = append(states, r.state)
		}
		return states
	}
}

// The program in /usr/local/bin/hello is what a reload starts anew.
func slowProgram(t *testing.T, m *machine, seconds int) {
	writeProgram(t, m, fmt.Sprintf("#!/bin/sh\nsleep %d\nexec /usr/local/bin/hello.good \"$@\"\n", seconds))
}

func brokenProgram(t *testing.T, m *machine) {
	writeProgram(t, m, "#!/bin/sh\necho 'hello: broken build' >&2\nexit 3\n")
}

func restoreProgram(t *testing.T, m *machine) {
	copyFile(t, filepath.Join(m.bin, "hello.good"), filepath.Join(m.bin, "hello"), 0o755)
}

func writeProgram(t *testing.T, m *machine, script string) {
	t.Helper()
	tmp := filepath.Join(m.bin, "hello.new")
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.bin, "hello")); err != nil {
		t.Fatal(err)
	}
}

// childrenOf returns the pids of the container's children of pid.
func childrenOf(t *testing.T, m *machine, pid string) []string {
	t.Helper()
	var kids []string
	for _, line := range strings.Split(m.must(t, "ps", "-e", "-o", "pid=,ppid="), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == pid {
			kids = append(kids, f[0])
		}
	}
	return kids
}

// checkSocketActivation: the first connection starts the service and is
// served; 300 connections across two restarts all succeed; stop leaves
// nothing.
func checkSocketActivation(t *testing.T, m *machine, c *http.Client) {
	const svc = "recluster-socket.service"
	m.must(t, "systemctl", "start", "recluster.socket")
	if s := m.show(t, svc, "ActiveState")["ActiveState"]; s != "inactive" {
		t.Fatalf("%s is %s before the first connection, want inactive", svc, s)
	}
	listenAddress(t, m, "recluster.socket")
	body, err := get(c, "http://127.0.0.1:8080/")
	if err != nil || !strings.Contains(body, "hello from worker") {
		t.Fatalf("first connection: %q, %v", body, err)
	}
	// A worker may serve before every slot is ready, so before READY=1.
	waitUntil(t, 30*time.Second, svc+" to be active", func() (bool, string) {
		p := m.show(t, svc, "ActiveState", "SubState")
		return p["ActiveState"] != "activating", fmt.Sprint(p)
	})
	checkStarted(t, m, svc)
	if n := m.show(t, svc, "StatusText")["StatusText"]; !strings.Contains(n, "generation 1") {
		t.Errorf("StatusText=%q", n)
	}

	// 300 requests, each on a new connection and never retried, from 4
	// clients, while the service restarts twice.
	const total, clients = 300, 4
	var mu sync.Mutex
	var done int
	var failures []string
	var wg sync.WaitGroup
	next := make(chan int)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := m.client(60 * time.Second)
			for range next {
				_, err := get(c, "http://127.0.0.1:8080/")
				mu.Lock()
				done++
				if err != nil {
					failures = append(failures, err.Error())
				}
				mu.Unlock()
			}
		}()
	}
	restarted := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 2 && err == nil; i++ {
			time.Sleep(300 * time.Millisecond)
			var out string
			if out, err = m.exec(2*time.Minute, "systemctl", "restart", svc); err != nil {
				err = fmt.Errorf("%v: %s", err, out)
			}
		}
		restarted <- err
	}()
	for i := range total {
		next <- i
		time.Sleep(5 * time.Millisecond) // spread the requests over both restarts
	}
	close(next)
	wg.Wait()
	if err := <-restarted; err != nil {
		t.Fatalf("systemctl restart: %v", err)
	}
	t.Logf("%d requests across two restarts, %d failed", done, len(failures))
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed across two restarts: %v", len(failures), total, failures)
	}

	m.must(t, "systemctl", "stop", svc, "recluster.socket")
	if p := m.show(t, svc, "ActiveState", "Result"); p["ActiveState"] != "inactive" || p["Result"] != "success" {
		t.Errorf("after systemctl stop: %v, want inactive, success", p)
	}
	if left := m.processes(t, "hello", "recluster"); len(left) > 0 {
		t.Errorf("after systemctl stop, processes %v are left", left)
	}
}

// nspawnCgroups lists the top-level cgroups of the hierarchies nspawn
// writes to.
func nspawnCgroups() map[string]bool {
	seen := map[string]bool{}
	for _, h := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"} {
		entries, _ := os.ReadDir(h)
		for _, e := range entries {
			if e.IsDir() {
				seen[filepath.Join(h, e.Name())] = true
			}
		}
	}
	return seen
}

// removeNewCgroups removes the cgroups that appeared since before, once
// they are empty (nspawn leaves its "payload" and "supervisor" behind).
func removeNewCgroups(t *testing.T, before map[string]bool) {
	for dir := range nspawnCgroups() {
		if before[dir] {
			continue
		}
		var dirs []string
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil {
				t.Errorf("cannot remove the container's cgroup %s: %v", dirs[i], err)
			}
		}
	}
}
