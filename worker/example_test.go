package worker_test

import (
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/recluster-go/recluster/worker"
)

// A worker that serves HTTP on the master's shared socket and drains
// without failing a client when told to go. Run alone, it listens by itself
// and drains on SIGTERM or Ctrl-C.
func ExampleServe() {
	ln, err := worker.Listen("tcp", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "worker %d, pid %d\n", worker.ID(), os.Getpid())
	})
	if err := worker.Serve(&http.Server{Handler: handler}, ln); err != nil {
		log.Fatal(err)
	}
}

// A worker with ReadyWhen=Ready says when it is ready, after its own
// warm-up, rather than when it starts listening.
func ExampleReady() {
	ln, err := worker.Listen("tcp", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	// ... load caches, connect to the database ...
	worker.Ready()
	worker.Serve(&http.Server{}, ln)
}
