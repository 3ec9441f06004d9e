//go:build linux

package main

// Scenario 4: throughput against the ceiling (N plain processes sharing a
// port with SO_REUSEPORT and no manager), beside the peers (Node's
// recluster, PM2 cluster mode, a tableflip server), and the peers' failures
// across reloads under the load of scenario 1.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
)

func init() {
	register(Scenario{Name: "compare", Order: 40, Run: runCompare})
}

const (
	// cmpClients, cmpReloadEvery and cmpReloadWorkers are scenario 1's
	// settings, so that the peers' failures sit beside recluster's.
	cmpClients       = 64
	cmpReloadEvery   = 150 * time.Millisecond
	cmpReloadWorkers = 4
	// cmpGoal is the goal for recluster's throughput over the ceiling's.
	cmpGoal = 0.97
)

var cmpModes = []loadgen.Mode{loadgen.ModeKeepAlive, loadgen.ModeNew}

// cmpPlan is the scale of a run.
type cmpPlan struct {
	rounds  int           // interleaved rounds of the N=2 throughput phase
	slice   time.Duration // one load run of a throughput phase
	warmup  time.Duration // discarded run per target and mode
	rounds4 int           // rounds of the N=4 phase; 0 skips it
	reloads int           // reloads per peer and mode
	timeout time.Duration // request timeout of the reload runs
}

// cmpThroughput accumulates one target's throughput runs in one mode.
type cmpThroughput struct {
	successes int64
	elapsed   time.Duration
	failures  loadgen.FailureCounts
	perRound  []float64 // req/s of each round
	mgrCPU    time.Duration
	balance   float64 // worst max/min across runs
}

func (c *cmpThroughput) rps() float64 {
	if c == nil || c.elapsed <= 0 {
		return 0
	}
	return float64(c.successes) / c.elapsed.Seconds()
}

// cmpRatio is a target's throughput over the ceiling's: the median of the
// per-round ratios (each round runs the two back to back), with its range.
type cmpRatio struct{ median, lo, hi float64 }

