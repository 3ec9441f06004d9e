// Package recluster runs N worker processes of a server behind listening
// sockets that the master owns, replaces workers that die, and swaps the
// whole set for new code without failing a request.
//
// It is the Go successor of the Node.js library recluster: worker slots with
// a zero-based WORKER_ID, readiness modes ([Listening], [Started], [Ready]),
// a disconnect message to old workers, a kill timeout ([Options.Timeout])
// and respawn pacing with exponential backoff ([Options.Respawn],
// [Options.Backoff]). Worker programs written in Go use package
// [github.com/recluster-go/recluster/worker]; any other program can speak
// the protocol in docs/protocol.md, or run under the recluster command.
//
// [New] makes a [Cluster] of a program and [Options]; [Cluster.Run] starts
// it, [Cluster.Reload] swaps every worker for a new one without failing a
// request, [Cluster.Restart] does that for one slot, [Cluster.Scale]
// changes the number of slots and [Cluster.Terminate] stops it.
// [Cluster.Status] is a snapshot, and [Options.OnEvent] receives every
// lifecycle [Event].
//
// One goroutine (the supervisor) owns all of a Cluster's state; the methods
// send it requests and wait for its answers, so they are safe to call from
// any goroutine.
package recluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/asynclog"
)

// ReadyWhen says when a new worker counts as ready to replace an old one.
type ReadyWhen string

const (
	// Listening (the default): the worker has obtained a listener from the
	// master (worker.Listen). With Options.Sockets, whose listeners every
	// worker inherits, it is met when the worker says it listens (package
	// worker does) or has run for Options.MinUptime.
	Listening ReadyWhen = "listening"
	// Started: the process is running.
	Started ReadyWhen = "started"
	// Ready: the worker says so, with worker.Ready (the channel message
	// {"cmd":"ready"}) or sd_notify READY=1 when Options.Notify is set.
	Ready ReadyWhen = "ready"
)

