package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/control"
	"github.com/recluster-go/recluster/internal/testbin"
	"github.com/recluster-go/recluster/metrics"
)

// serverBin is the repository's test worker (testdata/server), built once.
var serverBin string

func TestMain(m *testing.M) {
	testbin.Main(m, func(bins map[string]string) { serverBin = bins["testdata/server"] }, "testdata/server")
}

// client never reuses connections, so no idle ones outlive a test.
var client = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

type fixture struct {
	c       *recluster.Cluster
	m       *metrics.Metrics
	base    string // the metrics server, http://127.0.0.1:PORT
	cluster string // the workers' address
	mode    string // the test server's -modefile
}

// start runs a cluster of the test server with a metrics server on
// 127.0.0.1 and waits until /readyz says every slot is ready.
func start(t *testing.T, workers int, tweaks ...func(*recluster.Options)) *fixture {
	t.Helper()
	f := &fixture{mode: filepath.Join(t.TempDir(), "mode")}
	if err := os.WriteFile(f.mode, []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.m = metrics.New(metrics.Options{Program: serverBin})
	opts := recluster.Options{
		Workers:     workers,
		Respawn:     20 * time.Millisecond,
		Timeout:     2 * time.Second,
		Args:        []string{"-modefile", f.mode},
		OnEventSync: f.m.Observe,
		Logger:      slog.New(slog.DiscardHandler),
		Stdout:      io.Discard,
		Stderr:      io.Discard,
	}
	for _, tweak := range tweaks {
		tweak(&opts)
	}
	f.c = recluster.New(serverBin, opts)
	f.m.Attach(f.c)
	ln, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.base = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- f.m.Serve(ctx, ln) }()
	if err := f.c.Run(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer tcancel()
		if err := f.c.Terminate(tctx); err != nil {
			t.Errorf("Terminate: %v", err)
		}
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	waitFor(t, 10*time.Second, "/readyz to say 200", func() (bool, string) {
		code, body := get(t, f.base+"/readyz")
		return code == 200, fmt.Sprintf("%d %s", code, body)
	})
	addrs := f.c.Addrs()
	if len(addrs) == 0 {
		t.Fatal("the cluster holds no socket")
	}
	f.cluster = "http://" + addrs[0].String()
	return f
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func do(t *testing.T, method, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	code, _, body := do(t, "GET", url)
	return code, body
}

// scrape fetches /metrics and parses the text format.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return fams
}

// sample returns the value of the series of name whose labels include
// want (given as name, value pairs); for a histogram, its sample count.
func sample(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	fam := fams[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if have[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

func mustSample(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	v, ok := sample(fams, name, want...)
	if !ok {
		t.Fatalf("no series %s%v in /metrics", name, want)
	}
	return v
}

func (f *fixture) status(t *testing.T) control.Status {
	t.Helper()
	code, body := get(t, f.base+"/status")
	if code != 200 {
		t.Fatalf("GET /status: %d %s", code, body)
	}
	var st control.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("GET /status: %v\n%s", err, body)
	}
	return st
}

func TestGaugesAndEndpoints(t *testing.T) {
	f := start(t, 2)

	if code, body := get(t, f.base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 ok", code, body)
	}
	if code, body := get(t, f.base+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q, want 200", code, body)
	}

	fams := scrape(t, f.base)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"recluster_up", nil, 1},
		{"recluster_phase", []string{"phase", "running"}, 1},
		{"recluster_phase", []string{"phase", "idle"}, 0},
		{"recluster_slots", nil, 2},
		{"recluster_ready_slots", nil, 2},
		{"recluster_generation", nil, 1},
		{"recluster_reload_in_progress", nil, 0},
		{"recluster_workers", []string{"state", "active"}, 2},
		{"recluster_workers", []string{"state", "starting"}, 0},
		{"recluster_workers", []string{"state", "draining"}, 0},
		{"recluster_slot_failing", []string{"slot", "0"}, 0},
		{"recluster_slot_failing", []string{"slot", "1"}, 0},
		{"recluster_failing_slots", nil, 0},
		{"recluster_reloads_total", []string{"result", "committed"}, 0},
		{"recluster_reloads_total", []string{"result", "aborted"}, 0},
		{"recluster_reloads_total", []string{"result", "superseded"}, 0},
		{"recluster_worker_restarts_total", []string{"slot", "0"}, 0},
		{"recluster_worker_restarts_total", []string{"slot", "1"}, 0},
		{"recluster_worker_exits_total", []string{"cause", "crashed"}, 0},
		{"recluster_reload_duration_seconds", nil, 0},
	} {
		if got := mustSample(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if v := mustSample(t, fams, "recluster_uptime_seconds"); v <= 0 {
		t.Errorf("recluster_uptime_seconds = %v, want > 0", v)
	}
	if v := mustSample(t, fams, "process_resident_memory_bytes"); v <= 0 {
		t.Errorf("process_resident_memory_bytes (the master's) = %v, want > 0", v)
	}
	if _, ok := sample(fams, "go_goroutines"); !ok {
		t.Error("no go_goroutines: the Go collector is missing")
	}

	st := f.status(t)
	if st.Slots != 2 || len(st.Workers) != 2 || st.MasterPID != os.Getpid() || st.Program != serverBin || len(st.Addrs) == 0 {
		t.Errorf("/status: %+v", st)
	}
	for _, w := range st.Workers {
		labels := []string{"slot", strconv.Itoa(w.Slot)}
		if v := mustSample(t, fams, "recluster_worker_start_time_seconds", labels...); v < float64(w.Started.Unix()) || v > float64(w.Started.Unix()+1) {
			t.Errorf("recluster_worker_start_time_seconds%v = %v, want %v", labels, v, w.Started.Unix())
		}
		if v := mustSample(t, fams, "recluster_worker_pid", labels...); v != float64(w.PID) {
			t.Errorf("recluster_worker_pid%v = %v, want %d", labels, v, w.PID)
		}
		if v := mustSample(t, fams, "recluster_worker_generation", labels...); v != 1 {
			t.Errorf("recluster_worker_generation%v = %v, want 1", labels, v)
		}
		if runtime.GOOS != "linux" {
			continue
		}
		if v := mustSample(t, fams, "recluster_worker_resident_memory_bytes", append(labels, "state", "active")...); v < 1<<20 {
			t.Errorf("recluster_worker_resident_memory_bytes%v = %v, want at least 1 MiB", labels, v)
		}
		if v := mustSample(t, fams, "recluster_worker_cpu_seconds_total", labels...); v < 0 {
			t.Errorf("recluster_worker_cpu_seconds_total%v = %v", labels, v)
		}
		if w.RSSBytes < 1<<20 {
			t.Errorf("/status: worker %d rss_bytes = %d, want at least 1 MiB", w.Slot, w.RSSBytes)
		}
	}
}

// TestCrashLoop crashes a worker whose replacements cannot start: the slot
// loses its ready worker (/readyz 503 naming it), becomes failing after 3
// failed starts, and recovers once the program starts again.
func TestCrashLoop(t *testing.T) {
	f := start(t, 2)
	before := f.status(t)

	// Replacements will exit at once, before they are ever ready.
	if err := os.WriteFile(f.mode, []byte("broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(f.cluster + "/crash")
	if err == nil { // the worker exits before it answers
		resp.Body.Close()
	}

	var crashed int
	waitFor(t, 10*time.Second, "/readyz to say 503", func() (bool, string) {
		code, body := get(t, f.base+"/readyz")
		if code != 503 {
			return false, fmt.Sprintf("%d %s", code, body)
		}
		for slot := range 2 {
			if strings.HasPrefix(body, "not ready: no ready worker in slot "+strconv.Itoa(slot)) {
				crashed = slot
				return true, body
			}
		}
		t.Fatalf("/readyz 503 body %q does not name the slot", body)
		return false, body
	})
	slot := strconv.Itoa(crashed)
	if code, body := get(t, f.base+"/healthz"); code != 200 {
		t.Errorf("/healthz during a crash loop: %d %q, want 200 (the master is alive)", code, body)
	}

	waitFor(t, 10*time.Second, "the slot to be failing in /metrics and /status", func() (bool, string) {
		fams := scrape(t, f.base)
		failing, _ := sample(fams, "recluster_slot_failing", "slot", slot)
		st := f.status(t)
		return failing == 1 && len(st.FailingSlots) == 1 && st.FailingSlots[0] == crashed,
			fmt.Sprintf("recluster_slot_failing=%v failing_slots=%v", failing, st.FailingSlots)
	})
	// The counters come from events, which reach Observe asynchronously.
	waitFor(t, 5*time.Second, "the crash loop to be counted", func() (bool, string) {
		fams := scrape(t, f.base)
		count, _ := sample(fams, "recluster_failing_slots")
		crashes, _ := sample(fams, "recluster_worker_exits_total", "cause", "crashed")
		failedStarts, _ := sample(fams, "recluster_worker_exits_total", "cause", "failed_start")
		restarts, _ := sample(fams, "recluster_worker_restarts_total", "slot", slot)
		// The crash and 3 failed starts each scheduled a respawn.
		return count == 1 && crashes == 1 && failedStarts >= 3 && restarts >= 4,
			fmt.Sprintf("recluster_failing_slots=%v exits{crashed}=%v exits{failed_start}=%v restarts{slot=%s}=%v", count, crashes, failedStarts, slot, restarts)
	})
	if code, body := get(t, f.base+"/readyz"); code != 503 || !strings.Contains(body, "failing (crash loop): slot "+slot) {
		t.Errorf("/readyz: %d %q, want 503 naming the failing slot", code, body)
	}

	// The program is fixed: the next respawn serves again.
	if err := os.WriteFile(f.mode, []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "/readyz to say 200 again", func() (bool, string) {
		code, body := get(t, f.base+"/readyz")
		return code == 200, fmt.Sprintf("%d %s", code, body)
	})
	// The slot recovers once its new worker has stayed up for min uptime
	// after it was ready, not at the ready itself.
	waitFor(t, 10*time.Second, "the slot to recover in /metrics and /status", func() (bool, string) {
		failing := mustSample(t, scrape(t, f.base), "recluster_slot_failing", "slot", slot)
		st := f.status(t)
		return failing == 0 && len(st.FailingSlots) == 0, fmt.Sprintf("recluster_slot_failing=%v failing_slots=%v", failing, st.FailingSlots)
	})
	fams := scrape(t, f.base)
	if v := mustSample(t, fams, "recluster_workers", "state", "active"); v != 2 {
		t.Errorf(`recluster_workers{state="active"} = %v, want 2`, v)
	}
	after := f.status(t)
	for _, w := range after.Workers {
		if w.Slot == crashed && w.Restarts <= before.Workers[crashed].Restarts {
			t.Errorf("/status: slot %d restarts = %d, want more than %d", w.Slot, w.Restarts, before.Workers[crashed].Restarts)
		}
	}
	if len(after.FailingSlots) != 0 {
		t.Errorf("/status failing_slots = %v after recovery, want none", after.FailingSlots)
	}
}

func TestReload(t *testing.T) {
	f := start(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the reload to be counted", func() (bool, string) {
		fams := scrape(t, f.base)
		committed, _ := sample(fams, "recluster_reloads_total", "result", "committed")
		observed, _ := sample(fams, "recluster_reload_duration_seconds")
		return committed == 1 && observed == 1, fmt.Sprintf("committed=%v histogram count=%v", committed, observed)
	})
	fams := scrape(t, f.base)
	if v := mustSample(t, fams, "recluster_generation"); v != 2 {
		t.Errorf("recluster_generation = %v, want 2", v)
	}
	if sum := fams["recluster_reload_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleSum(); sum <= 0 || sum > 20 {
		t.Errorf("recluster_reload_duration_seconds sum = %v, want the reload's duration", sum)
	}
	// The old generation exits after it is told to disconnect.
	waitFor(t, 10*time.Second, "the old generation to be counted as disconnected", func() (bool, string) {
		v, _ := sample(scrape(t, f.base), "recluster_worker_exits_total", "cause", "disconnected")
		return v == 2, fmt.Sprintf(`recluster_worker_exits_total{cause="disconnected"} = %v`, v)
	})
	if code, body := get(t, f.base+"/readyz"); code != 200 {
		t.Errorf("/readyz after a reload: %d %q", code, body)
	}
}

func TestReadOnly(t *testing.T) {
	f := start(t, 1)
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/status"} {
		for _, method := range []string{"POST", "PUT", "DELETE", "PATCH"} {
			code, h, _ := do(t, method, f.base+path)
			if code != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %d, want 405", method, path, code)
			}
			if allow := h.Get("Allow"); allow != "GET, HEAD" {
				t.Errorf("%s %s: Allow %q, want GET, HEAD", method, path, allow)
			}
		}
		if code, _, _ := do(t, "HEAD", f.base+path); code != 200 {
			t.Errorf("HEAD %s: %d, want 200", path, code)
		}
	}
	if code, _ := get(t, f.base+"/reload"); code != 404 {
		t.Errorf("GET /reload: %d, want 404", code)
	}
	if st := f.status(t); st.Generation != 1 || st.Reloads["committed"] != 0 || st.Slots != 1 {
		t.Errorf("the requests changed the cluster: %+v", st)
	}
}

// TestNotServing covers a master before its cluster is attached and after
// it has stopped.
func TestNotServing(t *testing.T) {
	m := metrics.New(metrics.Options{})
	h := m.Handler()
	rec := func(path string) (int, string) {
		w := &recorder{header: http.Header{}}
		req, _ := http.NewRequest("GET", path, nil)
		h.ServeHTTP(w, req)
		return w.code, w.body.String()
	}
	if code, body := rec("/healthz"); code != 503 || !strings.Contains(body, "no cluster attached") {
		t.Errorf("/healthz without a cluster: %d %q", code, body)
	}
	c := recluster.New(serverBin, recluster.Options{Workers: 1, OnEventSync: m.Observe, Logger: slog.New(slog.DiscardHandler), Stdout: io.Discard, Stderr: io.Discard})
	m.Attach(c)
	if code, body := rec("/healthz"); code != 200 {
		t.Errorf("/healthz before Run: %d %q, want 200 (the master answers)", code, body)
	}
	if code, body := rec("/readyz"); code != 503 || !strings.Contains(body, "idle") {
		t.Errorf("/readyz before Run: %d %q, want 503 idle", code, body)
	}
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := rec(path); code != 503 || !strings.Contains(body, "stopped") {
			t.Errorf("%s after Terminate: %d %q, want 503 stopped", path, code, body)
		}
	}
	if code, body := rec("/metrics"); code != 200 || !strings.Contains(body, "recluster_up 0") {
		t.Errorf("/metrics after Terminate: %d, want 200 with recluster_up 0:\n%s", code, body)
	}
}

type recorder struct {
	header http.Header
	code   int
	body   strings.Builder
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(code int) { r.code = code }

func TestListenErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, port, _ := net.SplitHostPort(busy.Addr().String())
	_, err = metrics.Listen(busy.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "port "+port+" is already in use") || !strings.Contains(err.Error(), "--metrics") {
		t.Errorf("Listen on a busy port: %v; want it to name port %s and --metrics", err, port)
	}
	if _, err := metrics.Listen("9100"); err == nil || !strings.Contains(err.Error(), ":9100") {
		t.Errorf("Listen(9100): %v; want a hint at :9100", err)
	}
	if _, err := metrics.Listen("localhost"); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
		t.Errorf("Listen(localhost): %v; want HOST:PORT", err)
	}
}

