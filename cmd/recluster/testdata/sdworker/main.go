// Command sdworker is a test worker that knows nothing of recluster: it
// takes its listeners with go-systemd's activation.Listeners and reports
// readiness with daemon.SdNotify, as a program written for systemd does.
//
// Environment: SDWORKER_NOTIFY=1 sends READY=1 once serving (after
// SDWORKER_READY_DELAY); SDWORKER_EXIT=N exits with status N at once;
// SDWORKER_DRAIN=D stops accepting on SIGTERM and waits D before Shutdown;
// SDWORKER_FLOOD=N (in slot SDWORKER_FLOOD_SLOT, default 0) sends N lines
// on the master's channel in bursts of 500 (SDWORKER_FLOOD_PAUSE apart,
// default 50ms), unknown commands or, with SDWORKER_FLOOD_KIND=malformed,
// lines that are not JSON, then prints "sdworker flood done".
//
// GET / answers "pid=PID slot=SLOT gen=GEN"; GET /env runs env(1) in a
// child process and returns its output; GET /info returns what the worker
// saw at start.
package main

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

func main() {
	if code := os.Getenv("SDWORKER_EXIT"); code != "" {
		n, _ := strconv.Atoi(code)
		fmt.Fprintln(os.Stderr, "sdworker: exiting with", n, "as told")
		os.Exit(n)
	}
	info := fmt.Sprintf("LISTEN_PID=%s LISTEN_FDS=%s LISTEN_FDNAMES=%s NOTIFY_SOCKET=%s pid=%d",
		os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"), os.Getenv("NOTIFY_SOCKET"), os.Getpid())
	listeners, err := activation.Listeners() // unsets LISTEN_*
	if err != nil || len(listeners) == 0 {
		fmt.Fprintln(os.Stderr, "sdworker: no socket passed:", err, info)
		os.Exit(3)
	}
	id := fmt.Sprintf("pid=%d slot=%s gen=%s", os.Getpid(), os.Getenv("WORKER_ID"), os.Getenv("RECLUSTER_GENERATION"))
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, id) })
	mux.HandleFunc("/info", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, info) })
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		out, err := exec.Command("env").Output()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Write(out)
	})
	fmt.Println("sdworker serving", id)
	if n, _ := strconv.Atoi(os.Getenv("SDWORKER_FLOOD")); n > 0 && os.Getenv("WORKER_ID") == cmp.Or(os.Getenv("SDWORKER_FLOOD_SLOT"), "0") {
		go flood(n, os.Getenv("SDWORKER_FLOOD_KIND") == "malformed")
	}
	srv := &http.Server{Handler: mux}
	for _, ln := range listeners {
		go srv.Serve(ln)
	}
	if os.Getenv("SDWORKER_NOTIFY") == "1" {
		if d, err := time.ParseDuration(os.Getenv("SDWORKER_READY_DELAY")); err == nil {
			time.Sleep(d)
		}
		daemon.SdNotify(false, "STATUS=serving "+id)
		daemon.SdNotify(true, daemon.SdNotifyReady) // unsets NOTIFY_SOCKET
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	if d, err := time.ParseDuration(os.Getenv("SDWORKER_DRAIN")); err == nil {
		// Stop accepting first and let the connections accepted meanwhile
		// be tracked, so that Shutdown waits for them too.
		for _, ln := range listeners {
			ln.Close()
		}
		time.Sleep(d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}

// flood sends n junk lines on the channel, a burst at a time, so that
// they keep coming while the test does other things.
func flood(n int, malformed bool) {
	fd, err := strconv.Atoi(os.Getenv("RECLUSTER_CHANNEL_FD"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdworker: no channel to flood:", err)
		return
	}
	channel := os.NewFile(uintptr(fd), "channel")
	pause, err := time.ParseDuration(os.Getenv("SDWORKER_FLOOD_PAUSE"))
	if err != nil {
		pause = 50 * time.Millisecond
	}
	for i := 0; i < n; {
		var burst []byte
		for end := min(n, i+500); i < end; i++ {
			if malformed {
				burst = fmt.Appendf(burst, "junk %d, not JSON\n", i)
			} else {
				burst = fmt.Appendf(burst, "{\"cmd\":\"junk-%d\"}\n", i)
			}
		}
		if _, err := channel.Write(burst); err != nil {
			fmt.Fprintln(os.Stderr, "sdworker: flood:", err)
			return
		}
		time.Sleep(pause)
	}
	fmt.Println("sdworker flood done")
}
