//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/recluster-go/recluster"
)

// Scenario 5: reload time, from the reload to every new worker active and
// every old one gone, against the workers' own start time.
func init() {
	register(Scenario{Name: "reloadtime", Order: 50, Run: runReloadTime})
}

// reloadTiming is one reload, from the cluster's own event timestamps.
type reloadTiming struct {
	total     time.Duration // reload-started -> last old worker exited
	commit    time.Duration // reload-started -> reload-committed
	lastSpawn time.Duration // reload-started -> last new worker spawned
	start     time.Duration // the slowest new worker's spawned -> ready
	overhead  time.Duration // total - start
	cold      time.Duration // the first generation: Run -> every worker ready
}

func runReloadTime(ctx context.Context, env *Env) (Section, error) {
	sizes := []int{2, 16, 64, 256}
	reloadsOf := func(n int) int {
		switch {
		case env.Quick:
			return 2
		case n > 100: // a reload of 256 workers takes seconds on 2 cores
			return 5
		}
		return 20
	}
	var md strings.Builder
	fmt.Fprintf(&md, "The suite itself is the master here: it runs the library (`recluster.New`, one socket on 127.0.0.1, Timeout 1s, "+
		"ReadyWhen Ready) with testdata/server `-mode ready`, a worker that says ready (`worker.Ready`) as soon as it holds its listener, "+
		"and times each of %d reloads per size (%d for %d workers) from the cluster's own event timestamps (`Options.OnEvent`; more precise than polling `recluster status`):\n\n", reloadsOf(2), reloadsOf(256), 256)
	md.WriteString("- **reload time**: `reload-started` → every new worker active (`reload-committed`) and every old worker gone (its `exited` event, the process reaped);\n" +
		"- **worker start**: the workers' own start time, `spawned` → `ready` of the slowest new worker of that reload (exec, Go runtime start, channel handshake);\n" +
		"- **overhead** = reload time − worker start: what the master adds (spawning the generation one by one, the commit, the drain of idle old workers and reaping them).\n\n")
	md.WriteString("For reference, **cold start of the generation** is how long the first generation took from `Run` to its last worker ready (the whole generation's own start time, spawning included), and the next column is the reload time less that.\n\n")
	md.WriteString("- **overhead per worker** = overhead ÷ workers.\n\n")
	md.WriteString("Target: overhead **at most 100 ms** for 2, 16 and 64 workers, and **at most 1 ms per worker** for 256 workers.\n\n")
	t := newTable("workers", "reloads", "reload time p50 / max", "to commit p50", "last spawn p50", "worker start p50 / max", "overhead p50 / max", "overhead per worker p50 / max", "cold start of the generation", "reload time − cold start p50", "target", "verdict")
	allOK := true
	for _, n := range sizes {
		timings, err := measureReloads(ctx, env, n, reloadsOf(n))
		if err != nil {
			return Section{}, fmt.Errorf("%d workers: %w", n, err)
		}
		pick := func(f func(reloadTiming) time.Duration) (time.Duration, time.Duration) {
			var ds []time.Duration
			for _, r := range timings {
				ds = append(ds, f(r))
			}
			return quantiles(ds)
		}
		tot50, totMax := pick(func(r reloadTiming) time.Duration { return r.total })
		com50, _ := pick(func(r reloadTiming) time.Duration { return r.commit })
		sp50, _ := pick(func(r reloadTiming) time.Duration { return r.lastSpawn })
		st50, stMax := pick(func(r reloadTiming) time.Duration { return r.start })
		ov50, ovMax := pick(func(r reloadTiming) time.Duration { return r.overhead })
		cold, _ := pick(func(r reloadTiming) time.Duration { return r.cold })
		limit, target := 100*time.Millisecond, "≤ 100 ms"
		if n > 100 {
			limit, target = time.Duration(n)*time.Millisecond, "≤ 1 ms per worker"
		}
		ok := ovMax <= limit
		allOK = allOK && ok
		perWorker := func(d time.Duration) string {
			return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)/float64(n))
		}
		t.row(n, len(timings), ms(tot50)+" / "+ms(totMax), ms(com50), ms(sp50), ms(st50)+" / "+ms(stMax), ms(ov50)+" / "+ms(ovMax),
			perWorker(ov50)+" / "+perWorker(ovMax), ms(cold), ms(tot50-cold), target, verdict(ok))
		env.Log("reloadtime: %d workers: total p50 %v, overhead p50 %v max %v", n, tot50, ov50, ovMax)
	}
	md.WriteString(t.String())
	md.WriteString("The verdict uses the worst reload of each size. On 2 cores, 64 or 256 workers start together, so each one's own start time includes waiting for a core.\n\n")
	fmt.Fprintf(&md, "Result: %s\n", verdict(allOK))
	return Section{Title: "5. Reload time", Markdown: md.String()}, nil
}

