package testbin

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// WantPassedSocketExec fails t unless the worker pid (of generation gen)
// was executed with one passed socket named name, and with LISTEN_PID set
// to its own pid exactly when trampolined: the way the master started it,
// through the exec trampoline or directly. It reads the environment the
// process was executed with (/proc/PID/environ, Linux), which is what the
// master gave it: workers take LISTEN_* out of their own copy only.
func WantPassedSocketExec(t testing.TB, gen, pid int, name string, trampolined bool) {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(raw), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	if got, has := env["LISTEN_PID"]; has != trampolined || (has && got != strconv.Itoa(pid)) {
		t.Fatalf("generation %d (pid %d): LISTEN_PID=%q (set: %v), want set to its pid: %v", gen, pid, got, has, trampolined)
	}
	if env["LISTEN_FDS"] != "1" || env["LISTEN_FDNAMES"] != name {
		t.Fatalf("generation %d: LISTEN_FDS=%q LISTEN_FDNAMES=%q, want 1 and %q", gen, env["LISTEN_FDS"], env["LISTEN_FDNAMES"], name)
	}
	for k := range env {
		if strings.HasPrefix(k, "RECLUSTER_TRAMPOLINE") {
			t.Fatalf("generation %d: the worker was executed with %s", gen, k)
		}
	}
}
