package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/control"
)

const logsUsage = `Usage: recluster logs [-f] [--slot N] [--lines N] [--json] [--control PATH]
       recluster logs --reopen [--control PATH]

Print the most recent lines of the workers' output, which the master keeps
in memory (the last 2000 lines, at most 1 MiB of them), each labelled
[SLOT PID gGENERATION]. With -f, go on with new lines as they come, from
every generation, until Ctrl-C.

Flags:
  -f, --follow      after the recent lines, print new ones as they come
      --slot N      only the lines of the workers of slot N
      --lines N     at most the N most recent lines (default 100)
      --json        one JSON object per line: time, slot, pid, generation,
                    stream, text and continued (a piece of a longer line)
      --reopen      reopen the master's --log-file, as logrotate's
                    postrotate needs, and exit
` + controlFlagHelp

func logsCommand(args []string, stdout, stderr io.Writer) error {
	var follow, asJSON, reopen bool
	slot, lines := -1, 100
	path, rest, err := clientFlags("logs", logsUsage, args, func(fs *flag.FlagSet) {
		fs.Var(boolValue{&follow}, "follow", "")
		fs.Var(boolValue{&follow}, "f", "")
		fs.Var(boolValue{&asJSON}, "json", "")
		fs.Var(boolValue{&reopen}, "reopen", "")
		fs.Var(intValue{&slot, 0}, "slot", "")
		fs.Var(intValue{&lines, 0}, "lines", "")
	})
	if err != nil {
		return err
	}
	if err := noArgs("logs", rest); err != nil {
		return err
	}
	if reopen {
		if follow || asJSON || slot >= 0 || lines != 100 {
			return usagef("logs: --reopen takes no other flag but --control (see recluster help logs)")
		}
		resp, err := control.Do(context.Background(), path, control.Request{Cmd: control.CmdReopenLogs}, nil)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, resp.Message)
		return nil
	}
	req := control.Request{Cmd: control.CmdLogs, Lines: &lines, Follow: follow}
	if slot >= 0 {
		req.Slot = &slot
	}
	format := recluster.OutputLabelled
	if asJSON {
		format = recluster.OutputJSON
	}
	// Ctrl-C is how a follow ends, and no failure.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var writeErr error
	_, err = control.Do(ctx, path, req, func(r control.Response) {
		switch {
		case r.Line != nil && writeErr == nil:
			if _, writeErr = stdout.Write(r.Line.Format(format)); writeErr != nil {
				stop() // the reader is gone (a closed pipe): end as after Ctrl-C
			}
		case r.Missed > 0:
			fmt.Fprintf(stderr, "recluster: %d lines missed: this terminal or pipe read more slowly than the workers wrote\n", r.Missed)
		}
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}
