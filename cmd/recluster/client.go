package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/control"
)

const controlFlagHelp = `  --control PATH  the master's control socket (default: $RECLUSTER_CONTROL,
                  else $XDG_RUNTIME_DIR/recluster.sock, else
                  recluster-UID/control.sock in $TMPDIR or /tmp)
  -h, --help      show this help
`

const reloadUsage = `Usage: recluster reload [--probation DUR] [--quiet] [--no-wait] [--control PATH]

Reload the cluster: start a new generation of workers, wait until every one
is ready, then tell the old workers to finish their work and exit. If a new
worker exits or is not ready in time, the reload is aborted and the old
workers keep serving.

By default reload waits and shows each step as it happens, with its time
since the start: every new worker started and ready, the commit, and every
old worker gone. It exits 0 once the new generation is active and the old
one has exited (the master kills old workers after its --timeout), and 1
with the reason when the reload was aborted.

With --probation, reload also waits until the new generation has stayed up
for DUR. If one of its workers dies meanwhile, reload exits 1 naming the
slot, the pid and how it died. The new generation stays active (the old one
is already gone); its slot is respawned, and is marked failing (recluster
status, /readyz) when its workers keep dying within the probation.

Flags:
      --probation DUR  wait until the new generation has stayed up for DUR,
                       such as 30s, before reporting success (default 0)
  -q, --quiet          print only the outcome, once the new generation is
                       active (and through its probation); do not wait for
                       the old workers to exit
      --no-wait        return once the reload has started
` + controlFlagHelp

const statusUsage = `Usage: recluster status [--json] [--control PATH]

Show the cluster's workers: slot, pid, generation, state (starting, standby,
active, draining), uptime, restarts of the slot, resident memory and CPU use
(measured over 200ms), and the worker's last STATUS= line; above them, the
master's pid, version, and its upgrades in place (recluster upgrade).

Flags:
  --json          print the status as one JSON object instead of a table
` + controlFlagHelp

const scaleUsage = `Usage: recluster scale N|+N|-N [--no-wait] [--control PATH]

Set the number of workers to N, or add N (+N) or remove N (-N). New slots get
workers at once; removed slots are the highest ones, whose workers are told
to finish their work and exit. The cluster keeps at least one worker.

By default scale waits until every slot has an active worker and the workers
of removed slots have exited, showing each new slot as it gets its worker;
it exits 1 if a slot is failing (its workers keep dying).

Flags:
      --no-wait   return once the change is made, before the new workers are
                  ready
` + controlFlagHelp

const stopUsage = `Usage: recluster stop [--control PATH]

Stop the cluster gracefully: every worker is told to finish its work and
exit (and killed after the master's --timeout), then the master exits.
stop returns once the master has stopped.

Flags:
` + controlFlagHelp

// clientFlags parses a client command's flags; it returns the control
// socket path and the remaining arguments.
func clientFlags(name, usage string, args []string, extra func(*flag.FlagSet)) (string, []string, error) {
	fs := flag.NewFlagSet("recluster "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	path := os.Getenv("RECLUSTER_CONTROL")
	if path == "" {
		path = control.DefaultPath()
	}
	fs.Var(stringValue{&path, notEmpty}, "control", "")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Print(usage)
			return "", nil, errHelpShown
		}
		return "", nil, usagef("%s: %s (see recluster help %s)", name, flagError(err), name)
	}
	return path, fs.Args(), nil
}

func noArgs(name string, rest []string) error {
	if len(rest) > 0 {
		return usagef("%s: unexpected argument %q (see recluster help %s)", name, rest[0], name)
	}
	return nil
}

func reloadCommand(args []string, stdout, stderr io.Writer) error {
	noWait, quiet := false, false
	var probation time.Duration
	var probationSet bool
	path, rest, err := clientFlags("reload", reloadUsage, args, func(fs *flag.FlagSet) {
		fs.Var(boolValue{&noWait}, "no-wait", "")
		fs.Var(boolValue{&quiet}, "quiet", "")
		fs.Var(boolValue{&quiet}, "q", "")
		fs.Var(durationValue{&probation, &probationSet, atLeast(0, "the probation must not be negative")}, "probation", "")
	})
	if err != nil {
		return err
	}
	if err := noArgs("reload", rest); err != nil {
		return err
	}
	if noWait && probationSet {
		return usagef("reload: --probation needs the reload to wait; leave out --no-wait")
	}
	req := control.Request{Cmd: control.CmdReload, Wait: !noWait, Progress: !noWait && !quiet}
	if probation > 0 {
		req.Probation = probation.String()
	}
	view := newProgressView(stdout)
	show := func(r control.Response) {
		if req.Progress {
			view.show(r)
		}
	}
	resp, err := control.Do(context.Background(), path, req, show)
	var remote *control.RemoteError
	if errors.As(err, &remote) && strings.Contains(remote.Msg, "unknown field") && req.Probation == "" {
		// A master older than the progress lines: it refused the request
		// before it did anything, so it is safe to ask again the old way.
		req.Progress = false
		resp, err = control.Do(context.Background(), path, req, nil)
	}
	if errors.Is(err, recluster.ErrSuperseded) {
		return errors.New("reload superseded: a newer reload replaced this one before it finished, and goes on (see recluster status)")
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, view.p.good(resp.Message))
	return nil
}

