// Command hello is a whole cluster in one program: run alone, it is the
// master and starts copies of itself as workers, each serving HTTP on the
// same port.
//
//	go run ./examples/hello            # serves http://127.0.0.1:8080
//	kill -HUP <master pid>             # zero-downtime reload
//	Ctrl-C                             # graceful stop
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

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/worker"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	workers := flag.Int("workers", 0, "number of workers (default: one per CPU)")
	flag.Parse()
	if worker.IsWorker() {
		serve(*addr)
		return
	}
	master(*workers, *addr)
}

func master(workers int, addr string) {
	c := recluster.New(recluster.Self, recluster.Options{Workers: workers})
	if err := c.Run(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("master pid %d: serving http://%s\n", os.Getpid(), addr)
	fmt.Printf("reload: kill -HUP %d    stop: Ctrl-C\n", os.Getpid())

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGINT, syscall.SIGTERM)
	for sig := range signals {
		if sig == syscall.SIGHUP || sig == syscall.SIGUSR2 {
			go func() {
				if err := c.Reload(context.Background()); err != nil {
					log.Print(err)
				}
			}()
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c.Terminate(ctx)
		cancel()
		return
	}
}

func serve(addr string) {
	id := strconv.Itoa(worker.ID())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Id", id)
		fmt.Fprintf(w, "hello from worker %s (pid %d, generation %d)\n", id, os.Getpid(), worker.Generation())
	})
	ln, err := worker.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	if err := worker.Serve(&http.Server{Handler: mux}, ln); err != nil {
		log.Fatal(err)
	}
}
