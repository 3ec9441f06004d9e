package recluster_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

func TestBasicRequest(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 3})
	active := tc.ActiveWorkers()
	if len(active) != 3 {
		t.Fatalf("want 3 active workers, got %d", len(active))
	}
	for slot, w := range active {
		if w.ID() != slot || w.Generation() != 1 {
			t.Errorf("slot %d holds %v", slot, w)
		}
	}
	r := get(t, tc.url, "/")
	id, _ := strconv.Atoi(r.header.Get("X-Worker-Id"))
	if id < 0 || id > 2 {
		t.Fatalf("WORKER_ID %d is not in 0..2", id)
	}
	if pid, _ := strconv.Atoi(r.header.Get("X-Worker-Pid")); active[id].PID() != pid {
		t.Fatalf("answer from pid %d, but slot %d is pid %d", pid, id, active[id].PID())
	}
}

func TestArgsReachWorker(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 1, Env: []string{"GREETING=hello there"}}, "--", "alpha", "beta gamma")
	if r := get(t, tc.url, "/args"); r.body != "alpha beta gamma" {
		t.Fatalf("worker got args %q", r.body)
	}
	if r := get(t, tc.url, "/env?name=GREETING"); r.body != "hello there" {
		t.Fatalf("worker got GREETING=%q", r.body)
	}
	if r := get(t, tc.url, "/env?name=WORKER_ID"); r.body != "0" {
		t.Fatalf("worker got WORKER_ID=%q", r.body)
	}
}

// A server that listens late: with ReadyWhen=Started the new generation
// takes over before it listens; with Listening only after.
func TestStartedAgainstListening(t *testing.T) {
	for _, mode := range []recluster.ReadyWhen{recluster.Started, recluster.Listening} {
		t.Run(string(mode), func(t *testing.T) {
			tc := startCluster(t, recluster.Options{Workers: 1, ReadyWhen: mode}, "-delay", "300ms")
			tc.setMode(t, "late")
			if err := tc.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			tc.rec.waitN(t, 1, 5*time.Second, kind(recluster.EventReloadCommitted))
			listenedBeforeCommit := false
			for _, e := range tc.rec.all() {
				if e.Kind == recluster.EventListening && e.Generation == 2 {
					listenedBeforeCommit = true
				}
			}
			if want := mode == recluster.Listening; listenedBeforeCommit != want {
				t.Fatalf("ReadyWhen=%s: new worker listened before the reload committed: %v, want %v\n%s", mode, listenedBeforeCommit, want, tc.rec.dump())
			}
			tc.rec.waitN(t, 1, 10*time.Second, func(e recluster.Event) bool {
				return e.Kind == recluster.EventListening && e.Generation == 2
			})
			onlyGeneration(t, tc.url, "2")
		})
	}
}

func TestManualReady(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 2, ReadyWhen: recluster.Ready}, "-mode", "ready", "-delay", "300ms")
	tc.setMode(t, "ready")
	start := time.Now()
	if err := tc.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("reload committed after %v, before the workers said ready", took)
	}
	for _, w := range tc.ActiveWorkers() {
		if w.Generation() != 2 {
			t.Fatalf("slot %d still has generation %d", w.ID(), w.Generation())
		}
	}
}

func TestReadyTimeoutAbortsReload(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 2, ReadyWhen: recluster.Ready, ReadyTimeout: 500 * time.Millisecond}, "-mode", "ready")
	before := pids(tc.ActiveWorkers())
	tc.setMode(t, "never-ready")
	err := tc.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not ready within") || !strings.Contains(err.Error(), "slot") {
		t.Fatalf("want an error naming the slot and the ready timeout, got %v", err)
	}
	if after := pids(tc.ActiveWorkers()); !equalMaps(before, after) {
		t.Fatalf("active workers changed from %v to %v", before, after)
	}
	get(t, tc.url, "/")
}

