package recluster

import (
	"fmt"
	"time"
)

// Worker is the master's view of one worker process. Its methods return
// facts fixed at spawn time, so they are safe from any goroutine; what
// changes (state, readiness) is read through Cluster.Status.
type Worker struct {
	slot    int
	pid     int
	gen     int
	started time.Time

	// Owned by the supervisor goroutine.
	state       WorkerState
	readyAt     time.Time
	proc        process       // nil until the process has started
	retiring    bool          // it is being replaced and serves until then
	retireAsked bool          // it asked to be replaced, maybe before it was active
	killed      bool          // SIGKILL was sent
	killReason  string        // why, when it was asked before the process had started
	maxAge      time.Duration // Options.MaxAge less this worker's jitter
	listening   bool
	handoffKeys map[string]bool // sockets on which it takes handed connections
	status      string          // the worker's last STATUS= or status message
	lastBeat    time.Time
	readyTimer  timer
	killTimer   timer
	settleTimer timer // MinUptime, for ReadyWhen=Listening with Sockets
	uptimeTimer timer // clears its slot's crash loop once it has stayed up

	stopAcceptWatch func() // ends the watch for it to accept on its sockets
	unknown         unknownCommands
}

// ID returns the worker's slot, which is its WORKER_ID.
func (w *Worker) ID() int { return w.slot }

// PID returns the worker's process id.
func (w *Worker) PID() int { return w.pid }

// Generation returns the generation the worker belongs to: 1 for the first,
// one more for each reload started.
func (w *Worker) Generation() int { return w.gen }

// Started returns when the worker was spawned.
func (w *Worker) Started() time.Time { return w.started }

// String names the worker by slot, pid and generation, for logs.
func (w *Worker) String() string {
	return fmt.Sprintf("worker %d (pid %d, gen %d)", w.slot, w.pid, w.gen)
}

// WorkerStatus is a snapshot of one worker.
type WorkerStatus struct {
	Slot       int         `json:"slot"`
	PID        int         `json:"pid"`
	Generation int         `json:"generation"`
	State      WorkerState `json:"state"`
	Started    time.Time   `json:"started"`
	Ready      bool        `json:"ready"`
	Restarts   int         `json:"restarts"` // of its slot, since the cluster started
	Status     string      `json:"status,omitempty"`
	Listening  bool        `json:"listening"`
	// RSSBytes and CPUSeconds are read from /proc when the snapshot is
	// taken (Linux only; 0 elsewhere), summed over the worker's process
	// tree: the worker and every process descended from it. CPUSeconds
	// includes the children it has reaped.
	RSSBytes   int64   `json:"rss_bytes"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// Status is a snapshot of a cluster.
type Status struct {
	Phase Phase `json:"phase"`
	// Slots is the number of slots (the Workers option, after any Scale).
	Slots int `json:"slots"`
	// Generation is the active generation.
	Generation int `json:"generation"`
	// Reloading is the generation being started by a reload, or 0.
	Reloading int            `json:"reloading,omitempty"`
	Workers   []WorkerStatus `json:"workers"`
	// Reloads counts finished reloads by outcome.
	Reloads map[ReloadOutcome]int `json:"reloads"`
	// FailingSlots lists slots in a crash loop: three workers in a row died
	// before they were ready or within Options.MinUptime (or the probation
	// of the reload that started them) of it. A slot leaves the list once
	// one of its workers stays up that long.
	FailingSlots []int `json:"failing_slots,omitempty"`
	// Sticky, when Options.Sticky is on, gives each slot's share of the
	// client address buckets.
	Sticky *StickyStatus `json:"sticky,omitempty"`
	// Handoffs counts idle connections that draining workers handed to the
	// master, by result: handed (to a new worker), no_worker and
	// send_failed (closed by the master).
	Handoffs map[string]int `json:"handoffs,omitempty"`
	// HandoffFallbacks counts connections that drained the old way
	// instead, by reason: tls, h2, hijacked, busy (still in a request at the
	// drain's bound), unsupported (not a plain socket), failed, and
	// no_new_worker (a worker drained with no worker to take its
	// connections: terminate, scale down, an aborted reload; counted once
	// per worker).
	HandoffFallbacks map[string]int `json:"handoff_fallbacks,omitempty"`
	// Version is the running master's build (its module version or the
	// one set at link time, and its VCS revision).
	Version string `json:"version,omitempty"`
	// Upgrades counts the upgrades in place (Cluster.Upgrade) this master
	// process went through; Upgraded is when the last one finished.
	Upgrades int       `json:"upgrades,omitempty"`
	Upgraded time.Time `json:"upgraded,omitzero"`
	// UpgradeFrozen is how long the last upgrade held the master still:
	// from taking its state to the new program's adoption of the workers
	// (the exec and the new runtime's start included).
	UpgradeFrozen time.Duration `json:"upgrade_frozen_ns,omitempty"`
}
