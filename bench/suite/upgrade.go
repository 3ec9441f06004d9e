//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
	"github.com/recluster-go/recluster/internal/control"
)

// Scenario 13: upgrade in place (recluster upgrade), under load.
func init() {
	register(Scenario{Name: "upgrade", Order: 140, Run: runUpgrade})
}

func runUpgrade(ctx context.Context, env *Env) (Section, error) {
	sizes, upgrades, every, clients := []int{2, 16, 64}, 10, 300*time.Millisecond, 32
	if env.Quick {
		upgrades = 3
	}
	var md strings.Builder
	fmt.Fprintf(&md, "A `recluster run --listen 127.0.0.1:PORT -w N` master serving examples/hello under %d keep-alive clients that never retry (bench/loadgen); "+
		"%d `upgrade` requests over the control socket, one every %v after the previous one answered. The master re-executes its own binary in place "+
		"(pre-flight check, freeze, exec, adoption), and the answer comes from the new master, so **upgrade time** is from the request to the new master's answer. "+
		"A probe client (one request at a time on a new connection, never retried) times every request: **worst latency in** the upgrade windows against **out** of them.\n\n",
		clients, upgrades, every)
	md.WriteString("Target: **0 failed requests**, and the master's and every worker's pid unchanged.\n\n")
	t := newTable("workers", "upgrades", "upgrade time p50 / max", "frozen p50 / max", "pre-flight alone p50", "requests", "failed", "probe worst in / out of the windows", "pids kept", "verdict")
	allOK := true
	for _, n := range sizes {
		if ctx.Err() != nil {
			return Section{}, ctx.Err()
		}
		m, err := StartMaster(ctx, env, MasterConfig{Workers: n, Program: env.Hello, StartTimeout: 2 * time.Minute})
		if err != nil {
			return Section{}, err
		}
		before, err := m.Status(ctx)
		if err != nil {
			m.Stop(15 * time.Second)
			return Section{}, err
		}
		env.Log("upgrade: %d workers: %d upgrades", n, upgrades)
		probe := startProbe(m.Addr)
		var frozen []time.Duration
		res, err := loadgen.Run(ctx, loadgen.Config{
			Addr: m.Addr, Mode: loadgen.ModeKeepAlive, Clients: clients,
			Duration: time.Duration(upgrades)*(every+5*time.Second) + time.Minute, // a safety bound only
			Timeout:  10 * time.Second,
			Reload: func(ctx context.Context) error {
				if _, err := control.Do(ctx, m.Control, control.Request{Cmd: control.CmdUpgrade}, nil); err != nil {
					return err
				}
				st, err := m.Status(ctx)
				if err == nil {
					frozen = append(frozen, st.UpgradeFrozen)
				}
				return err
			},
			ReloadEvery: every, Reloads: upgrades, ReloadTimeout: 30 * time.Second, Tail: time.Second,
		})
		samples, probeFailures := probe.finish()
		after, stErr := m.Status(ctx)
		stopErr := m.Stop(15 * time.Second)
		if err != nil {
			return Section{}, err
		}
		kept := stErr == nil && after.MasterPID == before.MasterPID && samePIDs(before, after) && after.Upgrades == upgrades
		var durs []time.Duration
		var in, out time.Duration
		for _, r := range res.Reloads {
			durs = append(durs, r.Duration)
		}
		for _, s := range samples {
			inWindow := false
			for _, r := range res.Reloads {
				from := res.Start.Add(r.At)
				if s.end.After(from) && s.start.Before(from.Add(r.Duration)) {
					inWindow = true
				}
			}
			if inWindow {
				in = max(in, s.latency)
			} else {
				out = max(out, s.latency)
			}
		}
		p50, pmax := quantiles(durs)
		fr50, frMax := quantiles(frozen)
		check50, err := timePreflight(ctx, env, upgrades)
		if err != nil {
			return Section{}, err
		}
		failed := res.Failures.Total() + int64(probeFailures)
		ok := failed == 0 && res.ReloadErrors() == 0 && len(res.Reloads) == upgrades && kept && stopErr == nil
		allOK = allOK && ok
		t.row(n, fmt.Sprintf("%d/%d", len(res.Reloads)-res.ReloadErrors(), upgrades), ms(p50)+" / "+ms(pmax), ms(fr50)+" / "+ms(frMax), ms(check50),
			res.Requests+int64(len(samples)), failed, ms(in)+" / "+ms(out), kept, verdict(ok))
		env.Log("upgrade: %d workers: p50 %v max %v, failed %d, probe in %v out %v", n, p50, pmax, failed, in, out)
	}
	md.WriteString(t.String())
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&md, "The machine's load average as the scenario ended: %s (other work shares the 2 cores; every process start is slower for it).\n\n", strings.Join(strings.Fields(string(load))[:3], " "))
	}
	md.WriteString("**frozen** is the time the master stood still, as the new master reports it (`upgrade_frozen_ns` in the status): from taking the state to the adoption of every worker, the exec and the new Go runtime's start included. " +
		"\"pre-flight alone\" is the same binary run as the pre-flight runs it (`RECLUSTER_UPGRADE_CHECK=1`, which answers and exits in its init), timed on its own right after the upgrades. " +
		"The rest of the upgrade time is starting the pre-flight process and waiting for it, the freeze (stopping every worker's readers, writing what is queued for them) and the answer. " +
		"No connection waits on the master meanwhile: the workers keep accepting from the sockets they hold, so the latency in the windows is the cores being shared, not queueing at the master.\n\n")
	fmt.Fprintf(&md, "Result: %s\n", verdict(allOK))
	return Section{Title: "11. Upgrade in place", Markdown: md.String()}, nil
}

func samePIDs(a, b *control.Status) bool {
	pids := map[int]bool{}
	for _, w := range a.Workers {
		pids[w.PID] = true
	}
	for _, w := range b.Workers {
		if !pids[w.PID] {
			return false
		}
	}
	return len(a.Workers) == len(b.Workers)
}

// probe times one request at a time, each on a new connection, never
// retried.
type probe struct {
	mu       sync.Mutex
	samples  []probeSample
	failures int
	stop     chan struct{}
	done     chan struct{}
}

type probeSample struct {
	start, end time.Time
	latency    time.Duration
}

func startProbe(addr string) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			start := time.Now()
			err := probeOnce(addr)
			end := time.Now()
			p.mu.Lock()
			if err != nil {
				p.failures++
			} else {
				p.samples = append(p.samples, probeSample{start, end, end.Sub(start)})
			}
			p.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return p
}

func probeOnce(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func (p *probe) finish() ([]probeSample, int) {
	close(p.stop)
	<-p.done
	return p.samples, p.failures
}

// timePreflight runs the pre-flight check of the CLI binary n times and
// returns the median.
func timePreflight(ctx context.Context, env *Env, n int) (time.Duration, error) {
	var durs []time.Duration
	for i := 0; i < n; i++ {
		cmd := exec.CommandContext(ctx, env.Recluster)
		cmd.Env = append(os.Environ(), "RECLUSTER_UPGRADE_CHECK=1")
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("pre-flight check: %v: %s", err, out)
		}
		durs = append(durs, time.Since(start))
	}
	p50, _ := quantiles(durs)
	return p50, nil
}
