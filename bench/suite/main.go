//go:build linux

// Command suite runs recluster's benchmark scenarios and writes
// docs/benchmarks.md. It belongs to the bench module, so it runs from
// bench/ (or anywhere below the repository root):
//
//	cd bench
//	go run ./suite                 # the whole suite, at full scale
//	go run ./suite -quick          # a smoke run, every scenario shrunk
//	go run ./suite -only reload,balance -out /tmp/b.md
//
// It builds the recluster CLI and the worker programs (statically, as
// deploy/Dockerfile does) into a temporary directory, runs each scenario against 127.0.0.1 only, and writes a
// Markdown report headed by the date, the machine and the command.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	quick := flag.Bool("quick", false, "shrink every scenario (a smoke run of about 2 minutes)")
	only := flag.String("only", "", "comma-separated scenario names to run (default: all)")
	out := flag.String("out", "", "the report to write (- for stdout; default: docs/benchmarks.md in the repository)")
	keep := flag.Bool("keep", false, "keep the temporary directory (binaries and master logs)")
	list := flag.Bool("list", false, "list the scenarios and exit")
	update := flag.Bool("update", false, "with -only: replace just those scenarios' sections in the existing report, and say so in its header")
	flag.Parse()
	if *list {
		for _, s := range selected("") {
			fmt.Printf("%3d %s\n", s.Order, s.Name)
		}
		return
	}
	if *update && *only == "" {
		fmt.Fprintln(os.Stderr, "suite: -update rewrites the sections of the scenarios that -only names; give -only too")
		os.Exit(2)
	}
	if err := run(*quick, *only, *out, *keep, *update); err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		os.Exit(1)
	}
}

func run(quick bool, only, out string, keep, update bool) error {
	todo := selected(only)
	if len(todo) == 0 {
		return fmt.Errorf("no scenario matches -only %q (see -list)", only)
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join(root, "docs", "benchmarks.md")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "recluster-bench-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Fprintln(os.Stderr, "suite: keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	start := time.Now()
	env := &Env{
		Root: root,
		Dir:  dir,
		Log: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		},
		Quick: quick,
	}
	for _, b := range []struct {
		dst *string
		pkg string
	}{{&env.Recluster, "./cmd/recluster"}, {&env.Hello, "./examples/hello"}, {&env.Server, "./testdata/server"}} {
		*b.dst = filepath.Join(dir, filepath.Base(b.pkg))
		env.Log("go build %s", b.pkg)
		// Built as deploy/Dockerfile builds what it ships: static, so the
		// figures do not depend on whether the machine has a C compiler
		// (with one, cgo links libc and its threads into every binary).
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", *b.dst, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s in %s: %w", b.pkg, root, err)
		}
	}

	var body strings.Builder
	var sections []renderedSection
	for _, s := range todo {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		env.Log("== %s", s.Name)
		t0 := time.Now()
		sec, err := s.Run(ctx, env)
		if sec.Title == "" {
			sec.Title = s.Name
		}
		var text strings.Builder
		fmt.Fprintf(&text, "## %s\n\n", sec.Title)
		if sec.Markdown != "" {
			text.WriteString(strings.TrimRight(sec.Markdown, "\n") + "\n\n")
		}
		if err != nil {
			env.Log("%s: ERROR: %v", s.Name, err)
			fmt.Fprintf(&text, "**ERROR**: the scenario did not complete: `%s`\n\n", oneLine(err.Error()))
		}
		fmt.Fprintf(&text, "_Scenario `%s` took %s._\n\n", s.Name, time.Since(t0).Round(time.Second))
		env.Log("%s done in %s", s.Name, time.Since(t0).Round(time.Millisecond))
		body.WriteString(text.String())
		sections = append(sections, renderedSection{title: sec.Title, text: text.String()})
	}

	report := header(quick, time.Since(start)) + body.String()
	if update {
		old, err := os.ReadFile(out)
		if err != nil {
			return fmt.Errorf("-update needs the report to update: %w", err)
		}
		if report, err = updateReport(string(old), sections, time.Since(start)); err != nil {
			return err
		}
	}
	if out == "-" {
		_, err = os.Stdout.WriteString(report)
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	env.Log("writing %s", out)
	return os.WriteFile(out, []byte(report), 0o644)
}

// rootModule is the first line of the repository root's go.mod.
const rootModule = "module github.com/recluster-go/recluster"

// repoRoot finds the repository's root: the nearest directory at or above
// the working directory whose go.mod declares the recluster module (bench/
// has a go.mod of its own).
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			if first, _, _ := strings.Cut(string(b), "\n"); strings.TrimSpace(first) == rootModule {
				return dir, nil
			}
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("%s is not inside the recluster repository: run the suite from bench/ (cd bench && go run ./suite)", wd)
		}
	}
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "`", "'")
}

func header(quick bool, took time.Duration) string {
	var b strings.Builder
	b.WriteString("# recluster benchmarks\n\n")
	b.WriteString("Written by `go run ./suite` in bench/ (bench/suite); do not edit by hand. ")
	b.WriteString("See bench/README.md for what each scenario does and how to run one alone.\n\n")
	if quick {
		b.WriteString("**This is a -quick smoke run: every scenario is shrunk, the figures are not the published ones.**\n\n")
	}
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| Date | %s |\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "| Machine | %s |\n", cmdOut("uname", "-srm"))
	fmt.Fprintf(&b, "| CPU | %s, %d cores (GOMAXPROCS %d) |\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "| Memory | %s |\n", memTotal())
	fmt.Fprintf(&b, "| Go | %s |\n", cmdOut("go", "version"))
	fmt.Fprintf(&b, "| Command | `%s` |\n", commandLine())
	fmt.Fprintf(&b, "| Suite run time | %s |\n\n", took.Round(time.Second))
	b.WriteString("The load generator (bench/loadgen) runs in the same process as the suite, on the same machine as the cluster: ")
	b.WriteString("its clients compete with the workers for the same cores, so throughput figures are lower bounds. ")
	b.WriteString("Its clients never retry a request: every failure is counted.\n\n")
	return b.String()
}

func commandLine() string {
	args := []string{"cd bench && go run ./suite"}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"") {
			a = "'" + a + "'"
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

func cmdOut(name string, args ...string) string {
	b, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}