func statusCommand(args []string, stdout io.Writer) error {
	asJSON := false
	path, rest, err := clientFlags("status", statusUsage, args, func(fs *flag.FlagSet) {
		fs.Var(boolValue{&asJSON}, "json", "")
	})
	if err != nil {
		return err
	}
	if err := noArgs("status", rest); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := control.Do(ctx, path, control.Request{Cmd: control.CmdStatus, Sample: true}, nil)
	if err != nil {
		return err
	}
	if resp.Status == nil {
		return errors.New("the master's answer has no status")
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(resp.Status)
	}
	printStatus(stdout, resp.Status)
	return nil
}

// printStatus writes the status as a table, as pm2 ls does.
func printStatus(w io.Writer, st *control.Status) {
	fmt.Fprintf(w, "master pid %d, %s, %d workers, generation %d", st.MasterPID, st.Phase, st.Slots, st.Generation)
	if st.Reloading != 0 {
		fmt.Fprintf(w, ", reloading to generation %d", st.Reloading)
	}
	fmt.Fprintln(w)
	if st.Version != "" {
		fmt.Fprintf(w, "version %s", st.Version)
		if st.Upgrades > 0 {
			fmt.Fprintf(w, ", upgraded in place %d times, last at %s", st.Upgrades, st.Upgraded.Local().Format(time.DateTime))
		}
		fmt.Fprintln(w)
	}
	if len(st.Addrs) > 0 {
		fmt.Fprintf(w, "listening on %s\n", strings.Join(st.Addrs, ", "))
	}
	if len(st.FailingSlots) > 0 {
		fmt.Fprintf(w, "failing slots (workers keep dying before they are ready or soon after): %v\n", st.FailingSlots)
	}
	if st.Sticky != nil {
		fmt.Fprintf(w, "sticky by client IP: %d buckets, per slot %v\n", st.Sticky.Buckets, st.Sticky.Shares)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tGEN\tSTATE\tUPTIME\tRESTARTS\tRSS\tCPU\tSTATUS")
	for _, ws := range st.Workers {
		rss, cpu := "-", "-"
		if ws.RSSBytes > 0 {
			rss = formatBytes(ws.RSSBytes)
			cpu = fmt.Sprintf("%.1f%%", ws.CPUPercent)
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", ws.Slot, ws.PID, ws.Generation, ws.State,
			formatUptime(ws.Uptime()), ws.Restarts, rss, cpu, ws.Status)
	}
	tw.Flush()
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%dK", n>>10)
}

func formatUptime(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

var scaleArg = regexp.MustCompile(`^[+-]?[0-9]+$`)

func scaleCommand(args []string, stdout io.Writer) error {
	// -N is an argument, not a flag: take it out before flag parsing.
	var target string
	var others []string
	for _, a := range args {
		if target == "" && scaleArg.MatchString(a) {
			target = a
			continue
		}
		others = append(others, a)
	}
	noWait := false
	path, rest, err := clientFlags("scale", scaleUsage, others, func(fs *flag.FlagSet) {
		fs.Var(boolValue{&noWait}, "no-wait", "")
	})
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("scale: %q is not a number of workers: want N, +N or -N, such as 4, +1 or -2", rest[0])
	}
	if target == "" {
		return usagef("scale: give a number of workers: N, +N or -N, such as 4, +1 or -2")
	}
	n, err := strconv.Atoi(target)
	if err != nil {
		return usagef("scale: %q is out of range", target)
	}
	req := control.Request{Cmd: control.CmdScale, Wait: !noWait}
	if target[0] == '+' || target[0] == '-' {
		if n == 0 {
			return usagef("scale: %s changes nothing; give +N or -N with N of at least 1", target)
		}
		req.Delta = &n
	} else {
		if n < 1 {
			return usagef("scale: cannot scale to %d workers; the minimum is 1 (use recluster stop to stop)", n)
		}
		req.Workers = &n
	}
	// A waiting scale ends by itself: when the workers serve, or when a
	// slot fails (after a few ready timeouts at worst).
	view := newProgressView(stdout)
	resp, err := control.Do(context.Background(), path, req, func(r control.Response) { view.show(r) })
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, view.p.good(resp.Message))
	return nil
}

func stopCommand(args []string, stdout io.Writer) error {
	path, rest, err := clientFlags("stop", stopUsage, args, nil)
	if err != nil {
		return err
	}
	if err := noArgs("stop", rest); err != nil {
		return err
	}
	resp, err := control.Do(context.Background(), path, control.Request{Cmd: control.CmdStop}, nil)
	if errors.Is(err, control.ErrClosed) && resp.Progress != "" {
		// The master exited right after it had stopped the workers.
		err, resp.Message = nil, "stopped"
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, resp.Message)
	return nil
}
