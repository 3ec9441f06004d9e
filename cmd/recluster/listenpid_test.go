package main

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// A program written for systemd never says that it takes its sockets
// without LISTEN_PID, so every worker of it, of every generation, goes
// through the exec trampoline: it finds LISTEN_PID set to its own pid and
// its socket, and serves. (Workers of package worker, which do say so, are
// started directly after the first: TestWorkersThatNeedNoListenPIDSkipTheTrampoline
// in package recluster.)
func TestSystemdProgramAlwaysGetsListenPID(t *testing.T) {
	m := startMaster(t, "-w", "1", "--listen", "web=127.0.0.1:0", "--ready-when", "ready",
		"--env", "SDWORKER_NOTIFY=1", "--", sdworkerBin)
	addr := m.httpAddr()
	for gen := 1; gen <= 3; gen++ {
		if gen > 1 {
			if out, errOut, code := cli(t, nil, "reload", "--control", m.ctl); code != 0 {
				t.Fatalf("reload to generation %d: status %d, stdout %q, stderr %q", gen, code, out, errOut)
			}
		}
		var pid string
		m.waitFor(20*time.Second, "generation "+strconv.Itoa(gen)+" alone", func() bool {
			st := m.status()
			if len(st.Workers) != 1 || st.Workers[0].Generation != gen || !st.Workers[0].Ready {
				return false
			}
			pid = strconv.Itoa(st.Workers[0].PID)
			return true
		})
		info := get(t, addr, "/info")
		if !strings.Contains(info, "LISTEN_PID="+pid+" ") || !strings.HasSuffix(info, " pid="+pid) {
			t.Fatalf("generation %d (pid %s) saw %q", gen, pid, info)
		}
	}
}
