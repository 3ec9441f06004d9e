//go:build linux

package main

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
)

// cmpReport writes scenario 4's section.
func cmpReport(tools *cmpTools, plan cmpPlan, phase1, phase2 []*cmpTarget, stats map[string]*cmpThroughput,
	peers []string, reloads map[string]map[loadgen.Mode]cmpReloadOutcome, notes []string) string {
	var md strings.Builder
	fmt.Fprintf(&md, "Throughput: every server below runs at the same time on its own 127.0.0.1 port; the load generator "+
		"(%d closed-loop clients that never retry, in-process) loads one at a time for %v, in %d interleaved rounds per mode "+
		"whose order rotates, after a %v warm-up each. A server's ratio is the median over rounds of its req/s over the "+
		"ceiling's in the same round (range in brackets). The machine has %d cores shared by the clients and every server, and "+
		"nothing is pinned; other jobs on the machine add noise, which the interleaving spreads evenly.\n\n",
		cmpClients, plan.slice, plan.rounds, plan.warmup, runtime.NumCPU())
	fmt.Fprintf(&md, "Reloads: scenario 1's load (%d clients, a reload %v after the previous one returned, %v request timeout, "+
		"1 s of load after the last) with %d reloads per server and mode, %d workers (tableflip: one process), a fresh server per mode. "+
		"Failures per reload = failed requests / completed reloads.\n\n",
		cmpClients, cmpReloadEvery, plan.timeout, plan.reloads, cmpReloadWorkers)

	md.WriteString("Versions: ")
	vs := []string{tools.goVer, "recluster " + tools.reclusterVer, "github.com/cloudflare/tableflip " + tools.tableflipVer}
	if tools.nodeDir != "" {
		vs = append(vs, "node "+tools.nodeVer, "npm recluster "+tools.reclusterNpm, "pm2 "+tools.pm2Ver)
	}
	md.WriteString(strings.Join(vs, ", ") + " (npm packages pinned in bench/compare/node/package-lock.json, tableflip in bench/compare/tableflip/go.mod).\n\n")

	ka := func(t *cmpTarget, mode loadgen.Mode) *cmpThroughput { return stats[t.key+"/"+string(mode)] }
	cell := func(t, ceiling *cmpTarget, mode loadgen.Mode) string {
		s := ka(t, mode)
		if s == nil {
			return "–"
		}
		if t == ceiling {
			return fmt.Sprintf("%.0f (1)", s.rps())
		}
		return fmt.Sprintf("%.0f (%s)", s.rps(), ratioOf(s, ka(ceiling, mode)))
	}
	fail := func(t *cmpTarget, mode loadgen.Mode) string {
		if o, ok := reloads[t.peer][mode]; ok && t.peer != "" {
			return o.perReload()
		}
		return "–"
	}

	t := newTable("tool", "version", "mode", "N", "keep-alive req/s (ratio)", "new-connection req/s (ratio)",
		"failures/reload, new conn", "failures/reload, keep-alive", "notes")
	rows := func(targets []*cmpTarget, withFailures bool) {
		if len(targets) == 0 {
			return
		}
		ceiling := targets[0]
		for _, tg := range targets {
			fn, fk := "–", "–"
			if withFailures {
				fn, fk = fail(tg, loadgen.ModeNew), fail(tg, loadgen.ModeKeepAlive)
			}
			t.row(tg.tool, tg.version, tg.mode, tg.workers, cell(tg, ceiling, loadgen.ModeKeepAlive), cell(tg, ceiling, loadgen.ModeNew), fn, fk, tg.note)
		}
	}
	rows(phase1, true)
	rows(phase2, false)
	md.WriteString(t.String())

	// The goal: recluster's default mode against the ceiling, N=2.
	var verdicts, misses []string
	allOK := len(phase1) > 1
	for _, tg := range append(append([]*cmpTarget{}, phase1...), phase2...) {
		if !strings.HasPrefix(tg.key, "recluster-") {
			continue
		}
		ceiling := phase1[0]
		if tg.workers != ceiling.workers && len(phase2) > 0 {
			ceiling = phase2[0]
		}
		for _, mode := range cmpModes {
			r := ratioOf(ka(tg, mode), ka(ceiling, mode))
			ok := r.median >= cmpGoal
			if tg.key == "recluster-shared-2" {
				allOK = allOK && ok
			}
			verdicts = append(verdicts, fmt.Sprintf("%s N=%d %s: %.3f %s", tg.mode, tg.workers, mode, r.median, verdict(ok)))
			if !ok && r.median > 0 {
				misses = append(misses, explainMiss(tg, ka(ceiling, mode), string(mode), r))
			}
		}
	}
	fmt.Fprintf(&md, "Goal: recluster / ceiling ≥ %.2f. %s.\n\n", cmpGoal, strings.Join(verdicts, "; "))
	if len(misses) > 0 {
		md.WriteString("Where the goal is missed:\n\n")
		for _, m := range misses {
			md.WriteString("- " + m + "\n")
		}
		md.WriteString("\n")
	}
	fmt.Fprintf(&md, "\"failures/reload\" for recluster is this scenario's own run with scenario 1's settings (%d shared-socket workers); scenario 1 is the reference for it.\n\n", cmpReloadWorkers)

	md.WriteString("### Throughput runs\n\n")
	d := newTable("server", "N", "mode", "req/s", "per round", "ratio", "balance (worst)", "manager CPU", "failed")
	for _, targets := range [][]*cmpTarget{phase1, phase2} {
		for _, mode := range cmpModes {
			for _, tg := range targets {
				s := ka(tg, mode)
				if s == nil {
					continue
				}
				var per []string
				for _, v := range s.perRound {
					per = append(per, fmt.Sprintf("%.0f", v))
				}
				mgr := "none"
				if tg.manager() > 0 || s.mgrCPU > 0 {
					mgr = fmt.Sprintf("%.1f%% of a core", 100*s.mgrCPU.Seconds()/s.elapsed.Seconds())
				}
				ratio := "1"
				if tg != targets[0] {
					ratio = ratioOf(s, ka(targets[0], mode)).String()
				}
				d.row(tg.tool+", "+tg.mode, tg.workers, mode, fmt.Sprintf("%.0f", s.rps()), strings.Join(per, " "), ratio,
					fmt.Sprintf("%.3f", s.balance), mgr, failures(s.failures))
			}
		}
	}
	md.WriteString(d.String())
	md.WriteString("\"manager CPU\" is the CPU time the master or daemon (recluster's master, Node's cluster master, the PM2 daemon) used during the runs, over their wall time: a manager that accepts and hands over every connection pays for it there. \"balance\" is the busiest worker's responses over the idlest's (X-Worker-Id).\n\n")

	md.WriteString("### Reload runs\n\n")
	r := newTable("server", "mode", "requests", "failed", "failed/reload", "reloads ok", "reload p50 / max", "req/s", "reconnects", "first failure of each kind")
	for _, name := range peers {
		for _, mode := range []loadgen.Mode{loadgen.ModeNew, loadgen.ModeKeepAlive} {
			o, ok := reloads[name][mode]
			if !ok {
				continue
			}
			if o.err != nil || o.res == nil {
				r.row(name, mode, "–", "–", "–", "–", "–", "–", "–", "did not start")
				continue
			}
			res := o.res
			var durs []time.Duration
			for _, rr := range res.Reloads {
				durs = append(durs, rr.Duration)
			}
			p50, pmax := quantiles(durs)
			r.row(name, mode, res.Requests, failures(res.Failures), o.perReload(),
				fmt.Sprintf("%d/%d", len(res.Reloads)-res.ReloadErrors(), plan.reloads), ms(p50)+" / "+ms(pmax),
				fmt.Sprintf("%.0f", res.Throughput), res.Reconnects, strings.TrimSpace(strings.ReplaceAll(examples(res), "\n", "<br>")))
		}
	}
	md.WriteString(r.String())
	md.WriteString("A reload of the Node peers returns when the new workers listen (recluster's callback, `pm2 reload`); tableflip's when the new process wrote its pid file and the old one exited (tableflip refuses the next upgrade before that).\n\n")

	if len(notes) > 0 {
		md.WriteString("Notes:\n\n")
		for _, n := range notes {
			md.WriteString("- " + n + "\n")
		}
		md.WriteString("\n")
	}
	if !allOK {
		md.WriteString("Result: **MISS** (see the throughput runs).\n")
	} else {
		md.WriteString("Result: **PASS**\n")
	}
	return md.String()
}

