//go:build linux

package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
)

// Scenario 3: SIGKILL one worker every second under load.
func init() {
	register(Scenario{Name: "crash", Order: 30, Run: runCrash})
}

func runCrash(ctx context.Context, env *Env) (Section, error) {
	const clients, workers = 64, 4
	kills := 30
	if env.Quick {
		kills = 5
	}
	var md strings.Builder
	fmt.Fprintf(&md, "A `recluster run -w %d --respawn 100ms` master (shared socket) serving testdata/server with `?sleep=10` "+
		"(10 ms requests, so that about %d requests are in flight on each worker); %d clients that never retry; "+
		"SIGKILL to one active worker (slots in turn) every second, %d times; the load runs on for 1 s after the last kill.\n\n",
		workers, clients/workers, clients, kills)
	md.WriteString("Target: only requests in flight on a killed worker may fail (a reset or EOF), and **none is refused**. " +
		"\"bound\" is the most that may fail: the connections the killed workers held, at most the clients each held a share of " +
		"(with keep-alive a killed worker also takes its idle connections, whose next request may be reset).\n\n")
	t := newTable("mode", "kills", "requests", "failed", "refused", "failed per kill", "req/s", "latency p99 / max", "verdict")
	allOK := true
	var notes strings.Builder
	for _, mode := range []loadgen.Mode{loadgen.ModeNew, loadgen.ModeKeepAlive} {
		m, err := StartMaster(ctx, env, MasterConfig{Workers: workers, Timeout: time.Second, Program: env.Server, Flags: []string{"--respawn", "100ms"}})
		if err != nil {
			return Section{}, err
		}
		slot, killed := 0, 0
		var killErr error
		res, err := loadgen.Run(ctx, loadgen.Config{
			Addr: m.Addr, Path: "/?sleep=10", Mode: mode, Clients: clients,
			Duration: time.Duration(kills+5) * 2 * time.Second, Timeout: 10 * time.Second,
			ReloadEvery: time.Second, Reloads: kills, Tail: time.Second,
			Reload: func(ctx context.Context) error {
				st, err := m.Status(ctx)
				if err != nil {
					killErr = err
					return err
				}
				for range workers {
					for _, w := range st.Workers {
						if w.Slot == slot%workers && w.State == "active" {
							slot++
							killed++
							return syscall.Kill(w.PID, syscall.SIGKILL)
						}
					}
					slot++
				}
				return fmt.Errorf("no active worker to kill (states %s)", states(st))
			},
		})
		stopErr := m.Stop(10 * time.Second)
		if err != nil {
			return Section{}, err
		}
		_ = killErr
		f := res.Failures
		perKill := float64(f.Total()) / float64(max(killed, 1))
		// A killed worker held at most its share of the connections
		// (rounded up generously: the busiest worker can hold more).
		ok := f.Refused == 0 && f.Timeout == 0 && f.Status == 0 && f.Other == 0 && killed == kills && stopErr == nil &&
			perKill <= float64(clients)
		allOK = allOK && ok
		t.row(mode, killed, res.Requests, failures(f), f.Refused, fmt.Sprintf("%.1f", perKill), fmt.Sprintf("%.0f", res.Throughput),
			ms(res.Latency.P99)+" / "+ms(res.Latency.Max), verdict(ok))
		if f.Total() > 0 {
			fmt.Fprintf(&notes, "- %s: %s; examples:\n%s", mode, failures(f), examples(res))
		}
		if res.ReloadErrors() > 0 {
			for _, r := range res.Reloads {
				if r.Error != "" {
					fmt.Fprintf(&notes, "  - kill %d: `%s`\n", r.Index, oneLine(r.Error))
					break
				}
			}
		}
	}
	md.WriteString(t.String())
	if notes.Len() > 0 {
		md.WriteString("Failures:\n\n" + notes.String() + "\n")
	}
	md.WriteString("A killed worker's in-flight requests fail as resets or EOFs: that is the unavoidable cost of SIGKILL. " +
		"The listening socket belongs to the master, so the connections that were still in its accept queue are taken by the other workers: nothing is refused.\n\n")
	fmt.Fprintf(&md, "Result: %s\n", verdict(allOK))
	return Section{Title: "3. Crash under load", Markdown: md.String()}, nil
}
