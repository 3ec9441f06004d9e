package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/recluster-go/recluster"
)

// The states and phases reported with a zero when nothing is in them, so
// that every series exists from the first scrape.
var (
	workerStates = []recluster.WorkerState{recluster.WorkerStarting, recluster.WorkerStandby, recluster.WorkerActive, recluster.WorkerDraining}
	phases       = []recluster.Phase{recluster.PhaseIdle, recluster.PhaseRunning, recluster.PhaseTerminating, recluster.PhaseStopped}
	// The values of the result and reason labels of the handoff counters.
	handoffResults   = []string{"handed", "no_worker", "send_failed"}
	handoffFallbacks = []string{"tls", "h2", "hijacked", "busy", "unsupported", "failed", "no_new_worker"}
)

var (
	descUp = prometheus.NewDesc("recluster_up",
		"1 if the master's supervisor loop answered this scrape in time and the cluster has not stopped, else 0.", nil, nil)
	descPhase = prometheus.NewDesc("recluster_phase",
		"1 for the cluster's current phase (idle, running, terminating, stopped), 0 for the others.", []string{"phase"}, nil)
	descSlots = prometheus.NewDesc("recluster_slots",
		"Number of worker slots (the Workers option, after any scale).", nil, nil)
	descReadySlots = prometheus.NewDesc("recluster_ready_slots",
		"Slots that have an active (ready) worker; /readyz is 200 when it equals recluster_slots.", nil, nil)
	descGeneration = prometheus.NewDesc("recluster_generation",
		"The active generation: 1 at start, then the generation of the last committed reload (aborted and superseded reloads use numbers too).", nil, nil)
	descReloading = prometheus.NewDesc("recluster_reload_in_progress",
		"1 while a reload is starting a new generation, else 0.", nil, nil)
	descWorkers = prometheus.NewDesc("recluster_workers",
		"Live worker processes by state: starting, standby, active, draining.", []string{"state"}, nil)
	descFailing = prometheus.NewDesc("recluster_slot_failing",
		"1 for a slot whose last 3 or more workers died before they were ready or within min uptime (or the reload's probation) of it (a crash loop), else 0.", []string{"slot"}, nil)
	descFailingCount = prometheus.NewDesc("recluster_failing_slots",
		"Number of slots in a crash loop (see recluster_slot_failing).", nil, nil)
	descUptime = prometheus.NewDesc("recluster_uptime_seconds",
		"Seconds since the master process started.", nil, nil)
	descStickyShare = prometheus.NewDesc("recluster_sticky_bucket_share",
		"With Sticky, the fraction of client address buckets (so, roughly, of client IPs) that the kernel sends to a slot.", []string{"slot"}, nil)
	descHandoffs = prometheus.NewDesc("recluster_handoffs_total",
		"Idle keep-alive connections that draining workers handed to the master, by result: handed (to a worker of the new generation), no_worker and send_failed (closed by the master).", []string{"result"}, nil)
	descHandoffFallbacks = prometheus.NewDesc("recluster_handoff_fallbacks_total",
		"Connections that drained the old way (Connection: close, grace, close) instead of being handed over, by reason: tls, h2, hijacked, busy, unsupported, failed, no_new_worker.", []string{"reason"}, nil)
	// Per-worker series are labelled by slot (and state), never by pid or
	// generation, whose values grow with every reload: a cluster of N slots
	// has a fixed set of series however often it reloads. Pid and
	// generation are values of their own series instead.
	descRSS = prometheus.NewDesc("recluster_worker_resident_memory_bytes",
		"Resident set size of the slot's live worker processes in each state (a slot has a second worker while it is being replaced), read from /proc (Linux only, else 0).", []string{"slot", "state"}, nil)
	descCPU = prometheus.NewDesc("recluster_worker_cpu_seconds_total",
		"User and system CPU time of the slot's active worker, read from /proc (Linux only); it starts again from near 0 when the slot gets a new worker, which rate() treats as a counter reset.", []string{"slot"}, nil)
	descStarted = prometheus.NewDesc("recluster_worker_start_time_seconds",
		"When the slot's active worker was spawned, in seconds since the Unix epoch.", []string{"slot"}, nil)
	descWorkerGen = prometheus.NewDesc("recluster_worker_generation",
		"The generation of the slot's active worker.", []string{"slot"}, nil)
	descWorkerPID = prometheus.NewDesc("recluster_worker_pid",
		"The process id of the slot's active worker.", []string{"slot"}, nil)
)

// clusterCollector reads the cluster's status at scrape time.
type clusterCollector struct{ m *Metrics }

// Describe implements prometheus.Collector.
func (clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descPhase, descSlots, descReadySlots, descGeneration,
		descReloading, descWorkers, descFailing, descFailingCount, descUptime, descRSS, descCPU, descStarted,
		descWorkerGen, descWorkerPID, descStickyShare, descHandoffs, descHandoffFallbacks} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (cc clusterCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descUptime, time.Since(processStart).Seconds())
	p, err := cc.m.snapshot(context.Background())
	if err != nil {
		gauge(descUp, 0)
		return
	}
	st := p.st
	gauge(descUp, 1)
	for _, ph := range phases {
		gauge(descPhase, b2f(st.Phase == ph), ph.String())
	}
	gauge(descSlots, float64(st.Slots))
	gauge(descReadySlots, float64(len(activeSlots(st))))
	gauge(descGeneration, float64(st.Generation))
	gauge(descReloading, b2f(st.Reloading != 0))

	byState := map[recluster.WorkerState]int{}
	for _, w := range st.Workers {
		byState[w.State]++
	}
	for _, s := range workerStates {
		gauge(descWorkers, float64(byState[s]), s.String())
	}

	failing := map[int]bool{}
	for _, slot := range st.FailingSlots {
		failing[slot] = true
	}
	for slot := 0; slot < st.Slots; slot++ {
		gauge(descFailing, b2f(failing[slot]), strconv.Itoa(slot))
	}
	gauge(descFailingCount, float64(len(st.FailingSlots)))
	if st.Sticky != nil {
		for slot, n := range st.Sticky.Shares {
			gauge(descStickyShare, float64(n)/float64(st.Sticky.Buckets), strconv.Itoa(slot))
		}
	}

	counter := func(d *prometheus.Desc, v int, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label)
	}
	for _, r := range handoffResults {
		counter(descHandoffs, st.Handoffs[r], r)
	}
	for _, r := range handoffFallbacks {
		counter(descHandoffFallbacks, st.HandoffFallbacks[r], r)
	}

	rss := make([]map[recluster.WorkerState]int64, st.Slots)
	for slot := range rss {
		rss[slot] = map[recluster.WorkerState]int64{}
	}
	for _, w := range st.Workers {
		if w.Slot < 0 || w.Slot >= st.Slots {
			continue // scaled away, draining: counted in recluster_workers
		}
		rss[w.Slot][w.State] += w.RSSBytes
		if w.State != recluster.WorkerActive {
			continue
		}
		slot := strconv.Itoa(w.Slot)
		gauge(descStarted, float64(w.Started.UnixNano())/1e9, slot)
		gauge(descWorkerGen, float64(w.Generation), slot)
		gauge(descWorkerPID, float64(w.PID), slot)
		// The library reads CPU time from /proc (Linux); an RSS of 0 means
		// it could not, as a live process always has resident pages.
		if w.RSSBytes > 0 {
			ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, w.CPUSeconds, slot)
		}
	}
	for slot, byState := range rss {
		for _, state := range workerStates {
			gauge(descRSS, float64(byState[state]), strconv.Itoa(slot), state.String())
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
