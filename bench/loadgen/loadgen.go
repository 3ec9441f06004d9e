// Package loadgen is the closed-loop HTTP/1.1 load generator used by the
// recluster benchmarks.
//
// Run starts Config.Clients concurrent clients. Each client sends one
// request, waits for the complete response (headers and body), records the
// outcome and only then sends its next request. The run is bounded by a
// duration, a total request count and/or a number of reloads, and always
// stops by itself.
//
// The request path deliberately does not use net/http's Transport or Client:
// the Transport silently replays failed idempotent requests on reused
// connections, which would hide exactly the failures a zero-downtime reload
// benchmark is looking for. Instead each client writes the request bytes to
// a net.Conn itself and reads the response with http.ReadResponse. A request
// is never retried: every attempt is counted once, as a success or as a
// failure of one Kind.
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mode selects how clients use connections.
type Mode string

const (
	// ModeNew opens a new TCP connection for every request and sends
	// "Connection: close".
	ModeNew Mode = "new"
	// ModeKeepAlive keeps one persistent connection per client and reuses
	// it. When the server answers with "Connection: close" (or otherwise
	// ends the connection after a complete response, such as an HTTP/1.0
	// reply or a body delimited by end of stream) or is seen to have closed
	// the idle connection before the next request is sent, the client opens
	// a new connection for its next request; that is counted in
	// Result.Reconnects, not as a failure. A connection that closes while
	// or after the next request is sent is a failure (KindEOF or KindReset).
	ModeKeepAlive Mode = "keepalive"
)

// Default values used for zero fields of Config.
const (
	// DefaultTimeout is the default per-request deadline.
	DefaultTimeout = 5 * time.Second
	// DefaultTail is the default time the load keeps running after the
	// last configured reload has completed.
	DefaultTail = time.Second
	// DefaultMaxExamples is the default number of example errors kept per
	// failure kind.
	DefaultMaxExamples = 3
)

// Config describes a load run. The zero value of a field means its default
// where one is documented.
type Config struct {
	// Addr is the server's TCP address, host:port. Required.
	Addr string
	// Host is the Host header; default Addr.
	Host string
	// Method is the request method; default GET (POST when Body is set).
	Method string
	// Path is the request target; default "/".
	Path string
	// Body is sent with every request, with a Content-Length header. Keep
	// it small: it is written in one piece per request.
	Body []byte
	// Header holds extra request headers. Host, Content-Length,
	// Transfer-Encoding and Connection are managed by the load generator
	// and must not be set here. A Content-Type here replaces the default
	// application/octet-stream used when Body is set.
	Header http.Header

	// Mode is ModeNew or ModeKeepAlive; default ModeKeepAlive.
	Mode Mode
	// Clients is the number of concurrent closed-loop clients; default 1.
	Clients int
	// Duration bounds the run: after it no new request is started.
	// Requests still in flight complete (each is bounded by Timeout).
	Duration time.Duration
	// Requests bounds the total number of requests started by all
	// clients together.
	Requests int64
	// Timeout is the deadline of one request: dialing (when a connection
	// is needed), writing the request and reading the whole response.
	// Default DefaultTimeout.
	Timeout time.Duration

	// Reload, when set, is called every ReloadEvery while the load runs,
	// sequentially: the first call starts ReloadEvery after the load
	// starts, and each next one ReloadEvery after the previous call
	// returned. Its context is canceled when the load stops (or after
	// ReloadTimeout), so a reload still running at the end of the run is
	// told to give up. Each call's start, duration and error are recorded
	// in Result.Reloads.
	Reload func(ctx context.Context) error
	// ReloadEvery is the pause before each reload; required with Reload.
	ReloadEvery time.Duration
	// Reloads, when positive, is the number of reloads to run; after the
	// last one returns the load continues for Tail and then stops. Zero
	// means reload until another bound ends the run.
	Reloads int
	// ReloadTimeout, when positive, bounds each Reload call through its
	// context.
	ReloadTimeout time.Duration
	// Tail is how long the load continues after the last of Reloads
	// reloads; default DefaultTail, negative for none.
	Tail time.Duration

	// MaxExamples is the number of example error strings kept per failure
	// kind; default DefaultMaxExamples, negative for none.
	MaxExamples int
}

// ErrNoBound is returned by Run when a Config has no Duration, no Requests
// and no Reloads: such a run would never stop by itself.
var ErrNoBound = errors.New("loadgen: no bound: set Duration, Requests or Reloads")