func TestReloadToBrokenThenFixed(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 2})
	before := pids(tc.ActiveWorkers())
	tc.setMode(t, "broken")
	err := tc.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exited with code 1") || !strings.Contains(err.Error(), "slot ") {
		t.Fatalf("want an error that names the slot and the exit code, got %v", err)
	}
	if after := pids(tc.ActiveWorkers()); !equalMaps(before, after) {
		t.Fatalf("a failed reload changed the active workers from %v to %v", before, after)
	}
	for i := 0; i < 5; i++ {
		if g := get(t, tc.url, "/").header.Get("X-Generation"); g != "1" {
			t.Fatalf("answer from generation %s after a failed reload", g)
		}
	}
	tc.setMode(t, "ok")
	if err := tc.Reload(context.Background()); err != nil {
		t.Fatalf("reload to a fixed server: %v", err)
	}
	for slot, w := range tc.ActiveWorkers() {
		if w.PID() == before[slot] || w.Generation() != 3 {
			t.Fatalf("slot %d: %v after the fixed reload", slot, w)
		}
	}
}

func TestRequestInFlightSurvivesReload(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 1, Timeout: 5 * time.Second})
	conn, err := net.Dial("tcp", strings.TrimPrefix(tc.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	io.WriteString(conn, "GET /?sleep=1000&flush=1 HTTP/1.1\r\nHost: test\r\n\r\n")
	// The worker sends the header at once and the body a second later:
	// once the header is here, the request is in flight.
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the in-flight request failed during the reload: %v", err)
	}
	if !strings.Contains(string(body), "gen 1") {
		t.Fatalf("in-flight request got %q", body)
	}
}

func TestOldWorkersLeaveAfterReload(t *testing.T) {
	timeout := 400 * time.Millisecond
	tc := startCluster(t, recluster.Options{Workers: 2, Timeout: timeout})
	old := pids(tc.ActiveWorkers())
	// A worker that ignores the disconnect message must be killed after
	// Timeout; "hang" workers never read it, so make the old generation
	// unresponsive by reloading to a normal one and checking every old
	// pid is reaped.
	if err := tc.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	onlyGeneration(t, tc.url, "2")
	eventually(t, timeout+2*time.Second, "the old generation to be gone", func() bool {
		for _, pid := range old {
			if !gone(pid) {
				return false
			}
		}
		return true
	})
	if n := len(tc.Workers()); n != 2 {
		t.Fatalf("%d workers live after the old ones left, want 2", n)
	}
}

func TestUnresponsiveOldWorkerIsKilledAfterTimeout(t *testing.T) {
	timeout := 300 * time.Millisecond
	tc := newCluster(t, recluster.Options{Workers: 1, Timeout: timeout, ReadyWhen: recluster.Started}, "-mode", "hang")
	if err := tc.Run(); err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, 1, 5*time.Second, kind(recluster.EventActive))
	old := tc.ActiveWorkers()[0].PID()
	// "hang" reads the disconnect message, so stop it reading: SIGSTOP.
	if err := syscallKill(old, "STOP"); err != nil {
		t.Fatal(err)
	}
	if err := tc.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	killed := tc.rec.waitN(t, 1, timeout+3*time.Second, kind(recluster.EventKilled))
	if killed.PID != old {
		t.Fatalf("killed pid %d, want %d", killed.PID, old)
	}
	eventually(t, 3*time.Second, "the stopped worker to be reaped", func() bool { return gone(old) })
}

func TestTwoReloadsInARow(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 2})
	for i := 0; i < 2; i++ {
		if err := tc.Reload(context.Background()); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
	}
	for slot, w := range tc.ActiveWorkers() {
		if w.Generation() != 3 {
			t.Fatalf("slot %d has generation %d, want 3", slot, w.Generation())
		}
	}
	if st := tc.Status(); st.Reloads["committed"] != 2 {
		t.Fatalf("status counts %v reloads", st.Reloads)
	}
}

