package main

import (
	"sync"

	"github.com/recluster-go/recluster/internal/systemd"
)

// sdNotifier sends the master's own sd_notify messages to the
// NOTIFY_SOCKET that systemd gave it. The variable stays in the master's
// environment (systemd.Notify reads it there); workers never inherit it, as
// the library replaces it with a NOTIFY_SOCKET of their own.
//
// It keeps the order systemd expects whatever goroutine reports what:
// nothing before the first READY=1 but that READY=1, and nothing after
// STOPPING=1.
type sdNotifier struct {
	log func(msg string, args ...any)

	mu       sync.Mutex
	ready    bool // the first READY=1 was sent
	stopping bool // STOPPING=1 was sent
}

// send delivers state (systemd.Ready(...), ...) if the master runs under
// systemd.
func (n *sdNotifier) send(state ...string) {
	if err := systemd.Notify(state...); err != nil && n.log != nil {
		n.log("recluster: sd_notify failed", "error", err)
	}
}

// started sends the first READY=1, once.
func (n *sdNotifier) started(state ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ready || n.stopping {
		return
	}
	n.ready = true
	n.send(state...)
}

// hasStarted reports whether the first READY=1 was sent (or the stop has
// begun, after which it never will be).
func (n *sdNotifier) hasStarted() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ready || n.stopping
}

// update sends RELOADING=1 or a READY=1 that ends a reload: only between
// the first READY=1 and STOPPING=1.
func (n *sdNotifier) update(state ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.ready || n.stopping {
		return
	}
	n.send(state...)
}

// stop sends STOPPING=1, once.
func (n *sdNotifier) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping {
		return
	}
	n.stopping = true
	n.send(systemd.Stopping)
}