// normalize returns cfg with defaults filled in, or an error if cfg is
// invalid.
func (cfg Config) normalize() (Config, error) {
	if cfg.Addr == "" {
		return cfg, errors.New("loadgen: Addr is required")
	}
	if cfg.Host == "" {
		cfg.Host = cfg.Addr
	}
	if cfg.Method == "" {
		cfg.Method = http.MethodGet
		if len(cfg.Body) > 0 {
			cfg.Method = http.MethodPost
		}
	}
	if !validToken(cfg.Method) {
		return cfg, fmt.Errorf("loadgen: invalid method %q", cfg.Method)
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if strings.ContainsAny(cfg.Path, " \r\n") {
		return cfg, fmt.Errorf("loadgen: invalid path %q", cfg.Path)
	}
	if strings.ContainsAny(cfg.Host, " \r\n") {
		return cfg, fmt.Errorf("loadgen: invalid host %q", cfg.Host)
	}
	for k, vs := range cfg.Header {
		if !validToken(k) {
			return cfg, fmt.Errorf("loadgen: invalid header name %q", k)
		}
		switch http.CanonicalHeaderKey(k) {
		case "Host", "Content-Length", "Connection", "Transfer-Encoding":
			return cfg, fmt.Errorf("loadgen: header %s is managed by the load generator", k)
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				return cfg, fmt.Errorf("loadgen: invalid value for header %s", k)
			}
		}
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeKeepAlive
	case ModeNew, ModeKeepAlive:
	default:
		return cfg, fmt.Errorf("loadgen: unknown mode %q (want %q or %q)", cfg.Mode, ModeNew, ModeKeepAlive)
	}
	if cfg.Clients == 0 {
		cfg.Clients = 1
	}
	if cfg.Clients < 0 {
		return cfg, errors.New("loadgen: negative Clients")
	}
	if cfg.Duration < 0 || cfg.Requests < 0 || cfg.Reloads < 0 {
		return cfg, errors.New("loadgen: negative Duration, Requests or Reloads")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Timeout < 0 {
		return cfg, errors.New("loadgen: negative Timeout")
	}
	if cfg.Reload != nil && cfg.ReloadEvery <= 0 {
		return cfg, errors.New("loadgen: Reload needs a positive ReloadEvery")
	}
	if cfg.Reload == nil && cfg.Reloads > 0 {
		return cfg, errors.New("loadgen: Reloads set without a Reload hook")
	}
	if cfg.Tail == 0 {
		cfg.Tail = DefaultTail
	}
	if cfg.Tail < 0 {
		cfg.Tail = 0
	}
	if cfg.MaxExamples == 0 {
		cfg.MaxExamples = DefaultMaxExamples
	}
	if cfg.MaxExamples < 0 {
		cfg.MaxExamples = 0
	}
	if cfg.Duration == 0 && cfg.Requests == 0 && (cfg.Reload == nil || cfg.Reloads == 0) {
		return cfg, ErrNoBound
	}
	return cfg, nil
}

// validToken reports whether s is a non-empty HTTP token (RFC 9110).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// buildRequest returns the bytes of one request, written as-is for every
// request of the run.
func buildRequest(cfg Config) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", cfg.Method, cfg.Path, cfg.Host)
	if cfg.Header.Get("User-Agent") == "" {
		b.WriteString("User-Agent: recluster-loadgen\r\n")
	}
	if cfg.Mode == ModeNew {
		b.WriteString("Connection: close\r\n")
	}
	keys := make([]string, 0, len(cfg.Header))
	for k := range cfg.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range cfg.Header[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", http.CanonicalHeaderKey(k), v)
		}
	}
	switch {
	case len(cfg.Body) > 0:
		if cfg.Header.Get("Content-Type") == "" {
			b.WriteString("Content-Type: application/octet-stream\r\n")
		}
		b.WriteString("Content-Length: " + strconv.Itoa(len(cfg.Body)) + "\r\n")
	case cfg.Method == http.MethodPost || cfg.Method == http.MethodPut || cfg.Method == http.MethodPatch:
		b.WriteString("Content-Length: 0\r\n")
	}
	b.WriteString("\r\n")
	b.Write(cfg.Body)
	return b.Bytes()
}

// Stop reasons reported in Result.StopReason.
const (
	// StopDuration: Config.Duration elapsed.
	StopDuration = "duration"
	// StopRequests: Config.Requests requests were started.
	StopRequests = "requests"
	// StopReloads: Config.Reloads reloads completed and Config.Tail
	// elapsed.
	StopReloads = "reloads"
	// StopCanceled: the context passed to Run was canceled.
	StopCanceled = "canceled"
)

