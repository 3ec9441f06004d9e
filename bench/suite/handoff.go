//go:build linux

package main

// Scenario 2's idle keep-alive rows: connection handoff against today's
// drain, behind nginx, and the peers; and throughput without reloads.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
	"github.com/recluster-go/recluster/internal/nginx"
)

// idleRows measures clients that stay idle longer than the grace period,
// the shape of a reverse proxy's upstream pool.
func idleRows(ctx context.Context, env *Env, clients, workers, reloads int, note func(string, *idleClientStats, int)) (string, bool, error) {
	var md strings.Builder
	fmt.Fprintf(&md, "### Idle keep-alive clients\n\n"+
		"The same %d clients, now sending POSTs (which neither a client nor a proxy may replay) with pauses longer than the grace period; "+
		"%d reloads, one every 700 ms (every 1.5 s for the 0 to 20 s pauses, then 5 s more), against each setup. "+
		"\"kept\" counts the clients that used one connection from start to end: their connection survived every reload. "+
		"The nginx rows put nginx (Debian's) in front as a reverse proxy with an upstream pool: `keepalive 32`, `proxy_http_version 1.1`, "+
		"`proxy_set_header Connection \"\"`; the clients keep their connections to nginx, and nginx answers 502 when a pooled upstream connection "+
		"is closed under the POST it sends (it does not retry a POST).\n\n", clients, reloads)
	md.WriteString("Target: **0 errors and 0 responses 502/504** with handoff (the default); the other rows show what each setup does to such clients (no target).\n\n")
	t := newTable("setup", "pause", "--timeout", "requests", "errors", "502/504", "kept", "handed over", "verdict")
	allOK := true
	type run struct {
		label   string
		flags   []string
		timeout time.Duration
		think   time.Duration
		every   time.Duration
		tail    time.Duration
		nginx   bool
		target  bool
	}
	runs := []run{
		{"recluster (handoff, default)", nil, 2 * time.Second, 3 * time.Second, 700 * time.Millisecond, time.Second, false, true},
		{"recluster --no-handoff", []string{"--no-handoff"}, 2 * time.Second, 3 * time.Second, 700 * time.Millisecond, time.Second, false, false},
		{"recluster (handoff, default)", nil, 5 * time.Second, 20 * time.Second, 1500 * time.Millisecond, 5 * time.Second, false, true},
		{"recluster --no-handoff", []string{"--no-handoff"}, 5 * time.Second, 20 * time.Second, 1500 * time.Millisecond, 5 * time.Second, false, false},
		{"nginx → recluster (handoff, default)", nil, 2 * time.Second, 3 * time.Second, 700 * time.Millisecond, time.Second, true, true},
		{"nginx → recluster --no-handoff", []string{"--no-handoff"}, 2 * time.Second, 3 * time.Second, 700 * time.Millisecond, time.Second, true, false},
	}
	for _, r := range runs {
		if ctx.Err() != nil {
			return "", false, ctx.Err()
		}
		m, err := StartMaster(ctx, env, MasterConfig{Workers: workers, Timeout: r.timeout, Flags: r.flags})
		if err != nil {
			return "", false, err
		}
		addr := m.Addr
		var stopNginx func()
		if r.nginx {
			addr, stopNginx, err = startNginxProxy(env, m.Addr)
			if err != nil {
				m.Stop(10 * time.Second)
				t.row(r.label, "0 to 3s", r.timeout, "-", "-", "-", "-", "-", "skipped: "+oneLine(err.Error()))
				if os.Getenv("CI") == "true" {
					allOK = false
				}
				continue
			}
		}
		st, reloadErrs := idleRun(ctx, addr, m.Reload, clients, reloads, r.every, r.tail, true, r.think)
		handed := "-"
		if s, err := m.Status(ctx); err == nil {
			handed = fmt.Sprint(s.Handoffs["handed"])
		}
		if stopNginx != nil {
			stopNginx()
		}
		m.Stop(15 * time.Second)
		ok := st.errors.Load() == 0 && st.badGateway.Load() == 0 && reloadErrs == 0
		v := "(no target)"
		if r.target {
			v = verdict(ok)
			allOK = allOK && ok
		}
		pause := fmt.Sprintf("0 to %v", r.think)
		t.row(r.label, pause, r.timeout, st.requests.Load(), st.errors.Load(), st.badGateway.Load(),
			fmt.Sprintf("%d of %d", st.keptConnection.Load(), st.clients.Load()), handed, v)
		note(r.label+", pauses "+pause, st, reloadErrs)
	}
	peers, err := idlePeerRows(ctx, env, clients, reloads, t, note)
	if err != nil {
		return "", false, err
	}
	md.WriteString(t.String())
	md.WriteString(peers)
	return md.String(), allOK, nil
}

