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
	// DisableHandoff keeps idle keep-alive connections in this worker
	// through the drain (Connection: close, grace, close) instead of
	// handing them to a worker of the new generation.
	DisableHandoff bool
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
//  2. when ln came from Listen and the master says a worker of a newer
//     generation takes them, every plain HTTP/1.1 connection is handed to
//     that worker at its next idle point, between two requests, so that
//     its client never sees the reload (handoffconn.go has the race
//     analysis); TLS, HTTP/2 and hijacked connections go on below;
//  3. for the grace period, every other response carries Connection:
//     close, so that each keep-alive client leaves after its next request,
//     and the drain ends early once every connection has closed;
//  4. then http.Server.Shutdown closes idle connections and waits for
//     requests in flight, up to the drain timeout.
//
// Closing idle keep-alive connections at once, as Shutdown alone does,
// races clients that are about to send on them. Serve returns nil after a
// clean drain. When srv.TLSConfig has a certificate, Serve serves HTTPS
// (and HTTP/2 over it, as net/http does) with the same drain.
func Serve(srv *http.Server, ln net.Listener) error {
	return ServeDrain(srv, ln, DrainOptions{})
}

// ServeDrain is Serve with explicit drain options.
func ServeDrain(srv *http.Server, ln net.Listener, opts DrainOptions) error {
	opts = opts.withDefaults()
	d := &drainer{changed: make(chan struct{}, 1)}
	if hl, ok := ln.(*handoffListener); ok && !opts.DisableHandoff {
		d.key = hl.key
		ln = handoffAccepter{ln, d}
	}
	d.wrap(srv)
	// Catch SIGTERM before the first connection is accepted: from then on
	// the signal must drain, not kill what is in flight.
	leave := Disconnected()
	serveErr := make(chan error, 1)
	go func() { serveErr <- serve(srv, ln) }()
	select {
	case err := <-serveErr:
		return err
	case <-leave:
	}
	handoff := d.key != (handoffKey{}) && handoffAllowed()
	d.keepAlive.Store(handoff)
	d.handingOff.Store(handoff)
	d.draining.Store(true)
	ln.Close()
	<-serveErr // Serve returns once the listener is closed

	deadline := time.Now().Add(opts.Timeout)
	graceOver := time.NewTimer(opts.Grace)
	defer graceOver.Stop()
	if handoff {
		d.handOver(deadline.Add(-opts.Grace))
	}
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

// serve serves HTTPS when srv.TLSConfig has a certificate, else HTTP. TLS
// goes on top of ln, so that the drain sees each TLS connection and counts
// it as one that cannot be handed over (its keys live in this process).
func serve(srv *http.Server, ln net.Listener) error {
	if c := srv.TLSConfig; c != nil && (len(c.Certificates) > 0 || c.GetCertificate != nil || c.GetConfigForClient != nil) {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
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

	// Handoff (handoff.go, handoffconn.go): key names the master's socket;
	// handingOff makes idle connections go to the master; keepAlive spares
	// the connections that may still go from Connection: close.
	key        handoffKey
	handingOff atomic.Bool
	keepAlive  atomic.Bool
	changed    chan struct{} // a connection closed or changed state while draining
	hijacked   atomic.Int64  // hijacked connections not closed yet

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
	if d.key != (handoffKey{}) {
		userContext := srv.ConnContext
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			if userContext != nil {
				ctx = userContext(ctx, c)
			}
			return context.WithValue(ctx, connKey{}, c)
		}
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cd := closeOnDrain{w, d, r}
		cd.mark()
		next.ServeHTTP(cd, r)
	})
	userState := srv.ConnState
	srv.ConnState = func(c net.Conn, state http.ConnState) {
		if hc, ok := c.(*handoffConn); ok {
			hc.setState(state)
		}
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
		if d.draining.Load() {
			select {
			case d.changed <- struct{}{}:
			default:
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

// connKey finds a request's connection in its context.
type connKey struct{}

// closes reports whether a response on r's connection must carry
// Connection: close: when draining, unless the connection is to be handed
// over at its next idle point.
func (d *drainer) closes(r *http.Request) bool {
	if !d.draining.Load() {
		return false
	}
	if d.keepAlive.Load() {
		if hc, ok := r.Context().Value(connKey{}).(*handoffConn); ok && hc.candidate() {
			return false
		}
	}
	return true
}

// closeOnDrain marks responses with Connection: close while draining,
// including those whose handler started before the drain and writes its
// header after it. net/http closes the connection after such a response.
type closeOnDrain struct {
	http.ResponseWriter
	d *drainer
	r *http.Request
}

func (c closeOnDrain) mark() {
	if c.d.closes(c.r) {
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
