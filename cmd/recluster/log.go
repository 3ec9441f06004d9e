package main

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/recluster-go/recluster/internal/asynclog"
)

// masterLog is the master's log on stderr. Nothing the master does waits
// for stderr: when the pipe behind it is full (a stalled journald or log
// collector), lines are dropped and counted rather than stall the
// supervisor, status, reloads and the workers' channels, and a warning
// says how many once the pipe drains.
type masterLog struct {
	// master is the command's own log, which has a line per event.
	master *slog.Logger
	// library is the cluster's log. Every lifecycle event already has a
	// line of its own, so the library's informational lines would say
	// everything twice: below debug level only its warnings and errors
	// are kept, less those that repeat an event (they carry an "event"
	// attribute), so that one event makes one line.
	library *slog.Logger
	handler *asynclog.Handler
}

func newMasterLog(cfg *runConfig, stderr io.Writer) *masterLog {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.logLevel))
	opts := &slog.HandlerOptions{Level: level}
	var sink slog.Handler = slog.NewTextHandler(stderr, opts)
	if cfg.logFormat == "json" {
		sink = slog.NewJSONHandler(stderr, opts)
	}
	h := asynclog.New(sink, 0)
	libraryLevel := level
	if level > slog.LevelDebug {
		libraryLevel = max(level, slog.LevelWarn)
	}
	return &masterLog{master: slog.New(h), library: slog.New(withoutEventLines{h.WithLevel(libraryLevel)}), handler: h}
}

// close writes what is queued, waiting a little for a slow stderr but not
// for ever for a stuck one, and ends the writing goroutine.
func (l *masterLog) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l.handler.Flush(ctx)
	l.handler.Close()
}
