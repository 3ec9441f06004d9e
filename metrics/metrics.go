// Package metrics serves a recluster master's Prometheus metrics and health
// endpoints over HTTP, for `recluster run --metrics ADDR`:
//
//	/metrics  Prometheus text format (a private registry, never the global one)
//	/healthz  200 "ok" while the master's supervisor loop answers
//	/readyz   200 only while every slot has an active (ready) worker
//	/status   the JSON of `recluster status --json`
//
// Every endpoint is read-only: the handler answers GET and HEAD, any other
// method gets 405, and nothing served over HTTP changes the cluster.
//
// The counters (restarts, reloads, exits, reload durations) come from the
// cluster's lifecycle events, so Observe must be chained into
// recluster.Options.OnEventSync, which the supervisor calls for every event
// as it happens: a counter fed by the queued OnEvent could miss events
// under a flood. The gauges (workers by state, failing slots,
// generation, each worker's memory and CPU) are read from Cluster.Status at
// scrape time.
//
//	m := metrics.New(metrics.Options{Program: program})
//	opts.OnEventSync = m.Observe // or a func that calls it after other handlers
//	c := recluster.New(program, opts)
//	m.Attach(c)
//	ln, err := metrics.Listen(addr) // bind before c.Run, to fail early
//	...
//	go m.Serve(ctx, ln)
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/recluster-go/recluster"
)

// processStart approximates when the master process started: package
// initialisation runs before main.
var processStart = time.Now()

// Worker exit causes, the values of the cause label of
// recluster_worker_exits_total.
const (
	// CauseDisconnected: the worker exited after the master told it to
	// disconnect (a reload, a scale down, a retire, a stop): the normal end.
	CauseDisconnected = "disconnected"
	// CauseKilled: the master killed it (drain Timeout over, ReadyTimeout
	// missed, reload aborted, second stop signal).
	CauseKilled = "killed"
	// CauseCrashed: it exited on its own, unasked, after it had been ready.
	CauseCrashed = "crashed"
	// CauseFailedStart: it exited on its own before it was ever ready; the
	// streaks of these make a slot failing.
	CauseFailedStart = "failed_start"
)

// Reload results, the values of the result label of recluster_reloads_total.
const (
	// ResultCommitted: the new generation took over.
	ResultCommitted = string(recluster.ReloadCommitted)
	// ResultAborted: a new worker failed or the reload was cancelled; the
	// old generation kept serving.
	ResultAborted = string(recluster.ReloadAborted)
	// ResultSuperseded: a newer reload replaced it before it finished.
	ResultSuperseded = string(recluster.ReloadSuperseded)
)

// DefaultTimeout is how long an endpoint waits for the master's supervisor
// loop to answer when Options.Timeout is zero.
const DefaultTimeout = time.Second

// Options configure Metrics. The zero value is ready to use.
type Options struct {
	// Program is the worker program's path, shown in /status as
	// `recluster status --json` shows it.
	Program string
	// Timeout bounds how long /healthz, /readyz, /status and a scrape wait
	// for the supervisor loop to answer; past it /healthz says 503.
	// Default DefaultTimeout.
	Timeout time.Duration
}

// Metrics holds a master's Prometheus registry and serves it with the
// health endpoints. Create it with New, feed it events with Observe, give
// it its cluster with Attach. Its methods are safe for concurrent use.
type Metrics struct {
	opts    Options
	reg     *prometheus.Registry
	cluster atomic.Pointer[recluster.Cluster]

	restarts       *prometheus.CounterVec
	reloads        *prometheus.CounterVec
	reloadDuration prometheus.Histogram
	exits          *prometheus.CounterVec

	mu    sync.Mutex
	procs map[int]*procFacts // live worker pid -> what the events told

	probeMu sync.Mutex
	probe   *probeCall // the Status call in flight, shared by all callers
}

// procFacts is what Observe has learned about one live worker.
type procFacts struct {
	ready bool
	told  string // CauseDisconnected or CauseKilled, once the master acted
}