// runner is the state of one Run.
type runner struct {
	cfg     Config
	req     []byte        // request bytes
	reqMeta *http.Request // for http.ReadResponse (method only)
	start   time.Time
	ctx     context.Context // the caller's context: cancel aborts requests

	stopped    atomic.Bool
	stopOnce   sync.Once
	stopCh     chan struct{}
	stopReason string // written once under stopOnce, read after the run

	issued atomic.Int64 // requests started, for Config.Requests

	shards []*shard

	reloadMu sync.Mutex
	reloads  []ReloadResult
}

// stop ends the load: no client starts a new request afterwards. The first
// reason given is the one reported.
func (r *runner) stop(reason string) {
	r.stopOnce.Do(func() {
		r.stopReason = reason
		r.stopped.Store(true)
		close(r.stopCh)
	})
}

// Run generates load as configured by cfg and returns the results once
// every client has finished. It returns an error only for an invalid
// Config; failures of requests and reloads are reported in the Result.
//
// Canceling ctx stops the run early: requests in flight are aborted and
// counted in Result.Aborted rather than as failures, and the partial
// Result is returned.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	meta, err := http.NewRequest(cfg.Method, "http://"+cfg.Addr+"/", nil)
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	r := &runner{
		cfg:     cfg,
		req:     buildRequest(cfg),
		reqMeta: meta,
		ctx:     ctx,
		stopCh:  make(chan struct{}),
	}
	nshards := min(cfg.Clients, max(8, 4*runtime.GOMAXPROCS(0)))
	r.shards = make([]*shard, nshards)
	for i := range r.shards {
		r.shards[i] = newShard(cfg.MaxExamples)
	}

	r.start = time.Now()
	if ctx.Err() != nil {
		r.stop(StopCanceled)
	}
	stopCancel := context.AfterFunc(ctx, func() { r.stop(StopCanceled) })
	defer stopCancel()
	if cfg.Duration > 0 {
		t := time.AfterFunc(cfg.Duration, func() { r.stop(StopDuration) })
		defer t.Stop()
	}

	reloadCtx, cancelReloads := context.WithCancel(ctx)
	defer cancelReloads()
	var reloadWG sync.WaitGroup
	if cfg.Reload != nil {
		reloadWG.Go(func() { r.reloadLoop(reloadCtx) })
	}

	var clients sync.WaitGroup
	for i := range cfg.Clients {
		c := &client{r: r, sh: r.shards[i%nshards]}
		clients.Go(c.run)
	}
	clients.Wait()
	elapsed := time.Since(r.start)
	// Clients only return once the run is stopped (for example because
	// Requests ran out before the reloads did), so the stop reason is set.
	// Tell a reload still running to give up and wait for it.
	cancelReloads()
	reloadWG.Wait()

	return r.result(elapsed), nil
}

// reloadLoop calls cfg.Reload as configured until the load stops.
func (r *runner) reloadLoop(ctx context.Context) {
	cfg := r.cfg
	for i := 0; cfg.Reloads == 0 || i < cfg.Reloads; i++ {
		if !r.waitOrStop(cfg.ReloadEvery) {
			return
		}
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if cfg.ReloadTimeout > 0 {
			rctx, cancel = context.WithTimeout(ctx, cfg.ReloadTimeout)
		}
		begin := time.Now()
		err := cfg.Reload(rctx)
		end := time.Now()
		cancel()
		rr := ReloadResult{Index: i + 1, At: begin.Sub(r.start), Duration: end.Sub(begin)}
		if err != nil {
			rr.Error = err.Error()
		}
		r.reloadMu.Lock()
		r.reloads = append(r.reloads, rr)
		r.reloadMu.Unlock()
	}
	if r.waitOrStop(cfg.Tail) {
		r.stop(StopReloads)
	}
}

// waitOrStop waits for d and reports true, or reports false as soon as the
// load stops.
func (r *runner) waitOrStop(d time.Duration) bool {
	if r.stopped.Load() {
		return false
	}
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !r.stopped.Load()
	case <-r.stopCh:
		return false
	}
}

// take reports whether a client may start another request, claiming one
// from the Requests budget if there is one.
func (r *runner) take() bool {
	if r.stopped.Load() {
		return false
	}
	if r.ctx.Err() != nil {
		// The AfterFunc that stops the run may not have run yet.
		r.stop(StopCanceled)
		return false
	}
	if r.cfg.Requests > 0 && r.issued.Add(1) > r.cfg.Requests {
		r.stop(StopRequests)
		return false
	}
	return true
}