// TestObserveCauses checks the exit cause classification on synthetic
// events.
func TestObserveCauses(t *testing.T) {
	m := metrics.New(metrics.Options{})
	ev := func(k recluster.EventKind, pid int) recluster.Event {
		return recluster.Event{Kind: k, Slot: 0, PID: pid, Generation: 1}
	}
	seq := []recluster.Event{
		ev(recluster.EventSpawned, 10), ev(recluster.EventExited, 10), // failed_start
		ev(recluster.EventSpawned, 11), ev(recluster.EventReady, 11), ev(recluster.EventExited, 11), // crashed
		ev(recluster.EventSpawned, 12), ev(recluster.EventReady, 12), ev(recluster.EventDisconnect, 12), ev(recluster.EventExited, 12), // disconnected
		ev(recluster.EventSpawned, 13), ev(recluster.EventReady, 13), ev(recluster.EventDisconnect, 13), ev(recluster.EventKilled, 13), ev(recluster.EventExited, 13), // killed
		ev(recluster.EventSpawned, 14), ev(recluster.EventKilled, 14), ev(recluster.EventExited, 14), // killed (ready timeout)
		ev(recluster.EventExited, 99), // its spawn was never seen: crashed
		{Kind: recluster.EventReloadAborted, Slot: -1, Reason: "superseded", Err: recluster.ErrSuperseded},
		{Kind: recluster.EventReloadAborted, Slot: -1, Reason: "aborted"},
		{Kind: recluster.EventReloadCommitted, Slot: -1, Duration: 1500 * time.Millisecond},
		{Kind: recluster.EventRespawnScheduled, Slot: 3},
	}
	for _, e := range seq {
		m.Observe(e)
	}
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"recluster_worker_exits_total", "cause", "failed_start", 1},
		{"recluster_worker_exits_total", "cause", "crashed", 2},
		{"recluster_worker_exits_total", "cause", "disconnected", 1},
		{"recluster_worker_exits_total", "cause", "killed", 2},
		{"recluster_reloads_total", "result", "superseded", 1},
		{"recluster_reloads_total", "result", "aborted", 1},
		{"recluster_reloads_total", "result", "committed", 1},
		{"recluster_worker_restarts_total", "slot", "3", 1},
		{"recluster_worker_restarts_total", "slot", "0", 0},
	} {
		if got, ok := sample(byName, c.name, c.label, c.value); !ok || got != c.want {
			t.Errorf("%s{%s=%q} = %v (present %v), want %v", c.name, c.label, c.value, got, ok, c.want)
		}
	}
	if sum := byName["recluster_reload_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleSum(); sum != 1.5 {
		t.Errorf("recluster_reload_duration_seconds sum = %v, want 1.5", sum)
	}
}

