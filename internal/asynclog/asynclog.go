// Package asynclog is an slog.Handler that never makes its caller wait for
// the log's sink. A master whose stderr is a pipe that nobody reads (a
// stalled journald or log collector) must go on supervising: records go
// into a bounded queue that a goroutine of its own writes out; when the
// queue is full they are dropped and counted, and once the sink takes
// lines again a warning in their place says how many were lost.
package asynclog

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/recluster-go/recluster/internal/lossy"
)

// DefaultCapacity is how many records may wait for a stuck sink before new
// ones are dropped: a few seconds of a busy master's log.
const DefaultCapacity = 4096

// DroppedMessage is the message of the record that reports dropped lines;
// its attribute "dropped" counts them.
const DroppedMessage = "recluster: the log output was blocked; log lines were dropped"

// Handler queues records for a handler that writes them. Handlers derived
// from one New (WithAttrs, WithGroup, WithLevel) share its queue, so their
// records keep one order.
type Handler struct {
	inner slog.Handler
	min   slog.Leveler // nil: inner decides alone
	out   *output
}

type output struct {
	queue   *lossy.Queue[item]
	dropped atomic.Int64
}

// item is a record for its handler, or a flush request when flushed is set.
type item struct {
	handler slog.Handler
	record  slog.Record
	flushed chan struct{}
}

// New returns a Handler that writes through inner from a goroutine of its
// own, holding up to capacity records (DefaultCapacity when capacity <= 0).
// Close ends the goroutine.
func New(inner slog.Handler, capacity int) *Handler {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	out := &output{}
	out.queue = lossy.New(capacity, func(it item) {
		if it.flushed != nil {
			close(it.flushed)
			return
		}
		it.handler.Handle(context.Background(), it.record)
	}, func(missed int) {
		r := slog.NewRecord(time.Now(), slog.LevelWarn, DroppedMessage, 0)
		r.AddAttrs(slog.Int("dropped", missed))
		inner.Handle(context.Background(), r)
	})
	return &Handler{inner: inner, out: out}
}

// Enabled reports whether inner takes records of level l, and l is at least
// the handler's own minimum.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool {
	if h.min != nil && l < h.min.Level() {
		return false
	}
	return h.inner.Enabled(ctx, l)
}

// Handle queues r and returns at once; it never reports an error, as the
// write happens later.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	if dropped, _ := h.out.queue.Push(item{handler: h.inner, record: r.Clone()}); dropped {
		h.out.dropped.Add(1)
	}
	return nil
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{inner: h.inner.WithAttrs(attrs), min: h.min, out: h.out}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name), min: h.min, out: h.out}
}

// WithLevel returns a handler on the same queue that drops records below
// min before they are queued.
func (h *Handler) WithLevel(min slog.Leveler) *Handler {
	return &Handler{inner: h.inner, min: min, out: h.out}
}

// Dropped returns how many records were dropped in all.
func (h *Handler) Dropped() int64 { return h.out.dropped.Load() }

// Flush waits until every record queued before it has been written, or ctx
// ends; it returns ctx's error then.
func (h *Handler) Flush(ctx context.Context) error {
	flushed := make(chan struct{})
	for {
		if h.out.queue.Offer(item{flushed: flushed}) {
			break
		}
		// The queue is full: wait for room, as the flush must come last.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case <-flushed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes what is queued and ends the writing goroutine; records
// handled later are dropped. It does not wait: Flush first to wait.
func (h *Handler) Close() { h.out.queue.Close() }
