package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster/internal/control"
)

// A program written for systemd gets its socket through go-systemd's
// activation.Listeners, says READY=1 through its own NOTIFY_SOCKET, and
// none of it reaches its children.
func TestListenNotifyAndNoLeak(t *testing.T) {
	m := startMaster(t, "-w", "2", "--listen", "web=127.0.0.1:0", "--ready-when", "ready", "--prefix",
		"--env", "SDWORKER_NOTIFY=1", "--env", "SDWORKER_READY_DELAY=200ms", "--", sdworkerBin)
	st := m.status()
	addr := m.httpAddr()
	pids := map[string]bool{}
	for _, w := range st.Workers {
		pids[strconv.Itoa(w.PID)] = true
		if !strings.HasPrefix(w.Status, "serving pid=") {
			t.Errorf("worker %d: STATUS= from sd_notify not shown: %q", w.Slot, w.Status)
		}
		if !w.Ready {
			t.Errorf("worker %d not ready", w.Slot)
		}
	}
	body := get(t, addr, "/")
	pid, _, _ := strings.Cut(strings.TrimPrefix(body, "pid="), " ")
	if !pids[pid] {
		t.Errorf("answer %q is not from a worker %v", body, pids)
	}
	info := get(t, addr, "/info")
	_, infoPID, _ := strings.Cut(info, " pid=")
	if !pids[infoPID] || !strings.Contains(info, "LISTEN_PID="+infoPID+" ") || !strings.Contains(info, "LISTEN_FDS=1 LISTEN_FDNAMES=web ") {
		t.Errorf("worker saw %q", info)
	}
	env := get(t, addr, "/env")
	for _, k := range []string{"LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "NOTIFY_SOCKET="} {
		if strings.Contains(env, k) {
			t.Errorf("the worker's child inherited %s:\n%s", k, env)
		}
	}
	if !strings.Contains(env, "WORKER_ID=") {
		t.Errorf("the worker's child did not get the ordinary environment:\n%s", env)
	}
	m.waitFor(5*time.Second, "prefixed worker output", func() bool {
		return strings.Contains(m.stdout.String(), "] sdworker serving pid=")
	})
	for _, line := range strings.Split(strings.TrimSpace(m.stdout.String()), "\n") {
		if !strings.HasPrefix(line, "[") {
			t.Errorf("worker output line without its [slot pid] label: %q", line)
		}
	}
	m.signal(syscall.SIGTERM)
	if code := m.waitExit(15 * time.Second); code != 0 {
		t.Fatalf("exit status %d after TERM, want 0", code)
	}
}