// Options configure a Cluster. The zero value of each field means its
// default.
type Options struct {
	// Workers is the number of slots; default runtime.NumCPU().
	Workers int
	// Timeout is how long a worker may drain after it is told to disconnect
	// before it is killed. Default 1s, or 1h when RECLUSTER_ENV=production
	// (as in the Node.js recluster). A negative value
	// kills at once.
	Timeout time.Duration
	// Respawn is the minimum gap between respawns of dead workers, cluster
	// wide; default 1s.
	Respawn time.Duration
	// Backoff caps the exponential backoff of Respawn: each crash doubles
	// the gap up to Backoff, and each quiet Backoff period halves it again.
	// Zero disables the backoff.
	Backoff time.Duration
	// ReadyWhen says when a new worker is ready; default Listening.
	ReadyWhen ReadyWhen
	// MinUptime applies to ReadyWhen=Listening with Sockets: the master
	// cannot see a program start accepting on a socket it inherited, so a
	// worker that does not say so (package worker does, with a "listening"
	// message) counts as listening once it has run this long. A program
	// that dies at start-up then aborts its reload instead of replacing the
	// old generation. Default 1s; negative means at once.
	MinUptime time.Duration
	// ReadyTimeout is how long a new worker may take to become ready before
	// it is killed (and a reload that waits for it aborted), counted from
	// the start of its process; default 30s.
	ReadyTimeout time.Duration

	// Args are the worker program's arguments (without argv[0]).
	Args []string
	// Env holds KEY=VALUE pairs added to the master's own environment for
	// the workers; a key given here overrides the inherited one.
	Env []string
	// Dir is the workers' working directory; default the master's.
	Dir string

	// Logger receives the cluster's log, on the supervisor's goroutine: a
	// handler that blocks stalls the cluster. Default slog.Default(),
	// through a bounded queue that drops (and counts) lines rather than
	// wait for a stuck stderr.
	Logger *slog.Logger
	// DisableRespawnLog silences the log line for each respawn (the Node.js recluster's
	// log.respawns, on by default).
	DisableRespawnLog bool
	// OnEvent, when set, is called for every lifecycle event, in order, from
	// a goroutine of its own: it may call the Cluster's methods. A handler
	// that falls thousands of events behind misses the newest ones rather
	// than stall the cluster: an EventMissed in their place says how many.
	OnEvent func(Event)
	// OnEventSync, when set, is called for every lifecycle event as it
	// happens, on the supervisor's own goroutine, before OnEvent: it never
	// misses one, so it is where counters belong (metrics.Metrics.Observe).
	// It must return at once and must not call the Cluster's methods,
	// which would wait for the goroutine it runs on.
	OnEventSync func(Event)

	// StopSignal, when set, is sent to a worker together with the disconnect
	// message, for programs that do not read the channel (SIGTERM is the
	// usual choice). Zero sends the message only, as the Node.js recluster does.
	StopSignal syscall.Signal
	// Stdout and Stderr receive the workers' output; nil means the master's
	// own stdout and stderr, passed straight through unless OutputFormat
	// is set.
	Stdout, Stderr io.Writer
	// OutputFormat, when set, makes the master read the workers' output
	// and write it to Stdout and Stderr one whole line at a time, so that
	// the lines of different workers never mix, in that format; it keeps
	// the most recent lines for Output and FollowOutput. Lines longer than
	// MaxOutputLine are cut into marked pieces. A slow Stdout slows the
	// workers' writes, but one that takes nothing for a second has lines
	// dropped, counted and reported, rather than stall them.
	OutputFormat OutputFormat
	// PrefixOutput, with OutputFormat unset, means OutputLabelled.
	PrefixOutput bool
	// OutputHistoryLines and OutputHistoryBytes bound the recent output
	// lines the master keeps, when OutputFormat is set; defaults
	// DefaultOutputHistoryLines and DefaultOutputHistoryBytes.
	OutputHistoryLines, OutputHistoryBytes int

	// Sockets are bound by the master before any worker starts and passed to
	// every worker the systemd way: fds from 3, LISTEN_FDS, LISTEN_FDNAMES
	// and LISTEN_PID equal to the worker's own pid, which takes a start of
	// the master's own binary that then executes the program. Once a worker
	// says that it needs no LISTEN_PID (package
	// [github.com/recluster-go/recluster/worker] does), the next workers of
	// the same program file (and the same files its Args name, the script
	// of an interpreter) are executed directly, without LISTEN_PID; a
	// deploy that replaces one of them, or such a worker that fails before
	// it is ready, goes back to the first way until a worker of the new
	// files says so too (docs/protocol.md, section 3.1).
	Sockets []Socket
	// ReusePort gives each slot a TCP socket of its own, bound with
	// SO_REUSEPORT to the same address and inherited by every generation
	// of that slot, instead of one socket that all workers share. The
	// kernel then spreads connections evenly over the slots (one shared
	// socket favours the busiest worker), and a reload still closes no
	// accept queue. The cost: connections that the kernel assigned to a
	// slot wait while that slot has no worker (after a crash, until the
	// respawn), and scaling down drops what waits in the removed slots'
	// queues unless net.ipv4.tcp_migrate_req=1.
	ReusePort bool
	// Sticky sends every connection from one client IP address (an IPv6
	// client by its /64) to the same slot, chosen inside the kernel by a
	// classic BPF program on the slots' SO_REUSEPORT sockets: it implies
	// ReusePort, costs the master nothing per connection, moves no client
	// on a reload or a crash, and about 1/N of them when the slots change
	// by one. Linux only, TCP only, at most StickyBuckets slots, and not
	// with sockets inherited from systemd. Behind a proxy or NAT every
	// client has the proxy's address: see docs/operations.md.
	Sticky bool
	// Notify gives every worker its own NOTIFY_SOCKET, so that sd_notify
	// READY=1, STATUS=, STOPPING=1 and WATCHDOG=1 work as under systemd.
	Notify bool
	// ReapOrphans makes the master reap every child that ends, not only its
	// workers, as PID 1 in a container must.
	ReapOrphans bool

	// User and Group, when set, are the account the workers run as (a name
	// or a numeric id). The master must run as root: it binds the sockets,
	// privileged ports included, and only the workers drop privileges.
	User, Group string
	// HeartbeatTimeout, when set, replaces a worker that has sent no
	// heartbeat (the channel's heartbeat message or sd_notify WATCHDOG=1)
	// for that long, as a crashed one is: the process is killed and its
	// slot respawned. Workers built with package worker send heartbeats by
	// themselves; other programs must send them.
	HeartbeatTimeout time.Duration
	// MaxRSS, when set, recycles a worker whose resident memory passes this
	// many bytes (Linux): a replacement starts in its slot and the old one
	// is told to disconnect once the new one is ready, so no capacity is
	// lost.
	MaxRSS int64
	// DisableHandoff keeps every idle keep-alive connection in its draining
	// worker (Connection: close, grace, close) instead of handing it to a
	// worker of the new generation, which workers built with package
	// worker do by default (docs/protocol.md, "Connection handoff").
	DisableHandoff bool
	// MaxAge, when set, recycles a worker older than this the same way.
	// Each worker's limit is shortened by a random jitter of up to 10% so
	// that workers started together do not all recycle at once.
	MaxAge time.Duration
}

