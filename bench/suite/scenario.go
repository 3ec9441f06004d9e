//go:build linux

package main

import (
	"context"
	"slices"
	"strings"
)

// Env is what every scenario gets: the binaries the suite built and how to
// report progress.
type Env struct {
	// Root is the repository's root directory, where the suite builds the
	// CLI and the worker programs.
	Root string
	// Dir is the suite's temporary directory; the binaries, control
	// sockets and master logs live there.
	Dir string
	// Recluster is the path of the recluster CLI.
	Recluster string
	// Hello is the path of the examples/hello binary.
	Hello string
	// Server is the path of the testdata/server binary (honours ?sleep=MS).
	Server string
	// Quick asks for a shrunken run (a smoke test).
	Quick bool
	// Log reports progress on stderr.
	Log func(format string, args ...any)
}

// Section is one scenario's part of the report.
type Section struct {
	Title, Markdown string
}

// Scenario is one benchmark of the suite.
type Scenario struct {
	// Name selects it with -only.
	Name string
	// Order places its section in the report (10, 20, ...).
	Order int
	// Run runs it and returns its section. An error is reported in the
	// section in place of figures.
	Run func(ctx context.Context, env *Env) (Section, error)
}

var scenarios []Scenario

// register adds a scenario; call it from an init function.
func register(s Scenario) { scenarios = append(scenarios, s) }

// selected returns the registered scenarios in report order, limited to
// the comma-separated names in only when it is not empty.
func selected(only string) []Scenario {
	out := slices.Clone(scenarios)
	slices.SortStableFunc(out, func(a, b Scenario) int { return a.Order - b.Order })
	if only == "" {
		return out
	}
	want := map[string]bool{}
	for _, n := range strings.Split(only, ",") {
		want[strings.TrimSpace(n)] = true
	}
	return slices.DeleteFunc(out, func(s Scenario) bool { return !want[s.Name] })
}