func TestReload(t *testing.T) {
	script := workerScript(t, "export SDWORKER_NOTIFY=1")
	m := startMaster(t, "-w", "2", "--listen", "127.0.0.1:0", "--ready-when", "ready", "--ready-timeout", "2s", "--", script)
	addr := m.httpAddr()
	wantGen := 1
	nextGen := func(how string) {
		wantGen++
		st := m.waitAllActive(20 * time.Second)
		m.waitFor(20*time.Second, fmt.Sprintf("generation %d after %s", wantGen, how), func() bool {
			st = m.status()
			_, ok := activeSet(st)
			return ok && st.Generation == wantGen
		})
		if got := get(t, addr, "/"); !strings.Contains(got, "gen="+strconv.Itoa(wantGen)) {
			t.Fatalf("after %s: answer %q, want generation %d", how, got, wantGen)
		}
	}
	m.signal(syscall.SIGHUP)
	nextGen("HUP")
	m.signal(syscall.SIGUSR2)
	nextGen("USR2")
	out, errOut, code := cli(t, nil, "reload", "--control", m.ctl)
	if code != 0 || !strings.Contains(out, "generation 4 is active") {
		t.Fatalf("reload: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	nextGen("recluster reload")

	before, _ := activeSet(m.status())
	// A new generation that crashes.
	writeScript(t, script, "echo broken >&2; exit 3")
	out, errOut, code = cli(t, nil, "reload", "--control", m.ctl)
	if code != 1 || !strings.Contains(errOut, "reload aborted") || !strings.Contains(errOut, "exited with code 3") {
		t.Fatalf("reload to a crashing program: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A new generation that never says READY=1.
	writeScript(t, script, sdworkerScript("export SDWORKER_NOTIFY=0"))
	out, errOut, code = cli(t, nil, "reload", "--control", m.ctl)
	if code != 1 || !strings.Contains(errOut, "not ready within 2s") {
		t.Fatalf("reload to a program that is never ready: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	st := m.waitAllActive(20 * time.Second)
	after, _ := activeSet(st)
	if fmt.Sprint(after) != fmt.Sprint(before) || st.Generation != wantGen {
		t.Fatalf("aborted reloads replaced workers: before %v, after %v (generation %d)", before, after, st.Generation)
	}
	for i := 0; i < 5; i++ {
		if got := get(t, addr, "/"); !strings.Contains(got, "gen="+strconv.Itoa(wantGen)) {
			t.Fatalf("after aborted reloads: answer %q", got)
		}
	}
	if st.Reloads["aborted"] != 2 || st.Reloads["committed"] != 3 {
		t.Errorf("reload counts %v", st.Reloads)
	}
	// --no-wait returns before the reload is done. Aborted reloads used
	// generations 5 and 6.
	wantGen = 6
	writeScript(t, script, sdworkerScript("export SDWORKER_NOTIFY=1"))
	if out, errOut, code := cli(t, nil, "reload", "--no-wait", "--control", m.ctl); code != 0 || !strings.Contains(out, "reload started") {
		t.Fatalf("reload --no-wait: status %d, %q %q", code, out, errOut)
	}
	nextGen("recluster reload --no-wait")
}

func TestStatusScaleStop(t *testing.T) {
	m := startMaster(t, "-w", "2", "--listen", "127.0.0.1:0", "--ready-when", "started", "--", sdworkerBin)
	ctl := []string{"--control", m.ctl}

	out, errOut, code := cli(t, nil, append([]string{"status"}, ctl...)...)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	header := ""
	for i, l := range lines {
		if strings.HasPrefix(l, "SLOT") {
			header = l
			if len(lines)-i-1 != 2 {
				t.Errorf("want 2 worker rows:\n%s", out)
			}
		}
	}
	if strings.Join(strings.Fields(header), " ") != "SLOT PID GEN STATE UPTIME RESTARTS RSS CPU STATUS" {
		t.Errorf("status header %q in:\n%s", header, out)
	}
	if !strings.Contains(out, "active") || !strings.Contains(out, "%") {
		t.Errorf("status table:\n%s", out)
	}
	out, _, code = cli(t, nil, append([]string{"status", "--json"}, ctl...)...)
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
		t.Fatalf("status --json: %v %d\n%s", err, code, out)
	}
	if st.Slots != 2 || len(st.Workers) != 2 || st.MasterPID != m.cmd.Process.Pid || st.Workers[0].RSSBytes <= 0 {
		t.Errorf("status --json: %+v", st)
	}

	scale := func(arg string, want int) {
		t.Helper()
		out, errOut, code := cli(t, nil, append([]string{"scale", arg}, ctl...)...)
		if code != 0 {
			t.Fatalf("scale %s: %d %s %s", arg, code, out, errOut)
		}
		st := m.waitAllActive(20 * time.Second)
		if st.Slots != want {
			t.Fatalf("scale %s: %d slots, want %d", arg, st.Slots, want)
		}
		for _, w := range st.Workers {
			if w.Slot >= want {
				t.Fatalf("scale %s: slot %d still there", arg, w.Slot)
			}
		}
	}
	scale("3", 3)
	scale("+2", 5)
	scale("-3", 2)
	scale("1", 1)
	if _, errOut, code := cli(t, nil, append([]string{"scale", "-1"}, ctl...)...); code != 1 || !strings.Contains(errOut, "minimum is 1") {
		t.Errorf("scale -1 from 1: %d %q", code, errOut)
	}

	m.signal(syscall.SIGTTIN)
	m.waitFor(10*time.Second, "TTIN to add a worker", func() bool { st := m.status(); _, ok := activeSet(st); return ok && st.Slots == 2 })
	m.signal(syscall.SIGTTIN)
	m.waitFor(10*time.Second, "TTIN to add a worker", func() bool { st := m.status(); _, ok := activeSet(st); return ok && st.Slots == 3 })
	m.signal(syscall.SIGTTOU)
	m.waitFor(10*time.Second, "TTOU to remove a worker", func() bool { st := m.status(); _, ok := activeSet(st); return ok && st.Slots == 2 })

	out, errOut, code = cli(t, nil, append([]string{"stop"}, ctl...)...)
	if code != 0 || strings.TrimSpace(out) != "stopped" {
		t.Fatalf("stop: %d %q %q", code, out, errOut)
	}
	if code := m.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("master exit status %d after stop", code)
	}
	if _, err := os.Stat(m.ctl); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}

func TestInterruptStops(t *testing.T) {
	m := startMaster(t, "-w", "1", "--listen", "127.0.0.1:0", "--", sdworkerBin)
	m.signal(syscall.SIGINT)
	if code := m.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d after INT, want 0", code)
	}
}

// Two masters cannot share a control socket; a stale one is replaced.
func TestControlSocketInUse(t *testing.T) {
	m := startMaster(t, "-w", "1", "--listen", "127.0.0.1:0", "--", sdworkerBin)
	_, errOut, code := cli(t, nil, "run", "--control", m.ctl, "--listen", "127.0.0.1:0", "--", sdworkerBin)
	if code != 1 || !strings.Contains(errOut, "in use by another running recluster master") {
		t.Fatalf("second master on one socket: %d %q", code, errOut)
	}
	m.status() // the first one is unharmed

	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	m2 := startProcess(t, stale, []string{reclusterBin, "run", "-w", "1", "--control", stale, "--listen", "127.0.0.1:0", "--", sdworkerBin}, nil)
	m2.waitControl()
	m2.signal(syscall.SIGTERM)
	if code := m2.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
}

// Under systemd-socket-activate, the master takes the socket it is given
// and tells its NOTIFY_SOCKET about readiness, reloads and stopping.
func TestSocketActivation(t *testing.T) {
	activate := socketActivatePath(t)
	dir := t.TempDir()
	notifyPath := filepath.Join(dir, "notify.sock")
	expect := fakeSystemdNotify(t, notifyPath)

	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	ctl := filepath.Join(dir, "ctl.sock")
	m := startProcess(t, ctl, []string{activate, "-l", addr, "--fdname=web", "-E", "NOTIFY_SOCKET=" + notifyPath,
		reclusterBin, "run", "--control", ctl, "-w", "2", "--listen", "web=" + addr, "--ready-when", "ready",
		"--env", "SDWORKER_NOTIFY=1", "--", sdworkerBin}, nil)
	// systemd-socket-activate starts the master on the first connection.
	first := make(chan string, 1)
	go func() {
		// Retried until systemd-socket-activate listens: a refused
		// connection never reaches the master.
		var resp *http.Response
		var err error
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			resp, err = httpClient.Get("http://" + addr + "/")
			if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			first <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		first <- string(b)
	}()
	m.waitControl()
	if got := <-first; !strings.Contains(got, "gen=1") {
		t.Errorf("the connection that activated the master got %q", got)
	}
	m.waitAllActive(20 * time.Second)
	ready := expect("READY=1")
	if !strings.Contains(ready, "MAINPID="+strconv.Itoa(m.cmd.Process.Pid)) {
		t.Errorf("READY message %q does not keep the master (pid %d) as the main pid", ready, m.cmd.Process.Pid)
	}
	st := m.status()
	if len(st.Addrs) != 1 || st.Addrs[0] != "tcp:"+addr {
		t.Errorf("master serves %v, want the activated %s", st.Addrs, addr)
	}
	if got := get(t, addr, "/"); !strings.Contains(got, "gen=1") {
		t.Errorf("answer %q", got)
	}
	info := get(t, addr, "/info")
	if strings.Contains(info, notifyPath) || !strings.Contains(info, "LISTEN_FDNAMES=web ") {
		t.Errorf("worker saw the master's systemd environment: %q", info)
	}
	if _, errOut, code := cli(t, nil, "reload", "--control", ctl); code != 0 {
		t.Fatalf("reload: %d %s", code, errOut)
	}
	expect("RELOADING=1")
	expect("READY=1")
	if got := get(t, addr, "/"); !strings.Contains(got, "gen=2") {
		t.Errorf("after reload: answer %q", got)
	}
	m.signal(syscall.SIGTERM)
	expect("STOPPING=1")
	if code := m.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
}

// fakeSystemdNotify listens on path as systemd's NOTIFY_SOCKET and returns
// a function that waits for a message containing want and returns it.
func fakeSystemdNotify(t *testing.T, notifyPath string) func(want string) string {
	t.Helper()
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notify.Close() })
	messages := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				close(messages)
				return
			}
			messages <- string(buf[:n])
		}
	}()
	expect := func(want string) string {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case msg, ok := <-messages:
				if !ok {
					t.Fatalf("notify socket closed while waiting for %s", want)
				}
				if strings.Contains(msg, want) {
					return msg
				}
			case <-timeout:
				t.Fatalf("no %s on the master's NOTIFY_SOCKET", want)
			}
		}
	}

	return expect
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// With --listen and the default readiness, a program that says nothing
// counts as listening only after --min-uptime: a deploy that dies at
// start-up is aborted and the old workers keep serving.
func TestDefaultReadinessSurvivesABrokenDeploy(t *testing.T) {
	script := workerScript(t, "")
	m := startMaster(t, "-w", "2", "--listen", "127.0.0.1:0", "--min-uptime", "500ms", "--", script)
	addr := m.httpAddr()
	before, _ := activeSet(m.status())
	writeScript(t, script, "sleep 0.1; echo broken >&2; exit 3")
	_, errOut, code := cli(t, nil, "reload", "--control", m.ctl)
	if code != 1 || !strings.Contains(errOut, "exited with code 3") {
		t.Fatalf("reload to a program that dies at start-up: status %d, stderr %q", code, errOut)
	}
	st := m.waitAllActive(20 * time.Second)
	if after, _ := activeSet(st); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a broken deploy replaced workers: before %v, after %v", before, after)
	}
	if got := get(t, addr, "/"); !strings.Contains(got, "gen=1") {
		t.Fatalf("after the aborted reload: answer %q", got)
	}
}
