// Command loadgen runs the closed-loop HTTP/1.1 load generator of package
// github.com/recluster-go/recluster/bench/loadgen against a server,
// optionally reloading it at an interval, and prints a summary.
//
// Usage:
//
//	loadgen -url http://127.0.0.1:8080/ -c 32 -d 10s [-mode keepalive|new]
//	loadgen -url ... -reload-cmd 'kill -HUP $(cat master.pid)' -reload-every 2s -reloads 5
//	loadgen -url ... -reload-signal HUP -reload-pid 1234 -reload-every 2s -reloads 5 -json
//
// The human summary (Markdown) goes to standard output; with -json the JSON
// result goes to standard output and the summary to standard error.
//
// Exit status: 0 when the run completed (whatever failed, unless -strict),
// 1 on a runtime error, 2 on bad flags, 3 with -strict when any request or
// reload failed.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// headerFlags collects repeated -H "Name: value" flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

// run is the command with its arguments and outputs; it returns the exit
// status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		target        = fs.String("url", "http://127.0.0.1:8080/", "target `URL` (http only)")
		mode          = fs.String("mode", string(loadgen.ModeKeepAlive), "connection mode: keepalive (one persistent connection per client) or new (a connection per request)")
		clients       = fs.Int("c", 8, "number of concurrent closed-loop clients")
		duration      = fs.Duration("d", 0, "run duration (0: bounded by -n or -reloads)")
		requests      = fs.Int64("n", 0, "total number of requests (0: bounded by -d or -reloads)")
		timeout       = fs.Duration("timeout", loadgen.DefaultTimeout, "per-request deadline (dial, write, whole response)")
		method        = fs.String("method", "", "request method (default GET, or POST with -body)")
		body          = fs.String("body", "", "request body")
		host          = fs.String("host", "", "Host header (default: the URL's host)")
		reloadCmd     = fs.String("reload-cmd", "", "reload by running this shell `command` (sh -c)")
		reloadSignal  = fs.String("reload-signal", "", "reload by sending this `signal` (HUP, USR2, SIGHUP, 1, ...) to -reload-pid")
		reloadPID     = fs.Int("reload-pid", 0, "`pid` to send -reload-signal to")
		reloadEvery   = fs.Duration("reload-every", time.Second, "pause before each reload")
		reloads       = fs.Int("reloads", 0, "number of reloads; the run ends -tail after the last (0: reload until -d or -n ends the run)")
		reloadTimeout = fs.Duration("reload-timeout", time.Minute, "time limit of one reload (0: none)")
		tail          = fs.Duration("tail", loadgen.DefaultTail, "load kept after the last reload (0: none)")
		examples      = fs.Int("examples", loadgen.DefaultMaxExamples, "example errors kept per failure kind")
		jsonOut       = fs.Bool("json", false, "print the JSON result on stdout (summary on stderr)")
		strict        = fs.Bool("strict", false, "exit with status 3 if any request or reload failed")
		headers       headerFlags
	)
	fs.Var(&headers, "H", "extra request header `\"Name: value\"` (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "loadgen: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected arguments %q", fs.Args())
	}

	addr, path, hostHeader, err := parseTarget(*target)
	if err != nil {
		return usage("%v", err)
	}
	if *host != "" {
		hostHeader = *host
	}
	cfg := loadgen.Config{
		Addr:          addr,
		Host:          hostHeader,
		Path:          path,
		Method:        strings.ToUpper(*method),
		Mode:          loadgen.Mode(*mode),
		Clients:       *clients,
		Duration:      *duration,
		Requests:      *requests,
		Timeout:       *timeout,
		ReloadEvery:   *reloadEvery,
		Reloads:       *reloads,
		ReloadTimeout: *reloadTimeout,
		Tail:          *tail,
		MaxExamples:   *examples,
	}
	if cfg.Tail == 0 {
		cfg.Tail = -1 // the library's "none"
	}
	if cfg.MaxExamples == 0 {
		cfg.MaxExamples = -1
	}
	if *clients <= 0 {
		return usage("-c must be positive")
	}
	if *body != "" {
		cfg.Body = []byte(*body)
	}
	if len(headers) > 0 {
		cfg.Header = make(http.Header)
		for _, h := range headers {
			name, value, ok := strings.Cut(h, ":")
			if !ok || strings.TrimSpace(name) == "" {
				return usage("bad -H %q: want \"Name: value\"", h)
			}
			cfg.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
		}
	}

	switch {
	case *reloadCmd != "" && *reloadSignal != "":
		return usage("-reload-cmd and -reload-signal are exclusive")
	case *reloadCmd != "":
		cfg.Reload = commandReload(*reloadCmd)
	case *reloadSignal != "":
		sig, err := parseSignal(*reloadSignal)
		if err != nil {
			return usage("%v", err)
		}
		if *reloadPID <= 0 {
			return usage("-reload-signal needs -reload-pid")
		}
		cfg.Reload = signalReload(*reloadPID, sig)
	case *reloadPID != 0:
		return usage("-reload-pid needs -reload-signal")
	case *reloads != 0:
		return usage("-reloads needs -reload-cmd or -reload-signal")
	}
	if cfg.Duration == 0 && cfg.Requests == 0 && (cfg.Reload == nil || cfg.Reloads == 0) {
		return usage("no bound: set -d, -n or -reloads (with a reload action)")
	}

	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 2
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
			return 1
		}
		fmt.Fprint(stderr, res.Markdown())
	} else {
		fmt.Fprint(stdout, res.Markdown())
	}
	if res.StopReason == loadgen.StopCanceled {
		fmt.Fprintln(stderr, "loadgen: interrupted; results are partial")
		return 1
	}
	if *strict && (res.Failures.Total() > 0 || res.ReloadErrors() > 0) {
		return 3
	}
	return 0
}