// seriesOf returns the identities (name and labels) of the recluster_*
// series of a scrape: what a Prometheus server stores a series for.
func seriesOf(fams map[string]*dto.MetricFamily) map[string]bool {
	ids := map[string]bool{}
	for name, fam := range fams {
		if !strings.HasPrefix(name, "recluster_") {
			continue
		}
		for _, m := range fam.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			ids[name+"{"+strings.Join(labels, ",")+"}"] = true
		}
	}
	return ids
}

// Reloads must not grow the number of series a Prometheus server keeps:
// no label takes a value per process or per generation. Every series seen
// in scrapes during and after 50 reloads must already be in the first.
func TestReloadsKeepTheSeriesCountFlat(t *testing.T) {
	f := start(t, 2)
	first := seriesOf(scrape(t, f.base))
	seen := maps.Clone(first)
	const reloads = 50
	for i := 1; i <= reloads; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := f.c.Reload(ctx)
		cancel()
		if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		// Right after the commit, the old generation is still draining.
		maps.Copy(seen, seriesOf(scrape(t, f.base)))
	}
	waitFor(t, 20*time.Second, "the last old generation to exit", func() (bool, string) {
		st := f.c.Status()
		return len(st.Workers) == st.Slots, fmt.Sprintf("%d workers", len(st.Workers))
	})
	last := seriesOf(scrape(t, f.base))
	maps.Copy(seen, last)
	if len(seen) != len(first) || len(last) != len(first) {
		var grown []string
		for id := range seen {
			if !first[id] {
				grown = append(grown, id)
			}
		}
		sort.Strings(grown)
		t.Fatalf("%d recluster_* series at first, %d at the end, %d seen over %d reloads; new ones: %v", len(first), len(last), len(seen), reloads, grown[:min(10, len(grown))])
	}
	if v := mustSample(t, scrape(t, f.base), "recluster_worker_generation", "slot", "0"); v != reloads+1 {
		t.Errorf("recluster_worker_generation{slot=0} = %v, want %d", v, reloads+1)
	}
	t.Logf("%d recluster_* series, the same set before, during and after %d reloads", len(first), reloads)
}