// idlePeerRows adds a row for each peer that scenario 4 drives.
func idlePeerRows(ctx context.Context, env *Env, clients, reloads int, t *table, note func(string, *idleClientStats, int)) (string, error) {
	tools, err := cmpPrepare(ctx, env)
	if err != nil {
		return "", err
	}
	type peer struct {
		name  string
		start func() (*cmpTarget, error)
	}
	var peers []peer
	if tools.nodeDir != "" {
		peers = append(peers,
			peer{"Node recluster", func() (*cmpTarget, error) { return startNodeRecluster(ctx, env, tools, cmpReloadWorkers) }},
			peer{"PM2 cluster mode", func() (*cmpTarget, error) { return startPM2(ctx, env, tools, cmpReloadWorkers) }})
	}
	if tools.tableflip != "" {
		peers = append(peers, peer{"tableflip", func() (*cmpTarget, error) { return startTableflip(ctx, env, tools) }})
	}
	for _, p := range peers {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		target, err := p.start()
		if err != nil {
			t.row(p.name, "0 to 3s", "-", "-", "-", "-", "-", "-", "not run: "+oneLine(err.Error()))
			continue
		}
		st, reloadErrs := idleRun(ctx, target.addr, target.reload, clients, reloads, 700*time.Millisecond, time.Second, true, 3*time.Second)
		target.stop()
		t.row(fmt.Sprintf("%s %s", p.name, target.version), "0 to 3s", "-", st.requests.Load(), st.errors.Load(), st.badGateway.Load(),
			fmt.Sprintf("%d of %d", st.keptConnection.Load(), st.clients.Load()), "-", "(no target)")
		note(p.name+", pauses 0 to 3s", st, reloadErrs)
	}
	var md strings.Builder
	md.WriteString("\nThe peers run as in scenario 4 (their own reload: Node recluster's and PM2's reload, tableflip's upgrade); none of them hands a connection over.\n")
	for _, n := range tools.notes {
		md.WriteString("- " + n + "\n")
	}
	md.WriteString("\n")
	return md.String(), nil
}

// handoffThroughput compares throughput without reloads with handoff on
// (the wrapped connections) and off. Both masters run the whole time and
// take turns under load in short rounds, in the order ABBA: a master's own
// start and the machine's slow and fast phases then weigh on both alike,
// where a master started per round made rounds differ by ±15 %, more than
// the 2 % the target asks to resolve.
func handoffThroughput(ctx context.Context, env *Env, workers int) (string, bool, error) {
	const clients = 32
	dur, rounds := 2*time.Second, 10
	if env.Quick {
		dur, rounds = time.Second, 2
	}
	modes := []string{"--no-handoff", "handoff"}
	masters := map[string]*Master{}
	defer func() {
		for _, m := range masters {
			m.Stop(10 * time.Second)
		}
	}()
	for _, mode := range modes {
		var flags []string
		if mode == "--no-handoff" {
			flags = []string{"--no-handoff"}
		}
		m, err := StartMaster(ctx, env, MasterConfig{Workers: workers, Flags: flags})
		if err != nil {
			return "", false, err
		}
		masters[mode] = m
	}
	var md strings.Builder
	fmt.Fprintf(&md, "### Throughput without reloads\n\n"+
		"The cost of the handoff's connection wrapper when nothing reloads: two `recluster run -w %d` masters serving examples/hello, one with "+
		"`--no-handoff`, both running throughout and taking turns under load, %d rounds of %v each, in the order ABBA (a master started "+
		"anew for each round made rounds differ by ±15 %%); %d closed-loop keep-alive clients (loadgen), on new connections each turn.\n\n",
		workers, rounds, dur, clients)
	md.WriteString("Target: throughput with handoff ÷ with --no-handoff **at least 0.98**, as the ratio of the requests served over the same time.\n\n")
	t := newTable("round", "mode", "requests", "failed", "req/s")
	served := map[string]int64{}
	elapsed := map[string]time.Duration{}
	var perRound []string
	failed := int64(0)
	for r := 1; r <= rounds; r++ {
		order := modes
		if r%2 == 0 {
			order = []string{modes[1], modes[0]}
		}
		rates := map[string]float64{}
		for _, mode := range order {
			res, err := loadgen.Run(ctx, loadgen.Config{Addr: masters[mode].Addr, Mode: loadgen.ModeKeepAlive, Clients: clients, Duration: dur, Timeout: 10 * time.Second})
			if err != nil {
				return "", false, err
			}
			rates[mode] = float64(res.Successes) / res.Elapsed.Seconds()
			served[mode] += res.Successes
			elapsed[mode] += res.Elapsed
			failed += res.Failures.Total()
			t.row(r, mode, res.Successes, res.Failures.Total(), fmt.Sprintf("%.0f", rates[mode]))
		}
		perRound = append(perRound, fmt.Sprintf("%.3f", rates["handoff"]/rates["--no-handoff"]))
	}
	md.WriteString(t.String())
	rate := func(mode string) float64 { return float64(served[mode]) / elapsed[mode].Seconds() }
	ratio := rate("handoff") / rate("--no-handoff")
	ok := ratio >= 0.98 && failed == 0
	fmt.Fprintf(&md, "Throughput with handoff ÷ --no-handoff: **%.3f** (%.0f ÷ %.0f req/s over the %d rounds; per round %s).\n\nResult, throughput: %s\n\n",
		ratio, rate("handoff"), rate("--no-handoff"), rounds, strings.Join(perRound, ", "), verdict(ok))
	return md.String(), ok, nil
}

// startNginxProxy runs Debian's nginx as a reverse proxy in front of
// upstream, with an upstream keep-alive pool, and returns its address and
// how to stop it.
func startNginxProxy(env *Env, upstream string) (string, func(), error) {
	bin, err := nginx.Find()
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp(env.Dir, "nginx-")
	if err != nil {
		return "", nil, err
	}
	proxy, err := nginx.Start(bin, dir, upstream)
	if err != nil {
		return "", nil, err
	}
	return proxy.Addr, proxy.Stop, nil
}
