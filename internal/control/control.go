// Package control is the control socket of a running recluster master: a
// Unix stream socket, mode 0600, that accepts only peers of the master's
// own user (or root), checked with the kernel's peer credentials.
//
// The protocol is JSON lines: the client sends one Request line; the server
// answers with zero or more progress lines (Response.Progress set) and then
// one final line (Response.OK, or Response.Error), and closes the
// connection. The server runs in the master (recluster run); the client is
// used by the recluster subcommands reload, restart, status, scale, stop
// and top.
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
	// started.
	Wait bool `json:"wait,omitempty"`
	// Workers (scale): the new number of slots.
	Workers *int `json:"workers,omitempty"`
	// Delta (scale): slots to add (positive) or remove (negative).
	Delta *int `json:"delta,omitempty"`
	// Slots (restart): the slots whose workers to replace, in order.
	Slots []int `json:"slots,omitempty"`
	// Sample (status): measure each worker's CPU use over a short window
	// (about 200ms) instead of leaving CPUPercent zero.
	Sample bool `json:"sample,omitempty"`
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
	// client can tell a superseded reload from a failed one.
	Outcome recluster.ReloadOutcome `json:"outcome,omitempty"`
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
