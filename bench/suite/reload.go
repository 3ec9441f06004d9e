//go:build linux

package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
)

// Scenario 1: reload under load.
func init() {
	register(Scenario{Name: "reload", Order: 10, Run: runReload})
}

func runReload(ctx context.Context, env *Env) (Section, error) {
	const clients, workers = 64, 4
	reloads, every := 100, 150*time.Millisecond
	if env.Quick {
		reloads = 10
	}
	type server struct {
		name, program, path string
		args                []string
	}
	servers := []server{
		{"fast (examples/hello)", env.Hello, "/", nil},
		{"100 ms requests (testdata/server ?sleep=100)", env.Server, "/?sleep=100", nil},
	}
	var md strings.Builder
	fmt.Fprintf(&md, "A `recluster run --listen 127.0.0.1:PORT -w %d --timeout 2s` master; %d closed-loop clients that never retry; "+
		"%d reloads, one every %v after the previous one committed, each with `recluster reload --control PATH` "+
		"(which returns once the new generation is active); the load runs on for 1 s after the last reload. "+
		"The 100 ms server keeps about %d requests in flight at every moment, so every drain has work in flight.\n\n",
		workers, clients, reloads, every, clients)
	md.WriteString("Target: **0 failed requests** (and 0 failed reloads) in both modes.\n\n")
	t := newTable("server", "mode", "requests", "failed", "reloads ok", "reload p50 / max", "req/s", "latency p50 / p99 / max", "reconnects", "verdict")
	var notes strings.Builder
	allOK := true
	for _, s := range servers {
		for _, mode := range []loadgen.Mode{loadgen.ModeNew, loadgen.ModeKeepAlive} {
			if ctx.Err() != nil {
				return Section{}, ctx.Err()
			}
			m, err := StartMaster(ctx, env, MasterConfig{Workers: workers, Timeout: 2 * time.Second, Program: s.program, Args: s.args})
			if err != nil {
				return Section{}, err
			}
			env.Log("reload: %s, %s: %d reloads", s.name, mode, reloads)
			res, err := loadgen.Run(ctx, loadgen.Config{
				Addr: m.Addr, Path: s.path, Mode: mode, Clients: clients,
				Duration:      time.Duration(reloads)*(every+time.Second) + time.Minute, // a safety bound only
				Timeout:       10 * time.Second,
				Reload:        m.Reload,
				ReloadEvery:   every,
				Reloads:       reloads,
				ReloadTimeout: 30 * time.Second,
				Tail:          time.Second,
			})
			stopErr := m.Stop(15 * time.Second)
			if err != nil {
				return Section{}, err
			}
			ok := res.Failures.Total() == 0 && res.ReloadErrors() == 0 && len(res.Reloads) == reloads && stopErr == nil
			allOK = allOK && ok
			var durs []time.Duration
			for _, r := range res.Reloads {
				durs = append(durs, r.Duration)
			}
			p50, pmax := quantiles(durs)
			t.row(s.name, mode, res.Requests, failures(res.Failures), fmt.Sprintf("%d/%d", len(res.Reloads)-res.ReloadErrors(), reloads),
				ms(p50)+" / "+ms(pmax), fmt.Sprintf("%.0f", res.Throughput),
				ms(res.Latency.P50)+" / "+ms(res.Latency.P99)+" / "+ms(res.Latency.Max), res.Reconnects, verdict(ok))
			if !ok {
				fmt.Fprintf(&notes, "- %s, %s: %s; examples:\n%s", s.name, mode, failures(res.Failures), examples(res))
				for _, r := range res.Reloads {
					if r.Error != "" {
						fmt.Fprintf(&notes, "  - reload %d failed: `%s`\n", r.Index, oneLine(r.Error))
						break
					}
				}
				if stopErr != nil {
					fmt.Fprintf(&notes, "  - %v\n", stopErr)
				}
			}
		}
	}
	md.WriteString(t.String())
	md.WriteString("\"reload\" is the time `recluster reload` took (start of the new generation to its commit; the old generation drains afterwards). " +
		"\"reconnects\" counts keep-alive connections that a draining worker ended cleanly with `Connection: close` (not failures).\n\n")
	if notes.Len() > 0 {
		md.WriteString("Failures:\n\n" + notes.String() + "\n")
	}
	fmt.Fprintf(&md, "Result: %s\n", verdict(allOK))
	return Section{Title: "1. Reload under load", Markdown: md.String()}, nil
}

// quantiles returns the median and the maximum of ds.
func quantiles(ds []time.Duration) (p50, maxd time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := append([]time.Duration(nil), ds...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2], s[len(s)-1]
}
