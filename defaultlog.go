package recluster

import (
	"context"
	"log/slog"

	"github.com/recluster-go/recluster/internal/asynclog"
)

// A cluster without Options.Logger logs through slog.Default(), but never
// waits for it: the supervisor must not stall when the master's stderr is
// a pipe that nobody reads. Its records go through a bounded queue of the
// cluster's own (lines dropped while the sink is stuck are counted, and
// reported once it moves), which the cluster closes when it stops.
func newDefaultLogger() (*slog.Logger, *asynclog.Handler) {
	h := asynclog.New(currentDefault{}, 0)
	return slog.New(h), h
}

// currentDefault writes through whatever slog.Default() is when a record
// is written, so that a program may set its default logger after New.
type currentDefault struct{}

func (currentDefault) Enabled(ctx context.Context, l slog.Level) bool {
	return slog.Default().Handler().Enabled(ctx, l)
}

func (currentDefault) Handle(ctx context.Context, r slog.Record) error {
	return slog.Default().Handler().Handle(ctx, r)
}

func (currentDefault) WithAttrs(attrs []slog.Attr) slog.Handler {
	return slog.Default().Handler().WithAttrs(attrs)
}

func (currentDefault) WithGroup(name string) slog.Handler {
	return slog.Default().Handler().WithGroup(name)
}

// closeDefaultLog writes what the default logger queued and ends its
// goroutine; the supervisor calls it as it ends.
func (c *Cluster) closeDefaultLog() {
	if c.defaultLog != nil {
		c.defaultLog.Close()
	}
}