func TestSupersededReload(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 2, ReadyWhen: recluster.Ready}, "-mode", "ready")
	tc.setMode(t, "never-ready")
	first := make(chan error, 1)
	go func() { first <- tc.Reload(context.Background()) }()
	tc.rec.waitN(t, 2, 5*time.Second, func(e recluster.Event) bool { return e.Kind == recluster.EventSpawned && e.Generation == 2 })
	tc.setMode(t, "ready")
	if err := tc.Reload(context.Background()); err != nil {
		t.Fatalf("second reload: %v", err)
	}
	if err := <-first; !errors.Is(err, recluster.ErrSuperseded) {
		t.Fatalf("first reload returned %v, want ErrSuperseded", err)
	}
	for slot, w := range tc.ActiveWorkers() {
		if w.Generation() != 3 {
			t.Fatalf("slot %d has generation %d, want 3", slot, w.Generation())
		}
	}
	eventually(t, 5*time.Second, "the superseded generation to be gone", func() bool {
		for _, w := range tc.Workers() {
			if w.Generation() == 2 {
				return false
			}
		}
		return true
	})
}

func TestCrashedWorkerIsRespawned(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 2})
	before := pids(tc.ActiveWorkers())
	r, err := newClient(tc.url, false).get("/crash")
	if err == nil {
		t.Fatalf("a crashing request got an answer: %d", r.status)
	}
	exited := tc.rec.waitN(t, 1, 5*time.Second, kind(recluster.EventExited))
	if exited.ExitCode != 3 {
		t.Fatalf("exit code %d, want 3", exited.ExitCode)
	}
	tc.rec.waitN(t, 1, 5*time.Second, kind(recluster.EventRespawnScheduled))
	tc.rec.waitN(t, 3, 5*time.Second, kind(recluster.EventActive))
	after := pids(tc.ActiveWorkers())
	if after[exited.Slot] == before[exited.Slot] || after[exited.Slot] == 0 {
		t.Fatalf("slot %d not respawned with a new pid: before %v after %v", exited.Slot, before, after)
	}
	if st := tc.Status(); st.Workers[exited.Slot].Restarts != 1 {
		t.Fatalf("slot %d counts %d restarts, want 1", exited.Slot, st.Workers[exited.Slot].Restarts)
	}
}

func TestWorkerThatRetiresIsReplaced(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 1})
	old := tc.ActiveWorkers()[0].PID()
	l := startLoad(tc.url, 4, true, "/")
	l.progress(t, 50)
	get(t, tc.url, "/retire")
	tc.rec.waitN(t, 1, 5*time.Second, kind(recluster.EventRetire))
	tc.rec.waitN(t, 2, 5*time.Second, kind(recluster.EventActive))
	eventually(t, 5*time.Second, "the retired worker to exit", func() bool { return gone(old) })
	l.progress(t, 50)
	ok, failures := l.finish()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed while a worker retired: %v", len(failures), ok+len(failures), failures[:min(5, len(failures))])
	}
	if w := tc.ActiveWorkers()[0]; w.PID() == old || w.ID() != 0 {
		t.Fatalf("slot 0 is %v after retiring pid %d", w, old)
	}
}

func TestReloadUnderLoadFailsNoRequest(t *testing.T) {
	cases := []struct {
		name      string
		keepAlive bool
		path      string
	}{
		{"new-connection", false, "/?sleep=5"},
		{"keep-alive", true, "/?sleep=5"},
		// Requests of 100ms keep work in flight across every drain.
		{"keep-alive-100ms", true, "/?sleep=100"},
	}
	for _, tt := range cases {
		keepAlive := tt.keepAlive
		t.Run(tt.name, func(t *testing.T) {
			tc := startCluster(t, recluster.Options{Workers: 2, Timeout: 5 * time.Second})
			l := startLoad(tc.url, 8, keepAlive, tt.path)
			for i := 0; i < 5; i++ {
				l.progress(t, 16)
				if err := tc.Reload(context.Background()); err != nil {
					t.Fatalf("reload %d: %v", i+1, err)
				}
			}
			l.progress(t, 16)
			ok, failures := l.finish()
			if len(failures) > 0 {
				t.Fatalf("%d of %d requests failed across 5 reloads: %v", len(failures), ok+len(failures), failures[:min(5, len(failures))])
			}
			if ok == 0 {
				t.Fatal("no request succeeded")
			}
			t.Logf("%d requests, 0 failed, across 5 reloads", ok)
		})
	}
}

