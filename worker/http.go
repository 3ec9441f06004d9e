package worker

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DrainOptions tune how Serve drains a server.
type DrainOptions struct {
	// Grace is how long connections may stay open after draining starts,
	// so that each keep-alive client gets a response with Connection: close
	// to its next request instead of a connection closed under it. Default:
	// half of DrainTimeout, at least 100ms and at most 5s; 1s alone.
	Grace time.Duration
	// Timeout bounds the whole drain, after which remaining connections are
	// closed. Default: DrainTimeout less 10%, so that the worker exits
	// before the master kills it; 10s alone.
	Timeout time.Duration
}

func (o DrainOptions) withDefaults() DrainOptions {
	budget := DrainTimeout()
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
		if budget > 0 {
			o.Timeout = budget - budget/10
		}
	}
	if o.Grace <= 0 {
		o.Grace = time.Second
		if budget > 0 {
			o.Grace = min(max(budget/2, 100*time.Millisecond), 5*time.Second)
		}
	}
	o.Grace = min(o.Grace, o.Timeout)
	return o
}

// Serve serves srv on ln until the worker is told to disconnect (see
// Disconnected), then drains it without failing a client:
//
//  1. it stops accepting (other workers take new connections from the
//     shared socket);
//  2. for the grace period, every response carries Connection: close, so
//     that each keep-alive client leaves after its next request, and the
//     drain ends early once every connection has closed;
//  3. then http.Server.Shutdown closes idle connections and waits for
//     requests in flight, up to the drain timeout.
//
// Closing idle keep-alive connections at once, as Shutdown alone does,
// races clients that are about to send on them. Serve returns nil after a
// clean drain.
func Serve(srv *http.Server, ln net.Listener) error {
	return ServeDrain(srv, ln, DrainOptions{})
}

// ServeDrain is Serve with explicit drain options.
func ServeDrain(srv *http.Server, ln net.Listener, opts DrainOptions) error {
	opts = opts.withDefaults()
	d := &drainer{}
	d.wrap(srv)
	// Catch SIGTERM before the first connection is accepted: from then on
	// the signal must drain, not kill what is in flight.
	leave := Disconnected()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return err
	case <-leave:
	}
	d.draining.Store(true)
	ln.Close()
	<-serveErr // Serve returns once the listener is closed

	deadline := time.Now().Add(opts.Timeout)
	graceOver := time.NewTimer(opts.Grace)
	defer graceOver.Stop()
	select {
	case <-graceOver.C:
	case <-d.allClosed():
	}
	// A connection that never sent a request (a browser's or a load
	// balancer's spare) would hold Shutdown for seconds; none of its
	// requests can be lost, so close it now.
	d.closeUnused()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	err := srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		srv.Close()
	}
	return err
}

// ListenAndServe listens on srv.Addr (":http" when empty) through Listen
// and calls Serve.
func ListenAndServe(srv *http.Server) error {
	addr := srv.Addr
	if addr == "" {
		addr = ":http"
	}
	ln, err := Listen("tcp", addr)
	if err != nil {
		return err
	}
	return Serve(srv, ln)
}

// drainer counts open connections and marks responses once draining.
type drainer struct {
	draining atomic.Bool

	// The request path touches only atomics and a sync.Map read: conns
	// changes when a connection opens or closes, not on every request.
	open  atomic.Int64
	conns sync.Map // net.Conn -> *atomic.Bool: has it sent a request?

	mu     sync.Mutex
	notify chan struct{} // closed when open drops to zero
}

// closeUnused closes the connections that never sent a request.
func (d *drainer) closeUnused() {
	d.conns.Range(func(key, used any) bool {
		if !used.(*atomic.Bool).Load() {
			key.(net.Conn).Close()
		}
		return true
	})
}

func (d *drainer) wrap(srv *http.Server) {
	next := srv.Handler
	if next == nil {
		next = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			// net/http closes the connection after a response that says so.
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(closeOnDrain{w, d}, r)
	})
	userState := srv.ConnState
	srv.ConnState = func(c net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			d.open.Add(1)
			d.conns.Store(c, new(atomic.Bool))
		case http.StateActive:
			if used, ok := d.conns.Load(c); ok && !used.(*atomic.Bool).Load() {
				used.(*atomic.Bool).Store(true)
			}
		case http.StateClosed, http.StateHijacked:
			if _, ok := d.conns.LoadAndDelete(c); ok && d.open.Add(-1) == 0 {
				d.mu.Lock()
				if d.notify != nil {
					close(d.notify)
					d.notify = nil
				}
				d.mu.Unlock()
			}
		}
		if userState != nil {
			userState(c, state)
		}
	}
}

func (d *drainer) allClosed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch := make(chan struct{})
	if d.open.Load() == 0 {
		close(ch)
	} else {
		d.notify = ch
	}
	return ch
}

// closeOnDrain also marks responses whose handler started before the drain
// and writes its header after it.
type closeOnDrain struct {
	http.ResponseWriter
	d *drainer
}

func (c closeOnDrain) mark() {
	if c.d.draining.Load() {
		c.Header().Set("Connection", "close")
	}
}

func (c closeOnDrain) WriteHeader(code int) {
	c.mark()
	c.ResponseWriter.WriteHeader(code)
}

func (c closeOnDrain) Write(b []byte) (int, error) {
	c.mark()
	return c.ResponseWriter.Write(b)
}

func (c closeOnDrain) Flush() {
	c.mark()
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack keeps WebSocket and other upgrades working through the wrapper.
func (c closeOnDrain) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := c.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("worker: the underlying ResponseWriter cannot hijack")
}

// ReadFrom keeps sendfile for files served through the wrapper.
func (c closeOnDrain) ReadFrom(r io.Reader) (int64, error) {
	c.mark()
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.ResponseWriter, r)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (c closeOnDrain) Unwrap() http.ResponseWriter { return c.ResponseWriter }
