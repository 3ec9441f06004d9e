package main

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"

	"github.com/recluster-go/recluster/internal/control"
)

const restartUsage = `Usage: recluster restart SLOT... [--control PATH]

Replace the workers of the given slots, one slot at a time: a new worker
starts in the slot, and the old one is told to finish its work and exit only
once the new one is ready, so the slot never goes unserved. A new worker that
exits or is not ready in time aborts the restart, as it would a reload: the
old worker keeps serving, and restart exits 1 with the reason (the slots
after it are left alone).

Flags:
` + controlFlagHelp

var slotArg = regexp.MustCompile(`^[0-9]+$`)

func restartCommand(args []string, stdout, stderr io.Writer) error {
	var slots []int
	var others []string
	for _, a := range args {
		if slotArg.MatchString(a) {
			n, err := strconv.Atoi(a)
			if err != nil {
				return usagef("restart: slot %q is out of range", a)
			}
			slots = append(slots, n)
			continue
		}
		others = append(others, a)
	}
	path, rest, err := clientFlags("restart", restartUsage, others, nil)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("restart: %q is not a slot: give slot numbers such as 0 or 1 2 (see recluster status)", rest[0])
	}
	if len(slots) == 0 {
		return usagef("restart: give the slots to restart, such as recluster restart 1 (see recluster status)")
	}
	resp, err := control.Do(context.Background(), path, control.Request{Cmd: control.CmdRestart, Slots: slots},
		func(r control.Response) { fmt.Fprintln(stderr, "recluster: "+r.Progress) })
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, resp.Message)
	return nil
}