func measureReloads(ctx context.Context, env *Env, n, reloads int) ([]reloadTiming, error) {
	var mu sync.Mutex
	var events []recluster.Event
	// 2 cores start 256 processes in seconds, not milliseconds.
	patience := 30*time.Second + time.Duration(n)*500*time.Millisecond
	c := recluster.New(env.Server, recluster.Options{
		Workers:      n,
		Args:         []string{"-mode", "ready"},
		ReadyWhen:    recluster.Ready,
		ReadyTimeout: patience,
		Sockets:      []recluster.Socket{{Address: "127.0.0.1:0"}},
		Timeout:      time.Second,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Stdout:       io.Discard,
		Stderr:       io.Discard,
		OnEvent: func(e recluster.Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		},
	})
	runAt := time.Now()
	if err := c.Run(); err != nil {
		return nil, err
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		c.Terminate(tctx)
	}()
	// settled waits until generation gen has n active workers and no other
	// worker is left. It asks for the workers, not for Status, which reads
	// /proc for each of them: polling that would load the machine it
	// measures.
	settled := func(gen int) error {
		deadline := time.Now().Add(patience)
		for time.Now().Before(deadline) {
			active := c.ActiveWorkers()
			ok := len(active) == n && len(c.Workers()) == n
			for _, w := range active {
				ok = ok && w.Generation() == gen
			}
			if ok {
				return nil
			}
			time.Sleep(5 * time.Millisecond)
		}
		return fmt.Errorf("generation %d did not settle: %+v", gen, c.Status())
	}
	if err := settled(1); err != nil {
		return nil, err
	}
	var cold time.Duration
	mu.Lock()
	for _, e := range events {
		if e.Kind == recluster.EventReady {
			cold = max(cold, e.Time.Sub(runAt))
		}
	}
	mu.Unlock()
	var out []reloadTiming
	for i := 0; i < reloads; i++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		gen := i + 2
		mu.Lock()
		events = events[:0]
		mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, patience)
		err := c.Reload(rctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("reload %d: %w", i+1, err)
		}
		if err := settled(gen); err != nil {
			return nil, err
		}
		// The exited events of the old generation may still be queued for
		// OnEvent: wait for all n of them.
		var r reloadTiming
		var ok bool
		for range 200 + n*4 {
			mu.Lock()
			r, ok = timing(slices.Clone(events), gen, n)
			mu.Unlock()
			if ok {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if !ok {
			return nil, fmt.Errorf("reload %d: incomplete events", i+1)
		}
		r.cold = cold
		out = append(out, r)
		time.Sleep(50 * time.Millisecond) // let the machine calm down
	}
	return out, nil
}

// timing computes one reload's figures from its events, or false if they
// are not all in yet.
func timing(events []recluster.Event, gen, n int) (reloadTiming, bool) {
	var r reloadTiming
	var t0, commit, lastExit, lastSpawn time.Time
	spawned := map[int]time.Time{}
	exits := 0
	for _, e := range events {
		switch {
		case e.Kind == recluster.EventReloadStarted && e.Generation == gen:
			t0 = e.Time
		case e.Kind == recluster.EventReloadCommitted && e.Generation == gen:
			commit = e.Time
		case e.Kind == recluster.EventSpawned && e.Generation == gen:
			spawned[e.PID] = e.Time
			if e.Time.After(lastSpawn) {
				lastSpawn = e.Time
			}
		case e.Kind == recluster.EventReady && e.Generation == gen:
			if s, ok := spawned[e.PID]; ok {
				r.start = max(r.start, e.Time.Sub(s))
			}
		case e.Kind == recluster.EventExited && e.Generation == gen-1:
			exits++
			if e.Time.After(lastExit) {
				lastExit = e.Time
			}
		}
	}
	if t0.IsZero() || commit.IsZero() || exits < n {
		return r, false
	}
	r.total = lastExit.Sub(t0)
	r.commit = commit.Sub(t0)
	r.lastSpawn = lastSpawn.Sub(t0)
	r.overhead = r.total - r.start
	return r, true
}
