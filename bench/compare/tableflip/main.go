// Command tableflip-server is the tableflip peer of the compare benchmark: a
// single-process Go HTTP server upgraded in place with
// github.com/cloudflare/tableflip, written like tableflip's own example.
// SIGHUP starts an upgrade: the new process inherits the listening socket,
// calls Ready, and the old process then calls http.Server.Shutdown at once.
// The handler is the one of examples/hello (tiny response, X-Worker-Id).
//
//	tableflip-server -addr 127.0.0.1:8080 -pid-file /tmp/tf.pid [-watch-pid PID]
//	kill -HUP $(cat /tmp/tf.pid)      # upgrade
//
// It is a separate Go module so that recluster's own module does not depend
// on tableflip.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	pidFile := flag.String("pid-file", "", "file the ready process writes its pid to")
	watchPID := flag.Int("watch-pid", 0, "exit when this process is gone (the benchmark that started the first generation)")
	flag.Parse()

	if *watchPID > 0 {
		// Upgraded generations are not children of the benchmark, so they
		// would outlive it if it died: watch it instead.
		go func() {
			for range time.Tick(500 * time.Millisecond) {
				if syscall.Kill(*watchPID, 0) == syscall.ESRCH {
					os.Exit(3)
				}
			}
		}()
	}

	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidFile})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
		for s := range sig {
			if s != syscall.SIGHUP {
				upg.Stop()
				return
			}
			if err := upg.Upgrade(); err != nil {
				log.Println("upgrade failed:", err)
			}
		}
	}()

	ln, err := upg.Fds.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	id := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Id", "0")
		w.Header().Set("X-Worker-Pid", id)
		fmt.Fprintf(w, "hello from worker 0 (pid %s, generation %d)\n", id, 0)
	})
	srv := &http.Server{Handler: mux}
	go func() {
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			log.Println("serve:", err)
		}
	}()

	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	<-upg.Exit()

	// As in tableflip's example: shut down as soon as the new process is
	// ready, bounded by a timeout.
	time.AfterFunc(30*time.Second, func() { os.Exit(1) })
	srv.Shutdown(context.Background())
}
