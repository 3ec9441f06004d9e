package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
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

// logFile is --log-file: the master's log and the workers' output, which
// would otherwise go to stderr and stdout, appended to one file that
// Reopen opens again by its name, after logrotate renamed it. Each Write
// is one line (the master's log and the output relay write whole lines),
// and goes whole to one file: Reopen waits for the write in progress.
type logFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openLogFile(path string) (*logFile, error) {
	l := &logFile{path: path}
	if err := l.Reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// Write appends p to the file open now.
func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Reopen opens the path again, creating the file if it is gone, and
// closes the file it replaces; when the path cannot be opened, writing
// goes on to the old file and the error says why.
func (l *logFile) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("--log-file: %w", err)
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Close closes the file.
func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// reopenLogFile reopens --log-file, for USR1 and recluster logs --reopen.
func (m *master) reopenLogFile() error {
	if m.logFile == nil {
		return errors.New("this master writes no log file: it was started without --log-file")
	}
	if err := m.logFile.Reopen(); err != nil {
		m.log.Warn("recluster: cannot reopen the log file; writing on to the old one", "error", err)
		return err
	}
	m.log.Info("recluster: log file reopened", "path", m.logFile.path)
	return nil
}