// New returns Metrics with a registry of its own holding the cluster
// metrics, the Go runtime metrics and the master's process metrics
// (process_resident_memory_bytes, process_cpu_seconds_total, ...).
func New(opts Options) *Metrics {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	m := &Metrics{
		opts:  opts,
		reg:   prometheus.NewRegistry(),
		procs: map[int]*procFacts{},
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "recluster_worker_restarts_total",
			Help: "Respawns scheduled for a slot whose worker was gone, since the master started.",
		}, []string{"slot"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "recluster_reloads_total",
			Help: "Reloads by result: committed, aborted, superseded.",
		}, []string{"result"}),
		reloadDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "recluster_reload_duration_seconds",
			Help:    "Time from the start of a reload to its commit (committed reloads only).",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "recluster_worker_exits_total",
			Help: "Worker processes that ended, by cause: disconnected, killed, crashed, failed_start.",
		}, []string{"cause"}),
	}
	for _, r := range []string{ResultCommitted, ResultAborted, ResultSuperseded} {
		m.reloads.WithLabelValues(r)
	}
	for _, c := range []string{CauseDisconnected, CauseKilled, CauseCrashed, CauseFailedStart} {
		m.exits.WithLabelValues(c)
	}
	m.reg.MustRegister(
		m.restarts, m.reloads, m.reloadDuration, m.exits,
		clusterCollector{m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry returns the private registry, for a program that wants to add
// collectors of its own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Attach gives m the cluster whose status it reports. Until it is called,
// /healthz and /readyz answer 503. Attach it once, before serving.
func (m *Metrics) Attach(c *recluster.Cluster) { m.cluster.Store(c) }

// Observe counts one lifecycle event. Chain it into
// recluster.Options.OnEventSync, which calls it on the supervisor's
// goroutine for every event, in order: it only updates counters under a
// short lock, and never calls the cluster.
func (m *Metrics) Observe(e recluster.Event) {
	switch e.Kind {
	case recluster.EventSpawned:
		// Every slot's restart series exists from its first worker, so
		// that rate() and increase() see the first restart.
		m.restarts.WithLabelValues(strconv.Itoa(e.Slot))
		m.mu.Lock()
		m.procs[e.PID] = &procFacts{}
		m.mu.Unlock()
	case recluster.EventReady:
		m.mu.Lock()
		if p := m.procs[e.PID]; p != nil {
			p.ready = true
		}
		m.mu.Unlock()
	case recluster.EventDisconnect, recluster.EventKilled:
		cause := CauseDisconnected
		if e.Kind == recluster.EventKilled {
			cause = CauseKilled
		}
		m.mu.Lock()
		if p := m.procs[e.PID]; p != nil && p.told != CauseKilled {
			p.told = cause
		}
		m.mu.Unlock()
	case recluster.EventExited:
		m.mu.Lock()
		p := m.procs[e.PID]
		delete(m.procs, e.PID)
		m.mu.Unlock()
		cause := CauseCrashed
		switch {
		case p == nil: // not seen spawning (Observe chained in late): count it as a crash
		case p.told != "":
			cause = p.told
		case !p.ready:
			cause = CauseFailedStart
		}
		m.exits.WithLabelValues(cause).Inc()
	case recluster.EventRespawnScheduled:
		m.restarts.WithLabelValues(strconv.Itoa(e.Slot)).Inc()
	case recluster.EventReloadCommitted:
		m.reloads.WithLabelValues(ResultCommitted).Inc()
		m.reloadDuration.Observe(e.Duration.Seconds())
	case recluster.EventReloadAborted:
		result := ResultAborted
		if errors.Is(e.Err, recluster.ErrSuperseded) {
			result = ResultSuperseded
		}
		m.reloads.WithLabelValues(result).Inc()
	case recluster.EventStopped:
		m.mu.Lock()
		clear(m.procs)
		m.mu.Unlock()
	}
}

// Errors that snapshot returns; the health endpoints print them.
var (
	errNotAttached = errors.New("no cluster attached yet")
	errStopped     = errors.New("the cluster has stopped")
)

// probeCall is one Status call on the supervisor loop. Callers that arrive
// while it is in flight wait for the same answer, so a stuck loop costs one
// goroutine, not one per probe.
type probeCall struct {
	done  chan struct{}
	st    recluster.Status
	addrs []net.Addr
}

// snapshot returns the cluster's status, or an error when there is no
// cluster, it has stopped, or its supervisor loop did not answer within
// the timeout.
func (m *Metrics) snapshot(ctx context.Context) (*probeCall, error) {
	c := m.cluster.Load()
	if c == nil {
		return nil, errNotAttached
	}
	select {
	case <-c.Done():
		return nil, errStopped
	default:
	}
	m.probeMu.Lock()
	p := m.probe
	if p == nil {
		p = &probeCall{done: make(chan struct{})}
		m.probe = p
		go func() {
			p.st = c.Status()
			p.addrs = c.Addrs()
			m.probeMu.Lock()
			m.probe = nil
			m.probeMu.Unlock()
			close(p.done)
		}()
	}
	m.probeMu.Unlock()
	timer := time.NewTimer(m.opts.Timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		if p.st.Phase == "" || p.st.Phase == recluster.PhaseStopped {
			return nil, errStopped // Status of a stopped cluster is empty
		}
		return p, nil
	case <-timer.C:
		return nil, fmt.Errorf("the master's supervisor loop did not answer within %v", m.opts.Timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// unready returns, for a running cluster, the slots that have no active
// worker; for a cluster in any other phase it returns an error.
func unready(st recluster.Status) ([]int, error) {
	if st.Phase != recluster.PhaseRunning {
		return nil, fmt.Errorf("the cluster is %s", st.Phase)
	}
	active := activeSlots(st)
	var missing []int
	for slot := 0; slot < st.Slots; slot++ {
		if !active[slot] {
			missing = append(missing, slot)
		}
	}
	return missing, nil
}

// activeSlots returns the slots in 0..Slots-1 that have an active worker.
func activeSlots(st recluster.Status) map[int]bool {
	active := make(map[int]bool, st.Slots)
	for _, w := range st.Workers {
		if w.State == recluster.WorkerActive && w.Slot >= 0 && w.Slot < st.Slots {
			active[w.Slot] = true
		}
	}
	return active
}

// Listen binds addr (HOST:PORT or :PORT) for the metrics server. Its errors
// say what to do: a port in use names the port and how to choose another.
func Listen(addr string) (net.Listener, error) {
	if _, err := strconv.Atoi(addr); err == nil {
		return nil, fmt.Errorf("metrics: %q is not an address; did you mean :%s (every interface) or 127.0.0.1:%s?", addr, addr, addr)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %q is not an address: want HOST:PORT or :PORT, such as 127.0.0.1:9100", addr)
	}
	ln, err := net.Listen("tcp", addr)
	switch {
	case err == nil:
		return ln, nil
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("metrics: cannot listen on %s: port %s is already in use by another program (another recluster master?); stop it, or give this master another port with --metrics HOST:PORT", addr, port)
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("metrics: cannot listen on %s: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE, so use a higher one such as --metrics 127.0.0.1:9100", addr)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return nil, fmt.Errorf("metrics: cannot listen on %s: the host part is not an address of this machine; use 127.0.0.1, one of its own addresses, or none (:%s) for every interface", addr, port)
	}
	return nil, fmt.Errorf("metrics: cannot listen on %s: %w", addr, err)
}

// Serve serves Handler on ln until ctx ends, then shuts the server down,
// giving requests in flight up to a second, and returns nil. It returns
// the error that stopped it otherwise. It closes ln.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// ListenAndServe is Listen followed by Serve.
func (m *Metrics) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := Listen(addr)
	if err != nil {
		return err
	}
	return m.Serve(ctx, ln)
}