func TestReusePortModeReloadsWithoutFailure(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 3, ReusePort: true, Timeout: 5 * time.Second})
	if n := len(tc.Addrs()); n != 1 {
		t.Fatalf("the slots listen on %d addresses, want one: %v", n, tc.Addrs())
	}
	l := startLoad(tc.url, 8, false, "/")
	for i := 0; i < 3; i++ {
		l.progress(t, 50)
		if err := tc.Reload(context.Background()); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
	}
	ok, failures := l.finish()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed across 3 reloads: %v", len(failures), ok+len(failures), failures[:min(5, len(failures))])
	}
	seen := map[string]bool{}
	eventually(t, 5*time.Second, "every slot to answer", func() bool {
		seen[get(t, tc.url, "/").header.Get("X-Worker-Id")] = true
		return len(seen) == 3
	})
}

// Killing workers under load may fail only the requests those workers
// held; no connection is refused, because the socket stays with the master.
func TestCrashUnderLoadRefusesNothing(t *testing.T) {
	const clients, kills = 8, 3
	tc := startCluster(t, recluster.Options{Workers: 2})
	l := startLoad(tc.url, clients, false, "/?sleep=20")
	for i := 0; i < kills; i++ {
		l.progress(t, 50)
		victim := tc.ActiveWorkers()[i%2]
		if err := syscallKill(victim.PID(), "KILL"); err != nil {
			t.Fatal(err)
		}
		tc.rec.waitN(t, 3+i, 10*time.Second, kind(recluster.EventActive))
	}
	l.progress(t, 50)
	ok, failures := l.finish()
	for _, f := range failures {
		if strings.Contains(f, "refused") {
			t.Fatalf("a connection was refused while workers crashed: %s", f)
		}
	}
	if len(failures) > clients*kills {
		t.Fatalf("%d requests failed, more than the %d that the killed workers could hold: %v", len(failures), clients*kills, failures[:5])
	}
	if ok == 0 {
		t.Fatal("no request succeeded")
	}
	t.Logf("%d requests, %d failed in flight on %d killed workers", ok+len(failures), len(failures), kills)
}

func TestTerminateLeavesNothing(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 3})
	all := tc.Workers()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, w := range all {
		if !gone(w.PID()) {
			t.Errorf("worker pid %d is still there", w.PID())
		}
	}
	if _, err := net.Dial("tcp", strings.TrimPrefix(tc.url, "http://")); err == nil {
		t.Error("the port still accepts connections")
	}
	select {
	case <-tc.Done():
	default:
		t.Error("Done is not closed after Terminate")
	}
	if err := tc.Reload(context.Background()); !errors.Is(err, recluster.ErrNotRunning) {
		t.Errorf("Reload after Terminate: %v", err)
	}
}