func ratioOf(t, ceiling *cmpThroughput) cmpRatio {
	if t == nil || ceiling == nil {
		return cmpRatio{}
	}
	var rs []float64
	for i := range min(len(t.perRound), len(ceiling.perRound)) {
		if ceiling.perRound[i] > 0 {
			rs = append(rs, t.perRound[i]/ceiling.perRound[i])
		}
	}
	if len(rs) == 0 {
		return cmpRatio{}
	}
	slices.Sort(rs)
	med := rs[len(rs)/2]
	if len(rs)%2 == 0 {
		med = (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2
	}
	return cmpRatio{med, rs[0], rs[len(rs)-1]}
}

func (r cmpRatio) String() string {
	if r.median == 0 {
		return "–"
	}
	if r.lo == r.hi {
		return fmt.Sprintf("%.3f", r.median)
	}
	return fmt.Sprintf("%.3f [%.2f–%.2f]", r.median, r.lo, r.hi)
}

// cmpReloadOutcome is one peer's reload run in one mode.
type cmpReloadOutcome struct {
	res *loadgen.Result
	err error
}

func (o cmpReloadOutcome) perReload() string {
	if o.err != nil {
		return "error"
	}
	if o.res == nil {
		return "–"
	}
	n := len(o.res.Reloads) - o.res.ReloadErrors()
	if n == 0 {
		return fmt.Sprintf("%d / 0 reloads", o.res.Failures.Total())
	}
	return fmt.Sprintf("%.2f", float64(o.res.Failures.Total())/float64(n))
}

func runCompare(ctx context.Context, env *Env) (Section, error) {
	plan := cmpPlan{rounds: 4, slice: 2 * time.Second, warmup: time.Second, rounds4: 4, reloads: 20, timeout: 10 * time.Second}
	if env.Quick {
		plan = cmpPlan{rounds: 1, slice: time.Second, warmup: 200 * time.Millisecond, reloads: 3, timeout: 3 * time.Second}
	}
	loadStart := loadAvg()
	tools, err := cmpPrepare(ctx, env)
	if err != nil {
		return Section{}, err
	}

	// Phase 1: throughput with N=2, every target running at once on its own
	// port, loaded one at a time in interleaved rounds.
	var targets []*cmpTarget
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()
	add := func(t *cmpTarget, err error) error {
		if err != nil {
			return err
		}
		targets = append(targets, t)
		return nil
	}
	const n = 2
	if err := add(startCeiling(ctx, env, tools, n)); err != nil {
		return Section{}, err
	}
	if err := add(startReclusterCLI(ctx, env, tools, n, false)); err != nil {
		return Section{}, err
	}
	if err := add(startReclusterCLI(ctx, env, tools, n, true)); err != nil {
		return Section{}, err
	}
	var notes []string
	notes = append(notes, tools.notes...)
	peer := func(name string, t *cmpTarget, err error) {
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s skipped: %s", name, oneLine(err.Error())))
			return
		}
		targets = append(targets, t)
	}
	if tools.nodeDir != "" {
		t, err := startNodeRecluster(ctx, env, tools, n)
		peer("Node recluster", t, err)
		t, err = startPM2(ctx, env, tools, n)
		peer("PM2", t, err)
	}
	if tools.tableflip != "" {
		t, err := startTableflip(ctx, env, tools)
		peer("tableflip", t, err)
	}
	stats := map[string]*cmpThroughput{}
	if err := cmpThroughputPhase(ctx, env, targets, plan.rounds, plan.slice, plan.warmup, stats); err != nil {
		return Section{}, err
	}
	phase1 := slices.Clone(targets)
	for _, t := range targets {
		t.stop()
	}
	targets = nil

	// Phase 2 (full scale only): N=4 on two cores, recluster against the
	// ceiling only.
	var phase2 []*cmpTarget
	if plan.rounds4 > 0 {
		const n4 = 4
		if err := add(startCeiling(ctx, env, tools, n4)); err != nil {
			return Section{}, err
		}
		if err := add(startReclusterCLI(ctx, env, tools, n4, false)); err != nil {
			return Section{}, err
		}
		if err := add(startReclusterCLI(ctx, env, tools, n4, true)); err != nil {
			return Section{}, err
		}
		if err := cmpThroughputPhase(ctx, env, targets, plan.rounds4, plan.slice, plan.warmup, stats); err != nil {
			return Section{}, err
		}
		phase2 = slices.Clone(targets)
		for _, t := range targets {
			t.stop()
		}
		targets = nil
	}

	// Phase 3: failures across reloads, scenario 1's load, a fresh server
	// per mode.
	type reloadPeer struct {
		name  string
		start func() (*cmpTarget, error)
	}
	var peers []reloadPeer
	peers = append(peers, reloadPeer{"recluster", func() (*cmpTarget, error) {
		return startReclusterCLI(ctx, env, tools, cmpReloadWorkers, false)
	}})
	if tools.nodeDir != "" {
		peers = append(peers,
			reloadPeer{"Node recluster", func() (*cmpTarget, error) { return startNodeRecluster(ctx, env, tools, cmpReloadWorkers) }},
			reloadPeer{"PM2", func() (*cmpTarget, error) { return startPM2(ctx, env, tools, cmpReloadWorkers) }})
	}
	if tools.tableflip != "" {
		peers = append(peers, reloadPeer{"tableflip", func() (*cmpTarget, error) { return startTableflip(ctx, env, tools) }})
	}
	reloadOut := map[string]map[loadgen.Mode]cmpReloadOutcome{}
	for _, p := range peers {
		reloadOut[p.name] = map[loadgen.Mode]cmpReloadOutcome{}
		for _, mode := range []loadgen.Mode{loadgen.ModeNew, loadgen.ModeKeepAlive} {
			if ctx.Err() != nil {
				return Section{}, ctx.Err()
			}
			t, err := p.start()
			if err != nil {
				reloadOut[p.name][mode] = cmpReloadOutcome{err: err}
				notes = append(notes, fmt.Sprintf("%s, %s: could not start: %s", p.name, mode, oneLine(err.Error())))
				continue
			}
			env.Log("compare: %s, %s: %d reloads", p.name, mode, plan.reloads)
			res, err := loadgen.Run(ctx, loadgen.Config{
				Addr: t.addr, Mode: mode, Clients: cmpClients,
				Duration:      time.Duration(plan.reloads)*(cmpReloadEvery+5*time.Second) + time.Minute, // a safety bound only
				Timeout:       plan.timeout,
				Reload:        t.reload,
				ReloadEvery:   cmpReloadEvery,
				Reloads:       plan.reloads,
				ReloadTimeout: 30 * time.Second,
				Tail:          time.Second,
			})
			t.stop()
			if err != nil {
				return Section{}, err
			}
			reloadOut[p.name][mode] = cmpReloadOutcome{res: res}
			env.Log("compare: %s, %s: %s failed over %d reloads (%d failed reloads)", p.name, mode, failures(res.Failures), len(res.Reloads), res.ReloadErrors())
		}
	}

	notes = append(notes, fmt.Sprintf("Load average (1, 5, 15 min) when the scenario started: %s; when it ended: %s. "+
		"A load above the core count means other jobs shared the machine: compare the per-round figures.", loadStart, loadAvg()))
	var names []string
	for _, p := range peers {
		names = append(names, p.name)
	}
	md := cmpReport(tools, plan, phase1, phase2, stats, names, reloadOut, notes)
	return Section{Title: "4. Throughput against the ceiling, and the peers", Markdown: md}, nil
}