// parseTarget splits an http URL into the dial address (host:port, port 80
// by default), the request target and the Host header.
func parseTarget(raw string) (addr, path, host string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", "", fmt.Errorf("bad -url: %v", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return "", "", "", fmt.Errorf("bad -url %q: want http://host:port/path", raw)
	}
	if u.User != nil || u.Fragment != "" {
		return "", "", "", fmt.Errorf("bad -url %q: user info and fragments are not supported", raw)
	}
	addr = u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return addr, u.RequestURI(), u.Host, nil
}

// parseSignal parses a signal given as a name with or without the SIG
// prefix (case-insensitive) or as a number.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 {
			return 0, fmt.Errorf("bad signal number %d", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if sig, ok := signals[name]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// signalReload returns a reload hook that sends sig to pid. The reload
// counts as done once the signal is delivered; it cannot observe the
// reload's completion.
func signalReload(pid int, sig syscall.Signal) func(context.Context) error {
	return func(context.Context) error {
		p, err := os.FindProcess(pid)
		if err != nil {
			return err
		}
		return p.Signal(sig)
	}
}

// maxOutput bounds the output of a reload command kept for its error.
const maxOutput = 2048

// commandReload returns a reload hook that runs command with sh -c and
// waits for it. A non-zero exit is an error carrying the end of the
// command's output (stdout and stderr). The command is killed (with its
// process group, where supported) when the hook's context is canceled.
func commandReload(command string) func(context.Context) error {
	return func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, "sh", "-c", command)
		out := &tailBuffer{max: maxOutput}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.WaitDelay = 2 * time.Second
		killGroupOnCancel(cmd)
		err := cmd.Run()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		if o := strings.TrimSpace(out.String()); o != "" {
			return fmt.Errorf("reload command: %w; output: %s", err, o)
		}
		return fmt.Errorf("reload command: %w", err)
	}
}

// tailBuffer keeps the last max bytes written to it. It is safe for
// concurrent writes (stdout and stderr of a command).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

// Write implements io.Writer.
func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if extra := t.buf.Len() - t.max; extra > 0 {
		t.buf.Next(extra)
	}
	return len(p), nil
}

// String returns the kept output.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