// Socket is a listening socket that the master owns for the life of the
// cluster and passes to every worker (see Options.Sockets).
type Socket struct {
	// Name is its LISTEN_FDNAMES entry; default "listen".
	Name string
	// Network is "tcp", "tcp4", "tcp6" or "unix"; default "tcp".
	Network string
	// Address is what to bind, as for net.Listen.
	Address string
	// FD, when > 0, is an inherited listening socket (from systemd) to use
	// instead of binding Address.
	FD int
}

// Self is the program path that makes the master re-execute its own binary:
// the program is its own worker (the Go form of Node's cluster.isMaster).
const Self = ""

// Cluster is a master of worker processes. Create it with New.
type Cluster struct {
	program string
	opts    Options
	log     *slog.Logger

	calls chan func(*supervisor)
	done  chan struct{} // closed when the supervisor has stopped
	start sync.Once     // starts the supervisor goroutine on first use
	sup   *supervisor   // touched only by the supervisor goroutine

	defaultLog *asynclog.Handler // the queue behind the default Logger, if used
	relay      *outputRelay      // reads the workers' output; nil when it passes straight through
}

// Errors that Reload and Terminate return.
var (
	// ErrSuperseded: a newer reload replaced this one before it finished.
	ErrSuperseded = errors.New("recluster: reload superseded by a newer reload")
	// ErrNotRunning: the cluster was not started, or it has been terminated.
	ErrNotRunning = errors.New("recluster: cluster is not running")
)

// New returns a cluster that will run program (an absolute path, or Self)
// with opts. Nothing starts until Run.
func New(program string, opts Options) *Cluster {
	if program == Self {
		program = selfExecutable()
		if opts.Args == nil && len(os.Args) > 1 {
			opts.Args = os.Args[1:]
		}
	}
	var defaultLog *asynclog.Handler
	if opts.Logger == nil {
		opts.Logger, defaultLog = newDefaultLogger()
	}
	opts = withDefaults(opts)
	c := &Cluster{
		defaultLog: defaultLog,
		program:    program,
		opts:       opts,
		log:        opts.Logger,
		calls:      make(chan func(*supervisor)),
		done:       make(chan struct{}),
		relay:      newOutputRelay(opts),
	}
	c.sup = newSupervisor(c, newOSSystem(program, opts, c.relay))
	return c
}

func selfExecutable() string {
	// Resolve once, now: after a deploy replaces the binary on disk,
	// /proc/self/exe names the deleted file.
	exe, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		return resolved
	}
	return exe
}

// defaultTimeout follows the Node.js recluster: short in development, long in production.
func defaultTimeout() time.Duration {
	if os.Getenv("RECLUSTER_ENV") == "production" {
		return time.Hour
	}
	return time.Second
}

