//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/recluster-go/recluster/internal/control"
)

// Scenario 13: what relaying the workers' output costs the master, with a
// sink that keeps up and with one that is stuck.
func init() {
	register(Scenario{Name: "output", Order: 130, Run: runOutput})
}

// outputWorker floods its stdout and then marks that it is done.
func outputWorker(env *Env, name, flood string) (string, error) {
	path := filepath.Join(env.Dir, name+".sh")
	script := "#!/bin/sh\n" + flood + "\ntouch " + env.Dir + "/" + name + "-done-$WORKER_ID\nexec sleep 3600\n"
	return path, os.WriteFile(path, []byte(script), 0o755)
}

// waitDone waits until the workers of a flood have marked themselves done.
func waitDone(ctx context.Context, env *Env, name string, workers int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		n := 0
		for w := range workers {
			if _, err := os.Stat(fmt.Sprintf("%s/%s-done-%d", env.Dir, name, w)); err == nil {
				n++
			}
		}
		if n == workers {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d workers finished their output within %v", n, workers, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// peakSampler samples a process's RSS every 20ms until stopped.
func peakSampler(pid int) (stop func() int64) {
	var peak int64
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			if s, err := ReadProc(pid); err == nil {
				peak = max(peak, s.RSS)
			}
			select {
			case <-quit:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() int64 { close(quit); <-done; return peak }
}

func runOutput(ctx context.Context, env *Env) (Section, error) {
	const workers, bursts, perBurst = 4, 10, 1000
	// The idle master's 13.5 MB (most of it the binary's own pages), the
	// relay's budget (1 MiB of history, 1 MiB of queue) and the
	// collector's headroom for the garbage of a line-by-line flood.
	const rssLimit = 20_000_000
	var md strings.Builder
	fmt.Fprintf(&md, "A `recluster run -w %d --ready-when started` master whose workers are shell scripts that flood their stdout. "+
		"**Keeps up**: each worker prints %d lines of about 100 bytes in %d bursts 100 ms apart, and the master writes them to a "+
		"`--log-file` (labelled, the default); every line is then looked for in the file. **Stuck**: the master's stdout is a pipe "+
		"that nobody reads, and each worker writes 10 MB in one line without a newline, then 100,000 lines: the master must cut "+
		"the long line into 16 KiB pieces, keep its memory bounded, drop lines rather than stall the workers, and still answer "+
		"`recluster logs`. Master RSS is sampled every 20 ms from /proc/PID/stat.\n\n", workers, bursts*perBurst, bursts)
	fmt.Fprintf(&md, "Target: no line lost when the sink keeps up; master RSS **at most 20 MB** in both (the idle master's "+
		"13.5 MB, most of it the binary's own pages, plus the relay's 1 MiB of history and 1 MiB of queue and the collector's "+
		"headroom), however much the workers write; the workers finish their output although the sink is stuck.\n\n")
	t := newTable("sink", "lines written", "lines lost / dropped", "workers done in", "master CPU", "master RSS before", "master RSS peak", "verdict")
	allOK := true

	// Keeps up.
	pad := strings.Repeat("x", 70)
	script, err := outputWorker(env, "flood", fmt.Sprintf(`b=0
while [ $b -lt %d ]; do
  i=0
  while [ $i -lt %d ]; do
    echo "flood slot=$WORKER_ID n=$((b*%d+i)) %s"
    i=$((i+1))
  done
  b=$((b+1))
  sleep 0.1
done`, bursts, perBurst, perBurst, pad))
	if err != nil {
		return Section{}, err
	}
	logPath := filepath.Join(env.Dir, "output.log")
	m, err := StartMaster(ctx, env, MasterConfig{Workers: workers, Program: script,
		Flags: []string{"--ready-when", "started", "--log-file", logPath}})
	if err != nil {
		return Section{}, err
	}
	before, _ := ReadProc(m.PID)
	stopSampling := peakSampler(m.PID)
	start := time.Now()
	err = waitDone(ctx, env, "flood", workers, 5*time.Minute)
	took := time.Since(start)
	// The last lines may still be on their way to the file.
	want, got := workers*bursts*perBurst, 0
	for deadline := time.Now().Add(10 * time.Second); err == nil && got < want && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		got = strings.Count(string(b), "] flood slot=")
	}
	peak := stopSampling()
	after, _ := ReadProc(m.PID)
	m.Stop(10 * time.Second)
	if err != nil {
		return Section{}, err
	}
	ok := got == want && peak <= rssLimit
	allOK = allOK && ok
	t.row("file (keeps up)", want, want-got, took.Round(10*time.Millisecond), ms(after.CPU()-before.CPU()), mb(before.RSS), mb(peak), verdict(ok))

	// Stuck.
	script, err = outputWorker(env, "stuck", `head -c 10000000 /dev/zero | tr '\0' a
echo
i=0
while [ $i -lt 100000 ]; do
  echo "line $i of slot $WORKER_ID"
  i=$((i+1))
done`)
	if err != nil {
		return Section{}, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return Section{}, err
	}
	defer pr.Close() // held open and never read: the master's stdout fills and stays full
	m, err = StartMaster(ctx, env, MasterConfig{Workers: workers, Program: script, Stdout: pw,
		Flags: []string{"--ready-when", "started"}})
	pw.Close()
	if err != nil {
		return Section{}, err
	}
	defer m.Stop(10 * time.Second)
	before, _ = ReadProc(m.PID)
	stopSampling = peakSampler(m.PID)
	start = time.Now()
	err = waitDone(ctx, env, "stuck", workers, 5*time.Minute)
	took = time.Since(start)
	peak = stopSampling()
	after, _ = ReadProc(m.PID)
	if err != nil {
		return Section{}, err
	}
	lines := 3
	logsStart := time.Now()
	resp, logsErr := control.Do(ctx, m.Control, control.Request{Cmd: control.CmdLogs, Lines: &lines}, nil)
	logsTook := time.Since(logsStart)
	st, stErr := m.Status(ctx)
	if stErr != nil {
		return Section{}, stErr
	}
	ok = peak <= rssLimit && logsErr == nil && resp.OK && st.OutputDropped > 0
	allOK = allOK && ok
	written := workers * (10_000_000/(16<<10) + 1 + 100_000)
	t.row("pipe nobody reads (stuck)", fmt.Sprintf("%d (10 MB line in pieces + 100,000 each)", written), st.OutputDropped,
		took.Round(10*time.Millisecond), ms(after.CPU()-before.CPU()), mb(before.RSS), mb(peak), verdict(ok))
	md.WriteString(t.String())
	fmt.Fprintf(&md, "With the sink stuck, `recluster logs --lines 3` answered in %v (error: %v), and `recluster status --json` "+
		"counted the dropped lines in `output_dropped`. The workers wait on their writes for at most the master's 1 s of "+
		"patience, once, when the sink stops; after that their lines are dropped at once until the sink moves again.\n\n",
		logsTook.Round(time.Millisecond), logsErr)
	fmt.Fprintf(&md, "Result: %s\n", verdict(allOK))
	return Section{Title: "10. Worker output relay", Markdown: md.String()}, nil
}
