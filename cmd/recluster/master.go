package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/systemd"
)

// master is the running side of recluster run: it turns signals and
// control requests into cluster calls, logs the cluster's events and keeps
// systemd informed.
type master struct {
	c       *recluster.Cluster
	log     *slog.Logger
	notify  *sdNotifier
	stopReq chan struct{}

	// abortedByStop is set when a reload was aborted because of the stop:
	// the stop was not clean.
	abortedByStop atomic.Bool
	// eventsDone is closed once onEvent has seen the last event.
	eventsDone chan struct{}
}

// requestStop asks loop to stop the cluster; it never blocks.
func (m *master) requestStop() {
	select {
	case m.stopReq <- struct{}{}:
	default:
	}
}

// loop serves signals and stop requests until the cluster has stopped and
// returns the exit status.
func (m *master) loop(signals <-chan os.Signal) int {
	for {
		select {
		case sig := <-signals:
			switch sig {
			case syscall.SIGHUP, syscall.SIGUSR2:
				m.log.Info("recluster: reload requested", "signal", sig.String())
				go m.c.Reload(context.Background()) // onEvent logs the outcome
			case syscall.SIGTERM, syscall.SIGINT:
				m.log.Info("recluster: stop requested", "signal", sig.String())
				return m.stop(signals)
			case syscall.SIGTTIN, syscall.SIGTTOU:
				m.scaleBy(sig)
			case syscall.SIGUSR1:
				for _, w := range m.c.Workers() {
					syscall.Kill(w.PID(), syscall.SIGUSR1)
				}
			}
		case <-m.stopReq:
			m.log.Info("recluster: stop requested through the control socket")
			return m.stop(signals)
		case <-m.c.Done():
			return exitFailure
		}
	}
}

func (m *master) scaleBy(sig os.Signal) {
	delta := 1
	if sig == syscall.SIGTTOU {
		delta = -1
	}
	if _, err := m.c.ScaleBy(delta); err != nil {
		m.log.Warn("recluster: not scaling on "+sig.String(), "error", err)
	}
}

// stop terminates the cluster gracefully; a second TERM or INT kills what
// is left at once. Stopping in the middle of a reload is not a clean stop.
func (m *master) stop(signals <-chan os.Signal) int {
	m.notify.stop()
	reloading := m.c.Status().Reloading != 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		m.c.Terminate(ctx)
		close(done)
	}()
	for {
		select {
		case <-done:
			// The events of the stop, a reload it aborted among them, are
			// logged before the exit status is decided.
			select {
			case <-m.eventsDone:
			case <-time.After(2 * time.Second):
			}
			if reloading || m.abortedByStop.Load() {
				return exitFailure
			}
			return exitOK
		case sig := <-signals:
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				m.log.Warn("recluster: second stop signal: killing the workers", "signal", sig.String())
				cancel()
			}
		case <-m.stopReq:
		}
	}
}

// onEvent logs every lifecycle event as one structured line and tells
// systemd about readiness and reloads.
func (m *master) onEvent(e recluster.Event) {
	attrs := []any{"event", string(e.Kind)}
	if e.Slot >= 0 {
		attrs = append(attrs, "slot", e.Slot, "pid", e.PID)
	}
	if e.Generation > 0 {
		attrs = append(attrs, "generation", e.Generation)
	}
	switch e.Kind {
	case recluster.EventExited:
		if e.Signal != 0 {
			attrs = append(attrs, "signal", e.Signal.String())
		} else {
			attrs = append(attrs, "exit_code", e.ExitCode)
		}
	case recluster.EventRespawnScheduled:
		attrs = append(attrs, "delay", e.Delay.Round(time.Millisecond).String())
	case recluster.EventReloadCommitted:
		attrs = append(attrs, "took", e.Duration.Round(time.Millisecond).String())
	}
	if e.Addr != nil {
		attrs = append(attrs, "addr", e.Addr.String())
	}
	if e.Reason != "" {
		attrs = append(attrs, "reason", e.Reason)
	}
	if e.Err != nil {
		attrs = append(attrs, "error", e.Err.Error())
	}
	if e.Message != "" {
		attrs = append(attrs, "message", e.Message)
	}
	m.log.Log(context.Background(), eventLevel(e), "recluster: "+string(e.Kind), attrs...)

	switch e.Kind {
	case recluster.EventActive:
		if m.allActive() {
			m.notify.started(systemd.Ready(fmt.Sprintf("%d workers active (generation %d)", m.c.Status().Slots, e.Generation)), systemd.MainPID(os.Getpid()))
		}
	case recluster.EventReloadStarted:
		m.notify.update(systemd.Reloading(fmt.Sprintf("reloading to generation %d", e.Generation)))
	case recluster.EventReloadCommitted:
		m.notify.update(systemd.Ready(fmt.Sprintf("generation %d active", e.Generation)))
	case recluster.EventReloadAborted:
		if m.notify.isStopping() {
			m.abortedByStop.Store(true)
		}
		if e.Reason != "superseded" {
			m.notify.update(systemd.Ready(fmt.Sprintf("reload to generation %d aborted", e.Generation)))
		}
	case recluster.EventStopped:
		close(m.eventsDone)
	}
}

// eventLevel is how much an event matters to an operator: what went wrong
// is a warning or an error, the rest is information.
func eventLevel(e recluster.Event) slog.Level {
	switch e.Kind {
	case recluster.EventKilled:
		return slog.LevelWarn
	case recluster.EventListenFailed:
		return slog.LevelError
	case recluster.EventReloadAborted:
		if e.Reason != "superseded" {
			return slog.LevelError
		}
	case recluster.EventExited:
		// A SIGKILL is ours (its kill line warned already) or the OOM
		// killer's; any other signal or a non-zero code is a crash.
		if (e.Signal != 0 && e.Signal != syscall.SIGKILL) || (e.Signal == 0 && e.ExitCode != 0) {
			return slog.LevelWarn
		}
	}
	return slog.LevelInfo
}

// allActive reports whether every slot has an active worker.
func (m *master) allActive() bool {
	st := m.c.Status()
	active := map[int]bool{}
	for _, w := range st.Workers {
		if w.State == "active" {
			active[w.Slot] = true
		}
	}
	return st.Phase == "running" && len(active) >= st.Slots
}