func TestBadProgramIsAClearError(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "server.sh")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	cases := map[string]struct {
		program string
		opts    recluster.Options
		want    string
	}{
		"missing":        {filepath.Join(dir, "nope"), recluster.Options{}, "does not exist"},
		"not executable": {notExec, recluster.Options{}, "chmod +x"},
		"directory":      {dir, recluster.Options{}, "is a directory"},
		"ready when":     {serverBin, recluster.Options{ReadyWhen: "soon"}, "not one of listening, started, ready"},
		"env":            {serverBin, recluster.Options{Env: []string{"NOEQUALS"}}, "KEY=VALUE"},
		"backoff":        {serverBin, recluster.Options{Respawn: time.Second, Backoff: time.Millisecond}, "Backoff"},
		"dir":            {serverBin, recluster.Options{Dir: filepath.Join(dir, "nope")}, "working directory"},
	}
	for name, tt := range cases {
		t.Run(name, func(t *testing.T) {
			err := recluster.New(tt.program, tt.opts).Run()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestPortInUseReachesWorkerAndSparesServingWorkers(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tc := startCluster(t, recluster.Options{Workers: 1})
	// Reload to a generation that asks for the busy port.
	tc2 := newCluster(t, recluster.Options{Workers: 1}, "-addr", busy.Addr().String())
	if err := tc2.Run(); err != nil {
		t.Fatal(err)
	}
	failed := tc2.rec.waitN(t, 1, 5*time.Second, kind(recluster.EventListenFailed))
	if !strings.Contains(failed.Err.Error(), "already in use") {
		t.Fatalf("listen error %q does not say the address is in use", failed.Err)
	}
	exited := tc2.rec.waitN(t, 1, 5*time.Second, kind(recluster.EventExited))
	if exited.ExitCode != 2 {
		t.Fatalf("worker exit code %d, want 2 (its Listen failed)", exited.ExitCode)
	}
	get(t, tc.url, "/")
}

func TestScale(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 1})
	if err := tc.Scale(3); err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, 3, 5*time.Second, kind(recluster.EventActive))
	if n := len(tc.ActiveWorkers()); n != 3 {
		t.Fatalf("%d active after scaling to 3", n)
	}
	top := tc.ActiveWorkers()[2].PID()
	if err := tc.Scale(2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "slot 2 to drain", func() bool { return gone(top) })
	if a := tc.ActiveWorkers(); len(a) != 2 || a[2] != nil {
		t.Fatalf("active after scaling down: %v", pids(a))
	}
	if err := tc.Scale(0); err == nil {
		t.Fatal("Scale(0) did not fail")
	}
}

// onlyGeneration waits until gen answers every request: an old worker
// may still answer what it accepted before it read its disconnect message.
func onlyGeneration(t *testing.T, url, gen string) {
	t.Helper()
	streak := 0
	eventually(t, 5*time.Second, "generation "+gen+" to answer 10 requests in a row", func() bool {
		if get(t, url, "/").header.Get("X-Generation") == gen {
			streak++
		} else {
			streak = 0
		}
		return streak >= 10
	})
}

func equalMaps(a, b map[int]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A worker that asks to retire before it is serving its slot is replaced
// once it is.
func TestRetireBeforeActiveIsKept(t *testing.T) {
	tc := newCluster(t, recluster.Options{Workers: 1, ReadyWhen: recluster.Ready}, "-mode", "ready", "-delay", "500ms")
	if err := tc.Run(); err != nil {
		t.Fatal(err)
	}
	tc.learnURL(t)
	first := get(t, tc.url, "/retire").header.Get("X-Worker-Pid")
	retired := tc.rec.waitN(t, 1, 10*time.Second, kind(recluster.EventRetire))
	if strconv.Itoa(retired.PID) != first {
		t.Fatalf("retired pid %d, want %s", retired.PID, first)
	}
	tc.rec.waitN(t, 2, 10*time.Second, kind(recluster.EventActive))
	if w := tc.ActiveWorkers()[0]; strconv.Itoa(w.PID()) == first {
		t.Fatal("the worker that asked to retire still serves its slot")
	}
}

// An aborted reload must not take away a slot's only ready worker: when
// the old worker of a slot died during the reload, the slot's new, ready
// worker stays.
func TestAbortedReloadKeepsALoneReadyWorker(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 2, ReadyWhen: recluster.Ready, ReadyTimeout: 1500 * time.Millisecond, Respawn: 10 * time.Second}, "-mode", "ready")
	old0 := tc.ActiveWorkers()[0].PID()
	tc.setMode(t, "ready-if-0")
	result := make(chan error, 1)
	go func() { result <- tc.Reload(context.Background()) }()
	standby := tc.rec.waitN(t, 1, 10*time.Second, func(e recluster.Event) bool {
		return e.Kind == recluster.EventReady && e.Generation == 2 && e.Slot == 0
	})
	// Respawn is long: the old generation gets no new slot-0 worker
	// before the reload aborts.
	if err := syscallKill(old0, "KILL"); err != nil {
		t.Fatal(err)
	}
	tc.rec.waitN(t, 1, 5*time.Second, func(e recluster.Event) bool { return e.Kind == recluster.EventExited && e.PID == old0 })
	err := <-result
	if err == nil || !strings.Contains(err.Error(), "slot 1") {
		t.Fatalf("want the reload aborted for slot 1, got %v", err)
	}
	if w := tc.ActiveWorkers()[0]; w == nil || w.PID() != standby.PID {
		t.Fatalf("slot 0 is served by %v, want the ready new worker pid %d", w, standby.PID)
	}
}

