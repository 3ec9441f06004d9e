//go:build linux

package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
)

// Scenario 6: the master's memory and CPU, idle and under load.
func init() {
	register(Scenario{Name: "cost", Order: 60, Run: runCost})
}

func runCost(ctx context.Context, env *Env) (Section, error) {
	const workers, clients = 16, 64
	idle, loadDur := 10*time.Second, 20*time.Second
	if env.Quick {
		idle, loadDur = 2*time.Second, 3*time.Second
	}
	const rssLimit = 15_000_000
	var md strings.Builder
	fmt.Fprintf(&md, "A `recluster run -w %d` master (no --metrics, so nothing but the master itself is measured) serving examples/hello. "+
		"RSS and CPU ticks (user+system, 10 ms each) of the master pid from /proc/PID/stat: idle for %v, then under load, "+
		"%d clients for %v in each client mode.\n\n", workers, idle, clients, loadDur)
	md.WriteString("Target: master RSS **at most 15 MB**, and **no master CPU per request** (the master never touches a connection).\n\n")
	m, err := StartMaster(ctx, env, MasterConfig{Workers: workers})
	if err != nil {
		return Section{}, err
	}
	defer m.Stop(10 * time.Second)
	// Let the start-up settle (the status polls above cost the master a little).
	time.Sleep(time.Second)
	t := newTable("phase", "duration", "requests", "master CPU", "master CPU per request", "master RSS (end)", "master threads", "verdict")
	a, err := ReadProc(m.PID)
	if err != nil {
		return Section{}, err
	}
	time.Sleep(idle)
	b, err := ReadProc(m.PID)
	if err != nil {
		return Section{}, err
	}
	maxRSS := max(a.RSS, b.RSS)
	idleCPU := b.CPU() - a.CPU()
	idleOK := b.RSS <= rssLimit
	t.row("idle", idle, "-", ms(idleCPU), "-", mb(b.RSS), b.Threads, verdict(idleOK))
	allOK := idleOK
	for _, mode := range []loadgen.Mode{loadgen.ModeNew, loadgen.ModeKeepAlive} {
		a, _ := ReadProc(m.PID)
		res, err := loadgen.Run(ctx, loadgen.Config{Addr: m.Addr, Mode: mode, Clients: clients, Duration: loadDur, Timeout: 10 * time.Second})
		if err != nil {
			return Section{}, err
		}
		b, err := ReadProc(m.PID)
		if err != nil {
			return Section{}, err
		}
		maxRSS = max(maxRSS, b.RSS)
		cpu := b.CPU() - a.CPU()
		// Allow the idle rate over the same time plus one tick of
		// rounding: anything more would be work per request.
		allowed := time.Duration(float64(idleCPU)*float64(b.At.Sub(a.At))/float64(idle)) + 10*time.Millisecond
		ok := b.RSS <= rssLimit && cpu <= allowed && res.Failures.Total() == 0
		allOK = allOK && ok
		perReq := "0"
		if cpu > 0 && res.Requests > 0 {
			perReq = fmt.Sprintf("%.2f µs", float64(cpu.Microseconds())/float64(res.Requests))
		}
		t.row("load, "+string(mode), b.At.Sub(a.At).Round(100*time.Millisecond), res.Requests, ms(cpu), perReq, mb(b.RSS), b.Threads, verdict(ok))
	}
	md.WriteString(t.String())
	fmt.Fprintf(&md, "Peak master RSS seen: %s. CPU per request is the master's CPU during the load divided by the requests; "+
		"a figure of 0 or within one 10 ms tick of the idle rate means the master did no work per request.\n\n", mb(maxRSS))
	fmt.Fprintf(&md, "Result: %s\n", verdict(allOK))
	return Section{Title: "6. Master cost", Markdown: md.String()}, nil
}