// cmpThroughputPhase runs rounds of load over targets, each target alone
// for slice in each mode, in an order that rotates every round, and adds the
// results to stats under "key/mode". The first target is the ceiling.
func cmpThroughputPhase(ctx context.Context, env *Env, targets []*cmpTarget, rounds int, slice, warmup time.Duration, stats map[string]*cmpThroughput) error {
	run := func(t *cmpTarget, mode loadgen.Mode, d time.Duration) (*loadgen.Result, time.Duration, error) {
		var before ProcSample
		pid := t.manager()
		if pid > 0 {
			before, _ = ReadProc(pid)
		}
		res, err := loadgen.Run(ctx, loadgen.Config{Addr: t.addr, Mode: mode, Clients: cmpClients, Duration: d, Timeout: 5 * time.Second})
		if err != nil {
			return nil, 0, err
		}
		var cpu time.Duration
		if pid > 0 {
			if after, err := ReadProc(pid); err == nil {
				cpu = after.CPU() - before.CPU()
			}
		}
		return res, cpu, ctx.Err()
	}
	for _, mode := range cmpModes {
		for _, t := range targets {
			if _, _, err := run(t, mode, warmup); err != nil {
				return err
			}
		}
	}
	for r := range rounds {
		for _, mode := range cmpModes {
			order := slices.Clone(targets)
			k := r % len(order)
			order = append(order[k:], order[:k]...)
			if r%2 == 1 {
				slices.Reverse(order)
			}
			for _, t := range order {
				res, cpu, err := run(t, mode, slice)
				if err != nil {
					return err
				}
				key := t.key + "/" + string(mode)
				s := stats[key]
				if s == nil {
					s = &cmpThroughput{}
					stats[key] = s
				}
				s.successes += res.Successes
				s.elapsed += res.Elapsed
				s.perRound = append(s.perRound, res.Throughput)
				s.mgrCPU += cpu
				s.balance = max(s.balance, res.Balance)
				addFailures(&s.failures, res.Failures)
				env.Log("compare: round %d, %s, %s: %.0f req/s", r+1, mode, t.key, res.Throughput)
			}
		}
	}
	return nil
}

// addFailures adds b's counts to a.
func addFailures(a *loadgen.FailureCounts, b loadgen.FailureCounts) {
	a.Refused += b.Refused
	a.Reset += b.Reset
	a.EOF += b.EOF
	a.Timeout += b.Timeout
	a.Status += b.Status
	a.Other += b.Other
}

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