// With inherited sockets the master cannot see a worker start listening:
// a Go worker says so at once; a program that dies at start-up, within
// MinUptime, aborts its reload instead of replacing the old generation.
func TestInheritedSocketsReadiness(t *testing.T) {
	tc := newCluster(t, recluster.Options{
		Workers:   2,
		MinUptime: 10 * time.Second,
		Sockets:   []recluster.Socket{{Name: "http", Address: "127.0.0.1:0"}},
	})
	if err := tc.Run(); err != nil {
		t.Fatal(err)
	}
	// Well before MinUptime: the workers said they listen.
	tc.rec.waitN(t, 2, 5*time.Second, kind(recluster.EventActive))
	tc.url = "http://" + tc.Addrs()[0].String()
	before := pids(tc.ActiveWorkers())
	if r := get(t, tc.url, "/env?name=LISTEN_FDNAMES"); r.body != "" {
		t.Fatalf("LISTEN_FDNAMES leaked into the worker's environment: %q", r.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tc.Reload(ctx); err != nil {
		t.Fatalf("reload with inherited sockets: %v", err)
	}

	tc.setMode(t, "broken")
	if err := tc.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "exited with code 1") {
		t.Fatalf("a reload to a program that dies at start-up: %v", err)
	}
	onlyGeneration(t, tc.url, "2")
	if after := pids(tc.ActiveWorkers()); equalMaps(before, after) || len(after) != 2 {
		t.Fatalf("active workers %v after the aborted reload (generation 1 was %v)", after, before)
	}
}

func TestProgramThatNeverAcceptsIsNotListening(t *testing.T) {
	rec := newRecorder()
	c := recluster.New("/bin/sh", recluster.Options{
		Workers:      1,
		Args:         []string{"-c", "exec sleep 30"},
		Sockets:      []recluster.Socket{{Address: "127.0.0.1:0"}},
		MinUptime:    300 * time.Millisecond,
		ReadyTimeout: 1500 * time.Millisecond,
		OnEvent:      rec.add,
	})
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	defer c.Terminate(context.Background())
	killed := rec.waitN(t, 1, 10*time.Second, kind(recluster.EventKilled))
	if !strings.Contains(killed.Reason, "not ready") {
		t.Fatalf("killed for %q, want the ready timeout", killed.Reason)
	}
	for _, e := range rec.all() {
		if e.Kind == recluster.EventActive {
			t.Fatalf("a program that holds its socket but never accepts became active:\n%s", rec.dump())
		}
	}
}

func TestConcurrentScaleByAddsUp(t *testing.T) {
	tc := startCluster(t, recluster.Options{Workers: 1})
	done := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			_, err := tc.ScaleBy(1)
			done <- err
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if st := tc.Status(); st.Slots != 5 {
		t.Fatalf("four concurrent ScaleBy(1) from 1 slot gave %d slots, want 5", st.Slots)
	}
	if _, err := tc.ScaleBy(recluster.MaxWorkers); err == nil {
		t.Fatal("scaling past MaxWorkers did not fail")
	}
}
