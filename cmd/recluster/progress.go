package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/charmbracelet/x/term"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/control"
)

// palette colours a command's output on a terminal, and is plain
// everywhere else: in a pipe, a file, or when NO_COLOR is set
// (https://no-color.org).
type palette struct{ on bool }

func paletteFor(w io.Writer) palette {
	f, ok := w.(*os.File)
	return palette{on: ok && term.IsTerminal(f.Fd()) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"}
}

func (p palette) paint(code, s string) string {
	if !p.on {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (p palette) good(s string) string { return p.paint("32", s) }
func (p palette) bad(s string) string  { return p.paint("31", s) }
func (p palette) warn(s string) string { return p.paint("33", s) }
func (p palette) dim(s string) string  { return p.paint("2", s) }

// progressView prints the progress lines of a reload or a scale as they
// come, each with its time since the operation started.
type progressView struct {
	w     io.Writer
	p     palette
	start time.Time
	gen   int // the new generation, once known
}

func newProgressView(w io.Writer) *progressView {
	return &progressView{w: w, p: paletteFor(w), start: time.Now()}
}

func (v *progressView) show(r control.Response) {
	e := r.Event
	if e == nil {
		at := r.Time
		if at.IsZero() {
			at = time.Now()
		}
		v.line(at, r.Progress)
		return
	}
	if e.Kind == recluster.EventReloadStarted {
		v.start, v.gen = e.Time, e.Generation
	}
	if text := v.describe(e); text != "" {
		v.line(e.Time, text)
	}
}

func (v *progressView) line(at time.Time, text string) {
	fmt.Fprintf(v.w, "%s %s\n", v.p.dim(fmt.Sprintf("%+8.3fs", at.Sub(v.start).Seconds())), text)
}

// describe says what a step means to whoever waits for the reload; the
// steps that say nothing new (listening, active, disconnect) are left out.
func (v *progressView) describe(e *control.Event) string {
	p := v.p
	who := fmt.Sprintf("slot %d: pid %d", e.Slot, e.PID)
	if e.Generation < v.gen {
		who = fmt.Sprintf("slot %d: old pid %d", e.Slot, e.PID)
	}
	round := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	switch e.Kind {
	case recluster.EventReloadStarted:
		return fmt.Sprintf("reload started: generation %d", e.Generation)
	case recluster.EventSpawned:
		return who + " started"
	case recluster.EventReady:
		return p.good(who + " ready")
	case recluster.EventReloadCommitted:
		return p.good(fmt.Sprintf("committed: generation %d serves every slot (took %v)", e.Generation, round(e.Duration())))
	case recluster.EventReloadAborted:
		return p.bad("aborted: " + e.Error)
	case recluster.EventKilled:
		return p.warn(who + " killed: " + e.Reason)
	case recluster.EventExited:
		how := fmt.Sprintf("exited with code %d", e.ExitCode)
		if e.Signal != "" {
			how = "was killed by signal " + e.Signal
		}
		switch {
		case e.Generation < v.gen && e.Signal == "" && e.ExitCode == 0:
			return who + " exited"
		case e.Generation < v.gen: // it was told to go: how it went is news, not a failure
			return who + " " + how
		}
		return p.bad(who + " " + how)
	case recluster.EventRespawnScheduled:
		return p.warn(fmt.Sprintf("slot %d: respawn in %v", e.Slot, round(e.Duration())))
	case recluster.EventReloadDrained:
		return fmt.Sprintf("old workers gone, %v after the commit", round(e.Duration()))
	case recluster.EventStopped:
		return p.bad("the cluster stopped")
	}
	return ""
}
