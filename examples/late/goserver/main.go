// Command goserver is a Go HTTP server that knows nothing of recluster: it
// takes the socket systemd-style on fd 3 after LATE_MS (3 s by default)
// and drains on SIGTERM without dropping a request.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	late, err := strconv.Atoi(os.Getenv("LATE_MS"))
	if err != nil {
		late = 3000
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	time.Sleep(time.Duration(late) * time.Millisecond)
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Pid", strconv.Itoa(os.Getpid()))
		w.Header().Set("X-Worker-Id", os.Getenv("WORKER_ID"))
		w.Header().Set("Connection", "close")
		fmt.Fprintln(w, "hello from go")
	})}
	// Shutdown alone would drop requests: a connection accepted just before
	// it, whose request is read after it began, is closed unanswered
	// (net/http's conn.serve returns once the server is shutting down). So
	// stop accepting first, answer every connection taken so far (each
	// response closes its connection), and only then shut down.
	var open sync.WaitGroup
	srv.ConnState = func(_ net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Done()
		}
	}
	served := make(chan struct{})
	go func() {
		srv.Serve(ln)
		close(served)
	}()
	<-term
	ln.Close()
	<-served // it has counted every connection it accepted
	answered := make(chan struct{})
	go func() {
		open.Wait()
		close(answered)
	}()
	select {
	case <-answered:
	case <-time.After(5 * time.Second):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}
