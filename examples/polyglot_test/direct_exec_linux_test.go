package polyglot_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/testbin"
)

// The Node and Python examples say "listen_pid":"optional" in their
// listening message: the first worker goes through the exec trampoline
// (LISTEN_PID in the environment it was executed with), the next
// generations are executed directly, without LISTEN_PID, and serve; a
// deploy that replaces the script (the interpreter is the same file) sends
// the next worker through the trampoline again.
func TestExamplesSkipTheTrampolineOnceDeclared(t *testing.T) {
	for _, tc := range []struct {
		name string
		prog func(*testing.T) program
	}{{"node", node}, {"python", python}} {
		t.Run(tc.name, func(t *testing.T) { checkDirectExec(t, tc.prog(t)) })
	}
}

func checkDirectExec(t *testing.T, p program) {
	dir := t.TempDir()
	script := filepath.Base(p.script)
	deploy := func(extra string) {
		t.Helper()
		src, err := os.ReadFile(p.script)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, script)
		if err := os.WriteFile(dst+".new", append(src, extra...), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dst+".new", dst); err != nil {
			t.Fatal(err)
		}
	}
	deploy("")
	out := &testbin.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("master and worker output:\n%s", out.String())
		}
	})
	events := &eventLog{}
	c := recluster.New(p.interpreter, recluster.Options{
		// The script by a path relative to the working directory, as the
		// master's identity of the program resolves it.
		Args: []string{script}, Dir: dir,
		Workers: 1, ReadyWhen: recluster.Ready, StopSignal: syscall.SIGTERM,
		Timeout: drainTimeout, ReadyTimeout: 20 * time.Second, Respawn: 100 * time.Millisecond,
		Sockets: []recluster.Socket{{Name: "http", Address: "127.0.0.1:0"}},
		Stdout:  out, Stderr: out, OnEvent: events.add,
		Logger: slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c.Terminate(ctx)
	})
	url := "http://" + c.Addrs()[0].String() + "/"
	client := &http.Client{Timeout: requestTimeout, Transport: &http.Transport{DisableKeepAlives: true}}

	// event waits for the first event of kind in generation gen.
	event := func(kind recluster.EventKind, gen int) recluster.Event {
		t.Helper()
		var found recluster.Event
		waitFor(t, 30*time.Second, string(kind)+" of generation "+strconv.Itoa(gen), func() bool {
			for _, e := range events.all() {
				if e.Kind == kind && e.Generation == gen {
					found = e
					return true
				}
			}
			return false
		})
		return found
	}
	// check asserts how the worker of gen was executed, and that it serves
	// alone once the generation before it has exited.
	check := func(gen int, trampolined bool) {
		t.Helper()
		pid := event(recluster.EventActive, gen).PID
		testbin.WantPassedSocketExec(t, gen, pid, "http", trampolined)
		if gen > 1 {
			event(recluster.EventExited, gen-1)
		}
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("generation %d: %v", gen, err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Worker-Pid"); resp.StatusCode != 200 || got != strconv.Itoa(pid) {
			t.Fatalf("generation %d: status %d from pid %q, want 200 from %d", gen, resp.StatusCode, got, pid)
		}
	}
	reload := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}

	check(1, true)
	reload()
	check(2, false)
	reload()
	check(3, false)
	comment := "#"
	if strings.HasSuffix(script, ".js") {
		comment = "//"
	}
	deploy("\n" + comment + " the next release\n") // the same interpreter, another script
	reload()
	check(4, true)
}
