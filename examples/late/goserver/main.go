// Command goserver is a Go HTTP server that knows nothing of recluster: it
// takes the socket systemd-style on fd 3 after LATE_MS (3 s by default)
// and shuts down on SIGTERM.
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
	go srv.Serve(ln)
	<-term
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}
