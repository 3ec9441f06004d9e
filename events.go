package recluster

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/lossy"
)

// EventKind names a lifecycle event.
type EventKind string

// The events a Cluster reports through Options.OnEventSync and
// Options.OnEvent.
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
	EventReloadDrained    EventKind = "reload-drained"    // every worker a committed reload replaced has exited (Duration since the commit)
	EventMessage          EventKind = "message"           // a worker sent something the master does not act on (Message)
	EventStopped          EventKind = "stopped"           // the cluster has terminated
	// EventMissed stands, in OnEvent's sequence only, where events were
	// dropped because the handler fell too far behind (Missed counts
	// them). OnEventSync never misses one.
	EventMissed EventKind = "missed"
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
	// Duration is how long a committed reload took, or for
	// EventReloadDrained how long its old generation took to go.
	Duration time.Duration
	Addr     net.Addr
	Reason   string
	Err      error
	// Message is the command of a message the master does not act on, for
	// EventMessage.
	Message string
	// Missed is how many events an OnEvent handler missed, for EventMissed.
	Missed int
}

// Attrs renders the event as log attributes: the one text form of an
// event, used by String and by the command's log.
func (e Event) Attrs() []slog.Attr {
	attrs := []slog.Attr{slog.String("event", string(e.Kind))}
	if e.Slot >= 0 {
		attrs = append(attrs, slog.Int("slot", e.Slot), slog.Int("pid", e.PID))
	}
	if e.Generation > 0 {
		attrs = append(attrs, slog.Int("generation", e.Generation))
	}
	switch e.Kind {
	case EventExited:
		if e.Signal != 0 {
			attrs = append(attrs, slog.String("signal", e.Signal.String()))
		} else {
			attrs = append(attrs, slog.Int("exit_code", e.ExitCode))
		}
	case EventRespawnScheduled:
		attrs = append(attrs, slog.String("delay", e.Delay.Round(time.Millisecond).String()))
	case EventReloadCommitted, EventReloadDrained:
		attrs = append(attrs, slog.String("took", e.Duration.Round(time.Millisecond).String()))
	case EventMissed:
		attrs = append(attrs, slog.Int("missed", e.Missed))
	}
	if e.Addr != nil {
		attrs = append(attrs, slog.String("addr", e.Addr.String()))
	}
	if e.Reason != "" {
		attrs = append(attrs, slog.String("reason", e.Reason))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	if e.Message != "" {
		attrs = append(attrs, slog.String("message", e.Message))
	}
	return attrs
}

// String renders the event as one log-friendly line: its kind and its
// attributes as key=value.
func (e Event) String() string {
	var b strings.Builder
	for i, a := range e.Attrs() {
		if i == 0 {
			b.WriteString(a.Value.String())
			continue
		}
		fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
	}
	return b.String()
}

// eventQueueSize bounds the events waiting for a slow Options.OnEvent.
const eventQueueSize = 4096

// eventQueue hands events to Options.OnEvent in order, from a goroutine of
// its own, so that a slow callback never stalls the supervisor and a
// callback may call back into the Cluster. A callback that falls more than
// eventQueueSize events behind misses the newest ones and is told how many
// with an EventMissed in their place.
type eventQueue struct{ q *lossy.Queue[Event] }

func newEventQueue(handler func(Event)) *eventQueue {
	if handler == nil {
		return nil
	}
	return &eventQueue{lossy.New(eventQueueSize, handler, func(missed int) {
		handler(Event{Kind: EventMissed, Time: time.Now(), Slot: -1, Missed: missed})
	})}
}

// push reports true when e is the first event dropped since the handler
// last kept up.
func (q *eventQueue) push(e Event) (newGap bool) {
	if q == nil {
		return false
	}
	_, newGap = q.q.Push(e)
	return newGap
}

// close lets the handler have what is queued, and a last EventMissed if it
// is behind.
func (q *eventQueue) close() {
	if q != nil {
		q.q.Close()
	}
}
