package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recluster restart 1 under load: no request fails and only slot 1 gets a
// new pid.
func TestRestartCommandUnderLoad(t *testing.T) {
	script := workerScript(t, "export SDWORKER_NOTIFY=1 SDWORKER_DRAIN=200ms")
	m := startMaster(t, "-w", "3", "--listen", "127.0.0.1:0", "--ready-when", "ready", "--ready-timeout", "2s", "--timeout", "5s", "--", script)
	addr := m.httpAddr()
	before, _ := activeSet(m.status())

	var ok atomic.Int64
	var mu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get("http://" + addr + "/")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	progress := func(n int64) {
		target := ok.Load() + n
		m.waitFor(20*time.Second, "requests to flow", func() bool { return ok.Load() >= target })
	}
	progress(20)
	out, errOut, code := cli(t, nil, "restart", "1", "--control", m.ctl)
	progress(20)
	close(stop)
	wg.Wait()
	if code != 0 || !strings.Contains(out, "restart finished") || !strings.Contains(errOut, "restarting slot 1") {
		t.Fatalf("restart 1: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed across restart 1: %v", len(failures), ok.Load()+int64(len(failures)), failures[:min(5, len(failures))])
	}
	st := m.waitAllActive(20 * time.Second)
	after, _ := activeSet(st)
	for slot := range 3 {
		if changed := after[slot] != before[slot]; changed != (slot == 1) {
			t.Fatalf("pids went from %v to %v: only slot 1's may change", before, after)
		}
	}
	t.Logf("%d requests, 0 failed, across restart 1", ok.Load())

	// A program that is broken now: the restart aborts and says why.
	writeScript(t, script, "echo broken >&2; exit 3")
	_, errOut, code = cli(t, nil, "restart", "0", "--control", m.ctl)
	if code != 1 || !strings.Contains(errOut, "restart aborted") || !strings.Contains(errOut, "exited with code 3") {
		t.Fatalf("restart to a broken program: status %d, stderr %q", code, errOut)
	}
	if again, _ := activeSet(m.waitAllActive(20 * time.Second)); fmt.Sprint(again) != fmt.Sprint(after) {
		t.Fatalf("an aborted restart replaced workers: %v, then %v", after, again)
	}
	// A program that is never ready: its worker is killed, and the kill
	// makes one line of the master's log, not one per layer.
	writeScript(t, script, sdworkerScript("export SDWORKER_NOTIFY=0"))
	_, errOut, code = cli(t, nil, "restart", "0", "--control", m.ctl)
	if code != 1 || !strings.Contains(errOut, "not ready within 2s") {
		t.Fatalf("restart to a program that is never ready: status %d, stderr %q", code, errOut)
	}
	m.waitAllActive(20 * time.Second)
	log := m.stderr.String()
	if n := strings.Count(log, "event=killed"); n != 1 || strings.Contains(log, "worker killed") || strings.Contains(log, "was killed by signal") {
		t.Fatalf("one kill made %d event lines, or was logged again by the library:\n%s", n, log)
	}
	if n := strings.Count(log, "exit_code=3"); n != 1 || strings.Contains(log, "worker exited with code 3") {
		t.Fatalf("one crash made %d event lines, or was logged again by the library:\n%s", n, log)
	}
	for _, bad := range [][]string{{"restart"}, {"restart", "x"}} {
		if _, errOut, code := cli(t, nil, append(bad, "--control", m.ctl)...); code != 2 || !strings.Contains(errOut, "slot") {
			t.Errorf("%v: status %d, stderr %q", bad, code, errOut)
		}
	}
	if _, errOut, code := cli(t, nil, "restart", "7", "--control", m.ctl); code != 1 || !strings.Contains(errOut, "slots 0 to 2") {
		t.Errorf("restart 7: status %d, stderr %q", code, errOut)
	}
}
