// Package control is the control socket of a running recluster master: a
// Unix stream socket, mode 0600, that accepts only peers of the master's
// own user (or root), checked with the kernel's peer credentials.
//
// The protocol is JSON lines: the client sends one Request line; the server
// answers with zero or more progress lines (Response.Progress set, and
// Response.Event for a reload with Request.Progress) and then one final
// line (Response.OK, or Response.Error), and closes the connection. A
// field a client does not know may be ignored: new fields are only ever
// added, with omitempty, and a new request field changes nothing for a
// client that does not send it. The server runs in the master (recluster run); the client is
// used by the recluster subcommands reload, restart, status, scale, stop,
// logs and top.
package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/recluster-go/recluster"
)

// Commands carried in Request.Cmd.
const (
	// CmdStatus asks for a Status snapshot.
	CmdStatus = "status"
	// CmdReload starts a reload; with Wait the final answer comes once the
	// new generation is active or the reload was aborted.
	CmdReload = "reload"
	// CmdScale sets the number of slots (Workers) or changes it (Delta).
	CmdScale = "scale"
	// CmdRestart replaces the workers of Request.Slots, one slot at a time,
	// each ready-gated (Cluster.Restart); the final answer comes once every
	// slot is done, or at the first that failed.
	CmdRestart = "restart"
	// CmdStop stops the cluster gracefully; the final answer comes once
	// every worker has exited.
	CmdStop = "stop"
	// CmdLogs sends recent lines of the workers' output (Request.Lines,
	// Request.Slot), each in a progress line "output" with Response.Line,
	// then the final answer; with Request.Follow, a progress line
	// "following" and then new lines as they come, until the client closes
	// the connection (or the master stops: then a final answer). A
	// progress line "missed" with Response.Missed counts lines a follower
	// that read too slowly missed.
	CmdLogs = "logs"
	// CmdReopenLogs reopens the master's --log-file, as after logrotate
	// renamed it.
	CmdReopenLogs = "reopen-logs"
	// CmdUpgrade re-executes the master in place (Cluster.Upgrade); the
	// final answer comes from the new master, on the same connection.
	CmdUpgrade = "upgrade"
)

// MaxRequest bounds a request line.
const MaxRequest = 64 << 10

// Request is the one line a client sends.
type Request struct {
	Cmd string `json:"cmd"`
	// Wait (reload): answer when the reload has finished, not when it has
	// started. Wait (scale): answer once every slot has an active worker
	// and the removed slots' workers have exited.
	Wait bool `json:"wait,omitempty"`
	// Probation (reload with Wait): a duration such as "30s"; the answer
	// comes once the new generation has stayed up that long, and is an
	// error naming the slot if one of its workers died meanwhile.
	Probation string `json:"probation,omitempty"`
	// Progress (reload with Wait): send a progress line with an Event for
	// each step as it happens, and give the final answer only once the old
	// generation has exited (it is killed after the master's timeout).
	Progress bool `json:"progress,omitempty"`
	// Workers (scale): the new number of slots.
	Workers *int `json:"workers,omitempty"`
	// Delta (scale): slots to add (positive) or remove (negative).
	Delta *int `json:"delta,omitempty"`
	// Slots (restart): the slots whose workers to replace, in order.
	Slots []int `json:"slots,omitempty"`
	// Sample (status): measure each worker's CPU use over a short window
	// (about 200ms) instead of leaving CPUPercent zero.
	Sample bool `json:"sample,omitempty"`
	// Slot (logs): only this slot's lines.
	Slot *int `json:"slot,omitempty"`
	// Lines (logs): how many of the most recent lines to send; default
	// every line kept.
	Lines *int `json:"lines,omitempty"`
	// Follow (logs): go on with new lines as they come.
	Follow bool `json:"follow,omitempty"`
}

