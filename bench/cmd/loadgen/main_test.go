package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
)

func TestParseTarget(t *testing.T) {
	addr, path, host, err := parseTarget("http://127.0.0.1:8080/a/b?x=1")
	if err != nil || addr != "127.0.0.1:8080" || path != "/a/b?x=1" || host != "127.0.0.1:8080" {
		t.Errorf("got %q %q %q %v", addr, path, host, err)
	}
	addr, path, _, err = parseTarget("http://localhost")
	if err != nil || addr != "localhost:80" || path != "/" {
		t.Errorf("got %q %q %v", addr, path, err)
	}
	for _, bad := range []string{"https://127.0.0.1/", "127.0.0.1:80", "http:///x", "http://u:p@127.0.0.1/"} {
		if _, _, _, err := parseTarget(bad); err == nil {
			t.Errorf("parseTarget(%q): no error", bad)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{
		"HUP": syscall.SIGHUP, "sighup": syscall.SIGHUP, "SIGTERM": syscall.SIGTERM, "1": syscall.Signal(1),
	} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "NOPE", "-1", "0"} {
		if _, err := parseSignal(bad); err == nil {
			t.Errorf("parseSignal(%q): no error", bad)
		}
	}
}

func TestCommandReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	mark := filepath.Join(dir, "mark")
	if err := commandReload("echo hi > '" + mark + "'")(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(mark); err != nil || string(b) != "hi\n" {
		t.Errorf("command did not run: %q %v", b, err)
	}
	err := commandReload("echo oops >&2; exit 3")(ctx)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "oops") {
		t.Errorf("got %v, want exit status 3 with output", err)
	}
	// Cancellation kills the command and its children (the sleep keeps
	// stdout open, so without the group kill Wait would take WaitDelay).
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err = commandReload("sleep 60 & sleep 60")(cctx)
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("got %v, want deadline exceeded", err)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 4}
	io.WriteString(tb, "abc")
	io.WriteString(tb, "defg")
	if tb.String() != "defg" {
		t.Errorf("got %q", tb.String())
	}
}

func TestRunEndToEnd(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	served := filepath.Join(dir, "served")
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { os.WriteFile(served, nil, 0o644) })
		if r.Header.Get("X-Bench") != "1" {
			http.Error(w, "missing header", http.StatusBadRequest)
			return
		}
		w.Header().Set(loadgen.HeaderWorkerID, "w1")
		io.WriteString(w, "ok")
	}))
	defer srv.Close()

	// The reload command waits (bounded by -reload-timeout) for a request
	// to have been served, so the reloads overlap the load.
	reload := fmt.Sprintf("while [ ! -e '%s' ]; do sleep 0.01; done; echo r >> '%s'", served, count)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{
		"-url", srv.URL + "/x", "-c", "2", "-H", "X-Bench: 1", "-json",
		"-reload-cmd", reload, "-reload-every", "5ms", "-reloads", "2", "-tail", "5ms", "-reload-timeout", "20s",
	}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	var res loadgen.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not the JSON result: %v\n%s", err, stdout.String())
	}
	if res.StopReason != loadgen.StopReloads || len(res.Reloads) != 2 || res.ReloadErrors() != 0 ||
		res.Successes == 0 || res.Failures.Total() != 0 || res.Path != "/x" {
		t.Errorf("unexpected result: %s", stdout.String())
	}
	if b, _ := os.ReadFile(count); string(b) != "r\nr\n" {
		t.Errorf("reload command ran %q", b)
	}
	if !strings.Contains(stderr.String(), "| successes |") {
		t.Errorf("no summary on stderr:\n%s", stderr.String())
	}
}

func TestRunStrictAndSignal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	defer srv.Close()
	// Signal 0 is refused by parseSignal, so reload by sending SIGCONT to
	// ourselves, which is harmless.
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{
		"-url", srv.URL, "-n", "5", "-c", "1", "-strict",
		"-reload-signal", "CONT", "-reload-pid", strconv.Itoa(os.Getpid()), "-reload-every", "1ms",
	}, &stdout, &stderr)
	if code != 3 {
		t.Fatalf("exit %d, want 3; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "| status | 5 |") {
		t.Errorf("summary lacks the status failures:\n%s", stdout.String())
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-url", "http://127.0.0.1:1/"},
		{"-n", "1", "-reload-cmd", "true", "-reload-signal", "HUP", "-reload-pid", "1"},
		{"-n", "1", "-reload-signal", "HUP"},
		{"-n", "1", "-reloads", "3"},
		{"-n", "1", "-mode", "bogus"},
		{"-n", "1", "-H", "novalue"},
		{"-n", "1", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		}
	}
}