func withDefaults(o Options) Options {
	if o.Workers <= 0 {
		o.Workers = runtime.NumCPU()
	}
	if o.Timeout == 0 {
		o.Timeout = defaultTimeout()
	}
	if o.Respawn <= 0 {
		o.Respawn = time.Second
	}
	if o.ReadyWhen == "" {
		o.ReadyWhen = Listening
	}
	if o.MinUptime == 0 {
		o.MinUptime = time.Second
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	for i := range o.Sockets {
		if o.Sockets[i].Network == "" {
			o.Sockets[i].Network = "tcp"
		}
		if o.Sockets[i].Name == "" {
			o.Sockets[i].Name = "listen"
		}
	}
	return o
}

// Validate reports the first option or program problem, in words that name
// the fix. Run calls it; a CLI may call it earlier.
func (c *Cluster) Validate() error {
	o := c.opts
	if o.Workers > MaxWorkers {
		return fmt.Errorf("recluster: Workers %d is more than the %d a cluster may have", o.Workers, MaxWorkers)
	}
	switch o.ReadyWhen {
	case Listening, Started, Ready:
	default:
		return fmt.Errorf("recluster: ReadyWhen %q is not one of listening, started, ready", o.ReadyWhen)
	}
	if o.Backoff < 0 {
		return fmt.Errorf("recluster: Backoff %v is negative; use 0 to disable the backoff", o.Backoff)
	}
	if o.Backoff > 0 && o.Backoff < o.Respawn {
		return fmt.Errorf("recluster: Backoff %v is below Respawn %v; the backoff caps the respawn gap, so make it at least Respawn", o.Backoff, o.Respawn)
	}
	for _, kv := range o.Env {
		if i := indexByte(kv, '='); i <= 0 {
			return fmt.Errorf("recluster: Env entry %q is not KEY=VALUE", kv)
		}
	}
	if o.Dir != "" {
		if st, err := os.Stat(o.Dir); err != nil || !st.IsDir() {
			return fmt.Errorf("recluster: working directory %q does not exist or is not a directory", o.Dir)
		}
	}
	for _, s := range o.Sockets {
		if s.FD <= 0 && s.Address == "" {
			return fmt.Errorf("recluster: socket %q has no address; give NAME=ADDR such as http=127.0.0.1:8080", s.Name)
		}
	}
	if _, err := resolveCredential(o.User, o.Group); err != nil {
		return err
	}
	if err := validateSticky(o); err != nil {
		return err
	}
	if o.HeartbeatTimeout < 0 || o.MaxAge < 0 || o.MaxRSS < 0 {
		return errors.New("recluster: HeartbeatTimeout, MaxAge and MaxRSS must not be negative; use 0 to turn them off")
	}
	return checkProgram(c.program, o.Dir)
}

func indexByte(s string, b byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return i
		}
	}
	return -1
}

// checkProgram turns the exec errors that would otherwise surface as a
// crash loop into one clear message before any worker starts.
func checkProgram(program, dir string) error {
	if program == "" {
		return errors.New("recluster: no worker program given")
	}
	st, err := os.Stat(programPath(program, dir))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("recluster: worker program %s does not exist; give the path of an executable file", program)
	case err != nil:
		return fmt.Errorf("recluster: worker program %s: %v", program, err)
	case st.IsDir():
		return fmt.Errorf("recluster: worker program %s is a directory; give the path of an executable file", program)
	case st.Mode()&0o111 == 0:
		return fmt.Errorf("recluster: worker program %s is not executable; run chmod +x %s", program, program)
	}
	return nil
}

// Run validates the options, binds Options.Sockets and starts one worker
// per slot. It returns once they are spawned, not when they are ready; a
// worker that fails later is respawned with the configured pacing.
func (c *Cluster) Run() error {
	if err := c.Validate(); err != nil {
		return err
	}
	result := make(chan error, 1)
	if !c.call(func(s *supervisor) { s.run(result) }) {
		return ErrNotRunning
	}
	if err := <-result; err != nil {
		<-c.done
		return err
	}
	return nil
}

// Reload starts a new generation of workers, waits until every one of them
// is ready, then tells the old generation to disconnect and kills what is
// left of it after Timeout. It returns nil once the new generation is
// active. If a new worker exits or misses ReadyTimeout, or ctx ends first,
// the reload is aborted: the new generation is stopped, the old one keeps
// serving, and the error names the slot and the cause. A Reload called while
// another is in progress supersedes it (that one returns ErrSuperseded).
// With WithProbation it also waits for the new generation to stay up; with
// WithProgress the caller follows each step.
func (c *Cluster) Reload(ctx context.Context, opts ...ReloadOption) error {
	var settings reloadSettings
	for _, o := range opts {
		o(&settings)
	}
	result := make(chan error, 1)
	var t *reloadTrack
	if !c.call(func(s *supervisor) { t = s.track(settings); s.startReload(result) }) {
		return ErrNotRunning
	}
	select {
	case err := <-result:
		if err != nil || t == nil {
			return err
		}
	case <-ctx.Done():
		c.call(func(s *supervisor) { s.abortReloadFor(result, fmt.Errorf("recluster: reload aborted: %w", ctx.Err())) })
		if err := <-result; err != nil {
			return err
		}
	}
	select {
	case err := <-t.verdict: // decided at the commit when there is no probation
		return err
	default:
	}
	select {
	case err := <-t.verdict:
		return err
	case <-ctx.Done():
		return fmt.Errorf("recluster: the reload committed, but its probation had not ended: %w", ctx.Err())
	}
}