// Response is one line of the server's answer. A line with Progress set is
// followed by more; any other line is the final one.
type Response struct {
	OK       bool    `json:"ok"`
	Error    string  `json:"error,omitempty"`
	Progress string  `json:"progress,omitempty"`
	Message  string  `json:"message,omitempty"`
	Status   *Status `json:"status,omitempty"`
	// Outcome (reload with Wait) says how the reload ended, so that a
	// client can tell a superseded reload from a failed one. A reload whose
	// probation failed is "committed" with an Error: the new generation
	// serves, but one of its slots is crashing.
	Outcome recluster.ReloadOutcome `json:"outcome,omitempty"`
	// Line (logs) is a line of a worker's output.
	Line *recluster.OutputLine `json:"line,omitempty"`
	// Missed (logs with Follow) counts lines a slow follower missed.
	Missed int `json:"missed,omitempty"`
	// Event is the step a progress line reports (reload with Progress).
	Event *Event `json:"event,omitempty"`
	// Time (a reload's progress line without an Event) is when the master
	// said it: a client that stamped it on arrival would show it after
	// the events that happened meanwhile, with a later time than theirs.
	Time time.Time `json:"time,omitzero"`
}

// Event is a lifecycle event (recluster.Event) as the control socket
// carries it.
type Event struct {
	Kind       recluster.EventKind `json:"kind"`
	Time       time.Time           `json:"time"`
	Slot       int                 `json:"slot"` // -1 for the cluster's own events
	PID        int                 `json:"pid,omitempty"`
	Generation int                 `json:"generation,omitempty"`
	// ExitCode (exited) is -1 when Signal ended the worker.
	ExitCode int    `json:"exit_code,omitempty"`
	Signal   string `json:"signal,omitempty"`
	// DurationMS is a committed reload's time, a scheduled respawn's
	// delay, or how long a drained reload's old generation took to go.
	DurationMS float64 `json:"duration_ms,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// NewEvent converts a recluster.Event for the wire.
func NewEvent(e recluster.Event) *Event {
	out := &Event{Kind: e.Kind, Time: e.Time, Slot: e.Slot, PID: e.PID, Generation: e.Generation,
		ExitCode: e.ExitCode, Reason: e.Reason}
	if e.Signal != 0 {
		out.Signal = e.Signal.String()
	}
	if e.Err != nil {
		out.Error = e.Err.Error()
	}
	d := e.Duration
	if e.Kind == recluster.EventRespawnScheduled {
		d = e.Delay
	}
	out.DurationMS = float64(d) / float64(time.Millisecond)
	return out
}

// Duration returns DurationMS as a time.Duration.
func (e *Event) Duration() time.Duration {
	return time.Duration(e.DurationMS * float64(time.Millisecond))
}

// Status is the cluster's recluster.Status plus what only the command
// knows: the master's pid, its listening addresses and per-worker resource
// use.
type Status struct {
	recluster.Status
	MasterPID int `json:"master_pid"`
	// MasterExe is what /proc/<pid>/exe names: the file the master runs.
	MasterExe string   `json:"master_exe,omitempty"`
	Program   string   `json:"program,omitempty"`
	Addrs     []string `json:"addrs"`
	// Workers shadows recluster.Status.Workers with the resource figures.
	Workers []WorkerStatus `json:"workers"`
	// OutputDropped counts the lines of worker output the master dropped
	// because its stdout or stderr was blocked (Cluster.OutputDropped).
	OutputDropped int64 `json:"output_dropped"`
}

// WorkerStatus is recluster.WorkerStatus (which has the process's RSS and
// CPU time) plus its recent CPU use.
type WorkerStatus struct {
	recluster.WorkerStatus
	// CPUPercent is the CPU use over the sampling window (Request.Sample).
	CPUPercent float64 `json:"cpu_percent"`
}

// Uptime returns how long the worker has run, as of now.
func (w WorkerStatus) Uptime() time.Duration { return time.Since(w.Started) }

// DefaultPath returns the control socket path used when none is given:
// $XDG_RUNTIME_DIR/recluster.sock when XDG_RUNTIME_DIR is set, otherwise
// control.sock in a directory of the user's own, recluster-UID in the
// system's temporary directory (mode 0700, made by the master), so that no
// other user can take the path first. Two clusters of one user on one host
// need paths of their own (--control).
func DefaultPath() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "recluster.sock")
	}
	return filepath.Join(privateDir(), "control.sock")
}

func privateDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("recluster-%d", os.Getuid()))
}

// makePrivateDir creates the default socket's directory, or checks that
// the one there is this user's alone.
func makePrivateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("control socket directory %s: %w", dir, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control socket directory %s: %w", dir, err)
	}
	owner, ok := fileOwner(st)
	if !st.IsDir() || !ok || owner != os.Geteuid() || st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("control socket directory %s is not private: it must be a directory owned by uid %d with mode 0700; remove it, or give the socket another path with --control", dir, os.Geteuid())
	}
	return nil
}
