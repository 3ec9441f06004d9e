// Command plain is the ceiling of the compare benchmark: the handler of
// examples/hello (a tiny response with an X-Worker-Id header) served by a
// plain net/http server that binds its own socket with SO_REUSEPORT. N copies
// started on the same address share the port with no manager at all: the
// kernel spreads new connections across their accept queues.
//
//	plain -addr 127.0.0.1:8080 -id 0 &
//	plain -addr 127.0.0.1:8080 -id 1 &
//
// It runs until SIGTERM or SIGINT, then shuts down gracefully.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on (bound with SO_REUSEPORT)")
	id := flag.Int("id", 0, "the X-Worker-Id this copy reports")
	flag.Parse()

	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}

	wid := strconv.Itoa(*id)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Id", wid)
		// The same body as examples/hello; a process alone is generation 0.
		fmt.Fprintf(w, "hello from worker %s (pid %d, generation %d)\n", wid, os.Getpid(), 0)
	})
	srv := &http.Server{Handler: mux}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