// Terminate stops the cluster gracefully: no more respawns, every worker is
// told to disconnect, and what is left at ctx's deadline or after Timeout,
// whichever comes first, is killed. It returns once every worker has exited
// and the master's sockets are closed: nil, or ctx's error when workers
// were still there at ctx's end and had to be killed.
func (c *Cluster) Terminate(ctx context.Context) error {
	result := make(chan error, 1)
	if !c.call(func(s *supervisor) { s.terminate(result) }) {
		return nil // already terminated
	}
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		killed := 0
		c.call(func(s *supervisor) { killed = s.killAll("terminate deadline") })
		err := <-result
		if killed > 0 {
			return ctx.Err()
		}
		return err
	}
}

// MaxWorkers bounds the slots of one cluster, so that a typo such as
// "scale 100000" cannot fork-bomb the host.
const MaxWorkers = 4096

// Scale changes the number of slots. Growing starts workers in the new
// slots at once; shrinking tells the workers of the highest slots to
// disconnect.
func (c *Cluster) Scale(n int) error {
	_, err := c.scaleWith(func(int) int { return n })
	return err
}

// ScaleBy adds delta slots (or removes them, when negative) and returns the
// new number of slots. The change is applied to the number in force when
// the supervisor handles it, so concurrent calls add up.
func (c *Cluster) ScaleBy(delta int) (int, error) {
	return c.scaleWith(func(slots int) int {
		if delta > MaxWorkers || delta < -MaxWorkers {
			return MaxWorkers + 1 // refused below, without overflow
		}
		return slots + delta
	})
}

func (c *Cluster) scaleWith(target func(slots int) int) (int, error) {
	var n int
	var err error
	ok := c.call(func(s *supervisor) {
		n = target(s.slots)
		switch {
		case n < 1:
			err = fmt.Errorf("recluster: cannot scale to %d workers; the minimum is 1 (use stop to end the cluster)", n)
		case n > MaxWorkers:
			err = fmt.Errorf("recluster: cannot scale to %d workers; the maximum is %d", n, MaxWorkers)
		default:
			err = s.scale(n)
		}
	})
	if !ok {
		return 0, ErrNotRunning
	}
	return n, err
}

// ActiveWorkers returns, for each slot, the ready worker that serves it; a
// slot with none is missing from the map.
func (c *Cluster) ActiveWorkers() map[int]*Worker {
	m := map[int]*Worker{}
	c.call(func(s *supervisor) {
		for w := range s.workers {
			if w.state == WorkerActive {
				m[w.slot] = w
			}
		}
	})
	return m
}

// Workers returns every live worker, ready or not, old or new, ordered by
// slot and then by generation.
func (c *Cluster) Workers() []*Worker {
	var ws []*Worker
	c.call(func(s *supervisor) { ws = s.sortedWorkers() })
	return ws
}

// Status returns a snapshot of the cluster for display and monitoring.
func (c *Cluster) Status() Status {
	st := Status{Phase: PhaseStopped}
	c.call(func(s *supervisor) { st = s.status() })
	// The processes' figures are read here, off the supervisor's loop,
	// which must not wait on /proc for every worker of a large cluster.
	pids := make([]int, len(st.Workers))
	for i, w := range st.Workers {
		pids[i] = w.PID
	}
	for i, u := range c.sup.sys.usage(pids) {
		st.Workers[i].RSSBytes, st.Workers[i].CPUSeconds = u.rssBytes, u.cpu.Seconds()
	}
	return st
}

// Options returns the options the cluster runs with, defaults filled in
// (a CLI tells its operator how long a drain may take from them).
func (c *Cluster) Options() Options { return c.opts }

// Done is closed once the cluster has been terminated (or failed to run).
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Addrs returns the addresses of the sockets the master holds, so that a
// program that asked for port 0 can learn the port.
func (c *Cluster) Addrs() []net.Addr {
	var addrs []net.Addr
	c.call(func(s *supervisor) { addrs = s.sockets.addrs() })
	return addrs
}

// call runs f on the supervisor goroutine and waits for it; it reports false
// when the supervisor has stopped.
func (c *Cluster) call(f func(*supervisor)) bool {
	c.start.Do(func() { go c.sup.loop() })
	finished := make(chan struct{})
	select {
	case c.calls <- func(s *supervisor) { f(s); close(finished) }:
		<-finished
		return true
	case <-c.done:
		return false
	}
}

// post hands f to the supervisor without waiting; goroutines that report
// events (exits, messages, timers) use it.
func (c *Cluster) post(f func(*supervisor)) {
	select {
	case c.calls <- f:
	case <-c.done:
	}
}
