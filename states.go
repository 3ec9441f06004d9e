package recluster

import (
	"fmt"
	"slices"
	"strings"
)

// WorkerState is where a worker is in its life: starting, then standby
// (during a reload) or active, then draining until it exits.
type WorkerState string

// The worker states.
const (
	// WorkerStarting: spawned, not ready yet.
	WorkerStarting WorkerState = "starting"
	// WorkerStandby: ready, and waiting for the rest of its generation
	// before it takes over its slot.
	WorkerStandby WorkerState = "standby"
	// WorkerActive: serving its slot.
	WorkerActive WorkerState = "active"
	// WorkerDraining: told to disconnect; it finishes its work and exits.
	WorkerDraining WorkerState = "draining"
)

var workerStates = []WorkerState{WorkerStarting, WorkerStandby, WorkerActive, WorkerDraining}

// String returns the state's name.
func (s WorkerState) String() string { return string(s) }

// MarshalText encodes the state as its name.
func (s WorkerState) MarshalText() ([]byte, error) { return []byte(s), nil }

// UnmarshalText decodes a state's name, and refuses any other word.
func (s *WorkerState) UnmarshalText(text []byte) error {
	return unmarshalName(s, text, workerStates, "worker state")
}

// Phase is where the cluster is in its life.
type Phase string

// The cluster phases.
const (
	// PhaseIdle: created, Run not called yet.
	PhaseIdle Phase = "idle"
	// PhaseRunning: Run succeeded; workers are kept in every slot.
	PhaseRunning Phase = "running"
	// PhaseTerminating: Terminate was called; the workers are draining.
	PhaseTerminating Phase = "terminating"
	// PhaseStopped: every worker has exited and the sockets are closed.
	PhaseStopped Phase = "stopped"
)

var phases = []Phase{PhaseIdle, PhaseRunning, PhaseTerminating, PhaseStopped}

// String returns the phase's name.
func (p Phase) String() string { return string(p) }

// MarshalText encodes the phase as its name.
func (p Phase) MarshalText() ([]byte, error) { return []byte(p), nil }

// UnmarshalText decodes a phase's name, and refuses any other word.
func (p *Phase) UnmarshalText(text []byte) error {
	return unmarshalName(p, text, phases, "cluster phase")
}

// ReloadOutcome is how a reload ended.
type ReloadOutcome string

// The reload outcomes.
const (
	// ReloadCommitted: the new generation took over.
	ReloadCommitted ReloadOutcome = "committed"
	// ReloadAborted: a new worker failed, or the reload was cancelled; the
	// old generation kept serving.
	ReloadAborted ReloadOutcome = "aborted"
	// ReloadSuperseded: a newer reload replaced it before it finished
	// (Reload returned ErrSuperseded).
	ReloadSuperseded ReloadOutcome = "superseded"
)

var reloadOutcomes = []ReloadOutcome{ReloadCommitted, ReloadAborted, ReloadSuperseded}

// String returns the outcome's name.
func (o ReloadOutcome) String() string { return string(o) }

// MarshalText encodes the outcome as its name.
func (o ReloadOutcome) MarshalText() ([]byte, error) { return []byte(o), nil }

// UnmarshalText decodes an outcome's name, and refuses any other word.
func (o *ReloadOutcome) UnmarshalText(text []byte) error {
	return unmarshalName(o, text, reloadOutcomes, "reload outcome")
}

// unmarshalName takes one of the known names, or the empty zero value.
func unmarshalName[T ~string](v *T, text []byte, known []T, what string) error {
	t := T(text)
	if t != "" && !slices.Contains(known, t) {
		return fmt.Errorf("recluster: %q is not a %s; want one of %s", string(text), what, names(known))
	}
	*v = t
	return nil
}

func names[T ~string](known []T) string {
	s := make([]string, len(known))
	for i, k := range known {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}
