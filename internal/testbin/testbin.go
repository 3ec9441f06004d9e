// Package testbin builds the repository's test programs and checks for
// leaked goroutines, for the tests of several packages: one TestMain
// shape instead of a copy in each.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

// Root returns the repository's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Main builds each package (a path relative to the repository root, such
// as "testdata/server") into a temporary directory that any user can read
// (workers may run as another user), calls set with the binaries' paths,
// runs the tests, and fails the run if a goroutine leaked. It does not
// return.
func Main(m *testing.M, set func(bins map[string]string), pkgs ...string) {
	dir, err := os.MkdirTemp("", "recluster-testbin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	bins := map[string]string{}
	for _, pkg := range pkgs {
		out := filepath.Join(dir, filepath.Base(pkg))
		build := exec.Command("go", "build", "-o", out, "./"+pkg)
		build.Dir = Root()
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		bins[pkg] = out
	}
	set(bins)
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// The library's fork thread is meant to live as long as the process.
		if err := goleak.Find(goleak.IgnoreAnyFunction("github.com/recluster-go/recluster.forkThread")); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
