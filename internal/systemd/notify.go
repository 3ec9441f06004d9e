package systemd

import (
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// The notifications without arguments.
const (
	Stopping = daemon.SdNotifyStopping
	Watchdog = daemon.SdNotifyWatchdog
)

// Notify sends state, one or more notifications joined by newlines, to
// the NOTIFY_SOCKET in the environment; without one it does nothing. The
// variable stays set, so a program can notify again (READY=1 after each
// reload, STOPPING=1 at the end).
func Notify(state ...string) error {
	_, err := daemon.SdNotify(false, strings.Join(state, "\n"))
	return err
}

// Ready is READY=1, with a status line when status is not empty.
func Ready(status string) string {
	if status == "" {
		return daemon.SdNotifyReady
	}
	return daemon.SdNotifyReady + "\n" + Status(status)
}

// Reloading is RELOADING=1 with the MONOTONIC_USEC that systemd requires
// with it (Type=notify-reload), and a status line when status is not
// empty. READY=1 ends the reload.
func Reloading(status string) string {
	msg := daemon.SdNotifyReloading + "\nMONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10)
	if status != "" {
		msg += "\n" + Status(status)
	}
	return msg
}

// Status is STATUS=text, on one line: a newline in text would start
// another notification (a READY=1, say) that the program did not mean.
func Status(text string) string {
	return "STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(text)
}

// MainPID is MAINPID=pid: the process systemd should watch when it is not
// the one it started (systemd-socket-activate, a wrapper script).
func MainPID(pid int) string {
	return "MAINPID=" + strconv.Itoa(pid)
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, the clock of
// MONOTONIC_USEC.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano() / 1000
}
