package recluster_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
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

// deployCopy puts a copy of the file src at dst, as a deploy does: a new
// file (a new inode) renamed into place.
func deployCopy(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst+".new", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

// A worker of package worker takes its passed socket without LISTEN_PID and
// says so: the first worker goes through the exec trampoline (LISTEN_PID in
// the environment it was executed with), the workers started after its
// declaration are executed directly (no LISTEN_PID) and serve on the shared
// socket; a deploy that replaces the file sends the next worker through the
// trampoline again, until it has declared in turn. A direct exec that
// fails is still explained.
func TestWorkersThatNeedNoListenPIDSkipTheTrampoline(t *testing.T) {
	dir := t.TempDir()
	program := filepath.Join(dir, "server")
	deployCopy(t, serverBin, program)
	workDir := filepath.Join(dir, "work")
	if err := os.Mkdir(workDir, 0o755); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	c := recluster.New(program, recluster.Options{
		Workers: 1, Respawn: 20 * time.Millisecond, Timeout: 3 * time.Second,
		// Ready comes after the listening message on the channel, so a
		// ready worker's declaration has been heard.
		// By name, so that only the passed socket serves: the master would
		// hand the same socket over the channel for its address.
		ReadyWhen: recluster.Ready, Args: []string{"-mode", "ready", "-addr", "name:http"}, Dir: workDir,
		Sockets: []recluster.Socket{{Name: "http", Address: "127.0.0.1:0"}},
		OnEvent: rec.add,
		Logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Terminate(ctx)
	})
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	url := "http://" + c.Addrs()[0].String()
	readyGen := func(gen int) int {
		t.Helper()
		return rec.waitN(t, 1, 20*time.Second, func(e recluster.Event) bool {
			return e.Kind == recluster.EventActive && e.Generation == gen
		}).PID
	}
	reload := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := c.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// check asserts how the worker pid of gen was started, and that it,
	// alone once the one before it has gone, answers on the shared socket.
	check := func(gen, pid int, trampolined bool) {
		t.Helper()
		testbin.WantPassedSocketExec(t, gen, pid, "http", trampolined)
		if gen > 1 {
			rec.waitN(t, 1, 20*time.Second, func(e recluster.Event) bool {
				return e.Kind == recluster.EventExited && e.Generation == gen-1
			})
		}
		if r := get(t, url, "/"); r.header.Get("X-Worker-Pid") != strconv.Itoa(pid) {
			t.Fatalf("generation %d: answered by pid %q, want %d", gen, r.header.Get("X-Worker-Pid"), pid)
		}
	}

	check(1, readyGen(1), true)
	reload()
	check(2, readyGen(2), false)

	deployCopy(t, serverBin, program) // the same program, a new file
	reload()
	check(3, readyGen(3), true)
	reload()
	check(4, readyGen(4), false)

	// The file is unchanged, so the worker is executed directly; its
	// working directory is gone.
	if err := os.Remove(workDir); err != nil {
		t.Fatal(err)
	}
	err := c.Reload(context.Background())
	if !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "the working directory "+workDir+" does not exist") {
		t.Fatalf("a direct exec without its working directory: %v", err)
	}
	if r := get(t, url, "/"); r.header.Get("X-Generation") != "4" {
		t.Fatalf("after the failed reload: answered by generation %q, want 4", r.header.Get("X-Generation"))
	}
}