// explainMiss states what the rounds show about a missed ratio: whether
// the best round met the goal (a miss within the machine's round-to-round
// spread) and how much the ceiling itself varied.
func explainMiss(tg *cmpTarget, ceiling *cmpThroughput, mode string, r cmpRatio) string {
	spread := ""
	if ceiling != nil && len(ceiling.perRound) > 1 {
		lo, hi := slices.Min(ceiling.perRound), slices.Max(ceiling.perRound)
		spread = fmt.Sprintf("; the ceiling itself varied by %.0f%% between rounds", (hi/lo-1)*100)
	}
	if r.hi >= cmpGoal {
		why := fmt.Sprintf("%s N=%d %s: median %.3f, rounds %.3f to %.3f. The best round meets the goal, so the miss is within the round-to-round spread of this shared %d-core machine%s", tg.mode, tg.workers, mode, r.median, r.lo, r.hi, runtime.NumCPU(), spread)
		if mode == string(loadgen.ModeKeepAlive) {
			why += "; with keep-alive, the connections also spread unevenly over the workers (balance column)"
		}
		return why + "."
	}
	return fmt.Sprintf("%s N=%d %s: median %.3f, every round below the goal (%.3f to %.3f)%s.", tg.mode, tg.workers, mode, r.median, r.lo, r.hi, spread)
}
