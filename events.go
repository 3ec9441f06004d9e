package recluster

import (
	"fmt"
	"net"
	"syscall"
	"time"
)

// EventKind names a lifecycle event.
type EventKind string

// The events a Cluster reports through Options.OnEvent.
const (
	EventSpawned          EventKind = "spawned"           // a worker process started
	EventListening        EventKind = "listening"         // a worker obtained a listener (Addr)
	EventListenFailed     EventKind = "listen-failed"     // the master could not bind what a worker asked for (Err)
	EventReady            EventKind = "ready"             // a worker became ready
	EventActive           EventKind = "active"            // a worker took over its slot
	EventDisconnect       EventKind = "disconnect"        // a worker was told to disconnect (Reason)
	EventRetire           EventKind = "retire"            // a worker asked to be replaced
	EventKilled           EventKind = "killed"            // a worker was killed (Reason)
	EventExited           EventKind = "exited"            // a worker ended (ExitCode or Signal)
	EventRespawnScheduled EventKind = "respawn-scheduled" // a slot will get a new worker after Delay
	EventReloadStarted    EventKind = "reload-started"    // a new generation is starting
	EventReloadCommitted  EventKind = "reload-committed"  // the new generation is active (Duration)
	EventReloadAborted    EventKind = "reload-aborted"    // the new generation was dropped (Err)
	EventMessage          EventKind = "message"           // a worker sent something the master does not act on (Message)
	EventStopped          EventKind = "stopped"           // the cluster has terminated
)

// Event describes something that happened to the cluster or one of its
// workers. Fields that do not apply to a kind are zero; Slot and PID are -1
// and 0 for cluster-wide events.
type Event struct {
	Kind       EventKind
	Time       time.Time
	Slot       int
	PID        int
	Generation int
	// ExitCode is the exit status of an exited worker, or -1 when a signal
	// ended it.
	ExitCode int
	// Signal is the signal that ended an exited worker, if any.
	Signal syscall.Signal
	// Delay is how long until a scheduled respawn.
	Delay time.Duration
	// Duration is how long a committed reload took.
	Duration time.Duration
	Addr     net.Addr
	Reason   string
	Err      error
	// Message is the command of a message the master does not act on, for
	// EventMessage.
	Message string
}

// String renders the event as one log-friendly line.
func (e Event) String() string {
	s := string(e.Kind)
	if e.Slot >= 0 {
		s += fmt.Sprintf(" slot=%d pid=%d gen=%d", e.Slot, e.PID, e.Generation)
	} else if e.Generation > 0 {
		s += fmt.Sprintf(" gen=%d", e.Generation)
	}
	if e.Kind == EventExited {
		if e.Signal != 0 {
			s += " signal=" + e.Signal.String()
		} else {
			s += fmt.Sprintf(" code=%d", e.ExitCode)
		}
	}
	if e.Reason != "" {
		s += " reason=" + e.Reason
	}
	if e.Err != nil {
		s += " err=" + e.Err.Error()
	}
	return s
}

// eventQueue hands events to Options.OnEvent in order, from a goroutine of
// its own, so that a slow callback never stalls the supervisor and a
// callback may call back into the Cluster.
type eventQueue struct {
	ch      chan Event
	dropped int
}

const eventQueueSize = 4096

func newEventQueue(handler func(Event)) *eventQueue {
	if handler == nil {
		return nil
	}
	q := &eventQueue{ch: make(chan Event, eventQueueSize)}
	go func() {
		for e := range q.ch {
			handler(e)
		}
	}()
	return q
}

// push reports false when the handler has fallen so far behind that the
// event had to be dropped.
func (q *eventQueue) push(e Event) bool {
	if q == nil {
		return true
	}
	select {
	case q.ch <- e:
		return true
	default:
		q.dropped++
		return false
	}
}

func (q *eventQueue) close() {
	if q != nil {
		close(q.ch)
	}
}
