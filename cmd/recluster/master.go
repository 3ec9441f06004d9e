package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"

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
	// slots is the number of slots the last Status showed. allActive
	// keeps it, on the event goroutine (onEvent) and, after an upgrade in
	// place, on the main one.
	slots   atomic.Int64
	logFile *logFile // --log-file, or nil

	// stopping is set once the stop has begun.
	stopping atomic.Bool
	// abortedByStop is set when a reload was aborted because of the stop:
	// the stop was not clean.
	abortedByStop atomic.Bool
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
				m.reopenLogFile()
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
	m.stopping.Store(true)
	m.notify.stop()
	if drain := m.c.Options().Timeout; drain > 0 {
		m.log.Info(fmt.Sprintf("recluster: stopping: the workers have up to %v to finish their work; a second Ctrl-C (INT or TERM) kills them now", drain),
			"workers", len(m.c.Workers()), "timeout", drain.String())
	}
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
			// The events of the stop, a reload it aborted among them, were
			// seen by logEvent before Terminate returned.
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

// logEvent logs every lifecycle event as one line. The cluster calls it on
// its supervisor goroutine (Options.OnEventSync), so no event is ever left
// out; it must not wait, and the master's log never does. Messages the
// master does not act on are logged by the library, a first one and then
// a count, not one line each.
func (m *master) logEvent(e recluster.Event) {
	switch e.Kind {
	case recluster.EventMessage:
		return
	case recluster.EventReloadAborted:
		if m.stopping.Load() {
			m.abortedByStop.Store(true)
		}
	}
	m.log.LogAttrs(context.Background(), eventLevel(e), "recluster: "+string(e.Kind), e.Attrs()...)
}

// onEvent keeps systemd informed about readiness and reloads. It calls the
// cluster back, so it runs behind the cluster's event queue
// (Options.OnEvent); after events it missed, it tells systemd the state
// the cluster is in now.
func (m *master) onEvent(e recluster.Event) {
	switch e.Kind {
	case recluster.EventActive:
		// Only the first READY=1 needs this check, and a reload of N
		// workers makes N of these events.
		if !m.notify.hasStarted() && m.allActive() {
			m.notify.started(firstReady(int(m.slots.Load()), e.Generation))
			go returnMemory()
		}
	case recluster.EventReloadDrained:
		go returnMemory()
	case recluster.EventReloadStarted:
		m.notify.update(systemd.Reloading(fmt.Sprintf("reloading to generation %d", e.Generation)))
	case recluster.EventReloadCommitted:
		m.notify.update(reloaded(e.Generation))
	case recluster.EventReloadAborted:
		if !errors.Is(e.Err, recluster.ErrSuperseded) {
			m.notify.update(systemd.Ready(fmt.Sprintf("reload to generation %d aborted", e.Generation)))
		}
	case recluster.EventMissed:
		m.log.Warn("recluster: the systemd notifier fell behind the cluster's events", "missed", e.Missed)
		if st := m.c.Status(); st.Reloading == 0 && m.allActive() {
			m.notify.started(firstReady(st.Slots, st.Generation))
			m.notify.update(reloaded(st.Generation))
		}
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
		if !errors.Is(e.Err, recluster.ErrSuperseded) {
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

// firstReady is the sd_notify state once every slot is first served.
func firstReady(slots, gen int) string {
	return systemd.Ready(fmt.Sprintf("%d workers active (generation %d)", slots, gen)) + "\n" + systemd.MainPID(os.Getpid())
}

// reloaded is the sd_notify state once generation gen serves every slot.
func reloaded(gen int) string {
	return systemd.Ready(fmt.Sprintf("generation %d active", gen))
}

// allActive reports whether every slot has an active worker. It counts
// the active workers first, which costs the supervisor a glance, and asks
// for the Status, which reads /proc for every worker, only when they
// might be enough.
func (m *master) allActive() bool {
	if int64(len(m.c.ActiveWorkers())) < m.slots.Load() {
		return false
	}
	st := m.c.Status()
	m.slots.Store(int64(st.Slots))
	active := map[int]bool{}
	for _, w := range st.Workers {
		if w.State == recluster.WorkerActive {
			active[w.Slot] = true
		}
	}
	return st.Phase == recluster.PhaseRunning && len(active) >= st.Slots
}
