//go:build linux

package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
)

// Scenario 7: requests per worker, shared socket against --reuseport.
func init() {
	register(Scenario{Name: "balance", Order: 70, Run: runBalance})
}

func runBalance(ctx context.Context, env *Env) (Section, error) {
	const clients, workers = 64, 8
	dur := 10 * time.Second
	if env.Quick {
		dur = 2 * time.Second
	}
	var md strings.Builder
	fmt.Fprintf(&md, "A `recluster run -w %d` master serving examples/hello, %d clients for %v per row; "+
		"the balance is the requests answered by the busiest worker divided by those of the least busy one (X-Worker-Id).\n\n", workers, clients, dur)
	md.WriteString("Target: max/min **at most 1.5** in the default shared-socket mode; " +
		"if not, an opt-in SO_REUSEPORT-per-slot mode (`Options.ReusePort`, `recluster run --reuseport`), measured here too.\n\n")
	t := newTable("socket mode", "client mode", "requests", "failed", "req/s", "per worker (slot 0..N-1)", "max/min", "verdict")
	sharedOK := true
	for _, reuse := range []bool{false, true} {
		for _, mode := range []loadgen.Mode{loadgen.ModeNew, loadgen.ModeKeepAlive} {
			m, err := StartMaster(ctx, env, MasterConfig{Workers: workers, ReusePort: reuse})
			if err != nil {
				return Section{}, err
			}
			res, err := loadgen.Run(ctx, loadgen.Config{Addr: m.Addr, Mode: mode, Clients: clients, Duration: dur, Timeout: 10 * time.Second})
			m.Stop(10 * time.Second)
			if err != nil {
				return Section{}, err
			}
			var per []string
			for _, w := range res.Workers {
				per = append(per, fmt.Sprint(w.Responses))
			}
			bal := res.Balance
			if len(res.Workers) < workers {
				bal = 0 // a worker that answered nothing: unbounded
			}
			ok := bal > 0 && bal <= 1.5
			name := "shared (default)"
			if reuse {
				name = "--reuseport"
			} else {
				sharedOK = sharedOK && ok
			}
			balS := fmt.Sprintf("%.2f", bal)
			if bal == 0 {
				balS = fmt.Sprintf("∞ (%d of %d workers answered)", len(res.Workers), workers)
			}
			t.row(name, mode, res.Requests, failures(res.Failures), fmt.Sprintf("%.0f", res.Throughput), strings.Join(per, " "), balS, verdict(ok))
		}
	}
	md.WriteString(t.String())
	md.WriteString("With one shared socket every idle worker is woken for each connection (Go's netpoller does not use EPOLLEXCLUSIVE) " +
		"and the worker that is already running tends to win the accept, so a few workers take most of the connections. " +
		"With keep-alive the balance is fixed when the 64 connections are accepted and stays for the whole run. " +
		"With --reuseport the kernel hashes each connection to one slot's socket, which spreads connections evenly: " +
		"with a new connection per request the spread is even over thousands of connections; with 64 keep-alive connections " +
		"it is as even as 64 random draws over the slots can be (a slot may get 4 connections and another 12), " +
		"so the keep-alive ratio measures the hash's luck with 64 connections, not a defect that more connections would keep.\n\n")
	if !sharedOK {
		md.WriteString("The shared-socket mode misses the 1.5 target (see the reason above); `--reuseport` is the opt-in fix, " +
			"with the trade-off documented in docs/operations.md: connections hashed to a slot wait while that slot has no worker (after a crash, until its respawn).\n\n")
	}
	fmt.Fprintf(&md, "Result, default shared mode: %s\n", verdict(sharedOK))
	return Section{Title: "7. Balance across workers", Markdown: md.String()}, nil
}
