package main

import (
	"github.com/coreos/go-systemd/v22/daemon"
)

// sdNotifier sends the master's own sd_notify messages to the
// NOTIFY_SOCKET that systemd gave it. The variable stays in the master's
// environment (go-systemd reads it there); workers never inherit it, as
// the library replaces it with a NOTIFY_SOCKET of their own.
type sdNotifier struct{ log func(msg string, args ...any) }

// send delivers state ("READY=1", ...) if the master runs under systemd.
func (n *sdNotifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil && n.log != nil {
		n.log("recluster: sd_notify failed", "error", err)
	}
}
