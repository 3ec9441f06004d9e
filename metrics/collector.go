package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The states and phases reported with a zero when nothing is in them, so
// that every series exists from the first scrape.
var (
	workerStates = []string{"starting", "standby", "active", "draining"}
	phases       = []string{"idle", "running", "terminating", "stopped"}
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
		"1 for a slot whose last 3 or more workers died before they were ever ready (a crash loop), else 0.", []string{"slot"}, nil)
	descFailingCount = prometheus.NewDesc("recluster_failing_slots",
		"Number of slots in a crash loop (see recluster_slot_failing).", nil, nil)
	descUptime = prometheus.NewDesc("recluster_uptime_seconds",
		"Seconds since the master process started.", nil, nil)
	workerLabels = []string{"slot", "pid", "generation"}
	descRSS      = prometheus.NewDesc("recluster_worker_resident_memory_bytes",
		"Resident set size of a live worker process, read from /proc (Linux only).", workerLabels, nil)
	descCPU = prometheus.NewDesc("recluster_worker_cpu_seconds_total",
		"User and system CPU time of a live worker process, read from /proc (Linux only).", workerLabels, nil)
	descStarted = prometheus.NewDesc("recluster_worker_start_time_seconds",
		"When a live worker process was spawned, in seconds since the Unix epoch.", workerLabels, nil)
)

// clusterCollector reads the cluster's status at scrape time.
type clusterCollector struct{ m *Metrics }

// Describe implements prometheus.Collector.
func (clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descPhase, descSlots, descReadySlots, descGeneration,
		descReloading, descWorkers, descFailing, descFailingCount, descUptime, descRSS, descCPU, descStarted} {
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
		gauge(descPhase, b2f(st.Phase == ph), ph)
	}
	gauge(descSlots, float64(st.Slots))
	gauge(descReadySlots, float64(len(activeSlots(st))))
	gauge(descGeneration, float64(st.Generation))
	gauge(descReloading, b2f(st.Reloading != 0))

	byState := map[string]int{}
	for _, w := range st.Workers {
		byState[w.State]++
	}
	for _, s := range workerStates {
		gauge(descWorkers, float64(byState[s]), s)
	}

	failing := map[int]bool{}
	for _, slot := range st.FailingSlots {
		failing[slot] = true
	}
	for slot := 0; slot < st.Slots; slot++ {
		gauge(descFailing, b2f(failing[slot]), strconv.Itoa(slot))
	}
	gauge(descFailingCount, float64(len(st.FailingSlots)))

	for _, w := range st.Workers {
		labels := []string{strconv.Itoa(w.Slot), strconv.Itoa(w.PID), strconv.Itoa(w.Generation)}
		gauge(descStarted, float64(w.Started.UnixNano())/1e9, labels...)
		// The library reads these from /proc (Linux); 0 means it could
		// not, as a live process always has resident pages.
		if w.RSSBytes > 0 {
			gauge(descRSS, float64(w.RSSBytes), labels...)
			ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, w.CPUSeconds, labels...)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
