package control

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/lossy"
)

// requestTimeout bounds how long a client may take to send its request.
// The recluster commands send it as soon as they are connected; a
// connection that stays idle longer only holds a place an operator may
// need.
const requestTimeout = 2 * time.Second

// maxPending bounds the connections that have not sent their request yet,
// so that idle clients cannot use up the master's descriptors. When it is
// reached, a new caller takes the place of the newest idle connection.
const maxPending = 64

// sampleWindow is how long a status request with Sample measures CPU use.
const sampleWindow = 200 * time.Millisecond

// Listen creates the control socket at path with mode 0600. A socket left
// behind by a master that is gone is removed first; a socket that a live
// master answers on is an error, as is a path that is not a socket.
func Listen(path string) (*net.UnixListener, error) {
	if path == "" {
		return nil, errors.New("control socket: empty path")
	}
	if len(path) > 107 {
		return nil, fmt.Errorf("control socket path %q is longer than the 107 bytes a Unix socket address holds; choose a shorter --control", path)
	}
	if filepath.Dir(path) == privateDir() {
		if err := makePrivateDir(privateDir()); err != nil {
			return nil, err
		}
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("control socket %s: directory %s does not exist", path, filepath.Dir(path))
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control socket %s: the path exists and is not a socket; remove it or choose another path with --control", path)
		}
		conn, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			conn.Close()
			return nil, fmt.Errorf("control socket %s is in use by another running recluster master; stop it, or give this cluster a socket of its own with --control", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("control socket %s: %w", path, err)
		}
		// Left behind by a master that is gone.
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: cannot remove the stale socket: %w", path, err)
		}
	}
	// Created with mode 0600 by the umask, not by a chmod afterwards,
	// which would follow a symlink swapped in at the path.
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}

// Server answers control requests for one cluster.
type Server struct {
	// Cluster is the cluster it operates.
	Cluster *recluster.Cluster
	// Program is shown in status answers.
	Program string
	// Stop asks the command to stop the cluster gracefully; it must not
	// block. The server then waits for Cluster.Done before it answers.
	Stop func()
	// Reopen reopens the master's log file (CmdReopenLogs); nil: the
	// master has none.
	Reopen func() error
	// Logger receives refused connections and bad requests; default
	// slog.Default().
	Logger *slog.Logger
	// Upgrade, when set, upgrades the master in place, keeping the
	// listener and the client's connection conn open for the new master,
	// which sends the final answer. It returns only if the upgrade was
	// refused or failed.
	Upgrade func(ln net.Listener, conn net.Conn, progress func(string)) error

	// Zero means requestTimeout and maxPending; tests make them longer
	// or smaller.
	requestTimeout time.Duration
	maxPending     int

	mu      sync.Mutex
	ln      net.Listener
	conns   map[net.Conn]bool
	pending []*pendingConn // connections that have not sent their request yet, oldest first
	closed  bool
	wg      sync.WaitGroup
}

// Serve accepts connections on ln until Close. It always returns a non-nil
// error; after Close, net.ErrClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.ln = ln
	s.conns = map[net.Conn]bool{}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors, or another passing failure: the control
			// socket must outlive it, as net/http's servers do.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logger().Warn("recluster: control socket: accept failed; retrying", "error", err, "in", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return net.ErrClosed
		}
		pc := &pendingConn{Conn: conn}
		switch victim, refuse := admit(s.pending, s.pendingLimit(), isIdle); {
		case refuse:
			// Every waiting connection has sent something: the caller is
			// turned away, with a word why rather than a reset.
			waiting := len(s.pending)
			s.refuse(conn, waiting)
			s.mu.Unlock()
			s.logger().Warn("recluster: control socket: too many connections waiting to send a request; refusing one", "waiting", waiting)
			continue
		case victim != nil:
			// Idle connections must not lock an operator out: the newest
			// idle one makes room.
			s.dropPending(victim)
			s.refuse(victim, len(s.pending)+1)
			s.logger().Debug("recluster: control socket: dropped an idle connection to make room", "waiting", len(s.pending)+1)
		}
		s.pending = append(s.pending, pc)
		s.conns[conn] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				s.dropPending(pc)
				delete(s.conns, conn)
				s.mu.Unlock()
				conn.Close()
			}()
			s.handle(pc)
		}()
	}
}

// pendingConn is a connection whose request has not arrived yet.
type pendingConn struct {
	net.Conn
	received atomic.Bool // some of its request was read
}

func (c *pendingConn) Read(p []byte) (int, error) {
	if !c.received.Load() {
		c.awaitInput()
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.received.Store(true)
	}
	return n, err
}

// awaitInput waits until the client has sent something and marks the
// connection as received while those bytes are still in the socket. Were
// it marked only after Read took them, newestIdle could find neither the
// mark nor input between the two, and drop a client that has begun its
// request as if it were idle.
func (c *pendingConn) awaitInput() {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if n > 0 {
			c.received.Store(true)
		}
		return !errors.Is(err, syscall.EAGAIN) // wait on, unless data, EOF or an error is there
	})
}

// admit decides what a new connection costs when waiting (oldest first)
// have not sent their requests yet: nothing while fewer than limit wait;
// else the newest idle one, the victim, gives up its place; and when none
// is idle, the new caller is refused.
func admit(waiting []*pendingConn, limit int, idle func(*pendingConn) bool) (victim *pendingConn, refuse bool) {
	if len(waiting) < limit {
		return nil, false
	}
	for i := len(waiting) - 1; i >= 0; i-- {
		if idle(waiting[i]) {
			return waiting[i], false
		}
	}
	return nil, true
}

// isIdle reports whether c has sent nothing yet, neither read by its
// handler nor waiting in the socket.
func isIdle(c *pendingConn) bool { return !c.received.Load() && !hasInput(c.Conn) }

func (s *Server) pendingLimit() int { return cmp.Or(s.maxPending, maxPending) }

// dropPending removes c from the waiting connections. s.mu is held.
func (s *Server) dropPending(c *pendingConn) {
	if i := slices.Index(s.pending, c); i >= 0 {
		s.pending = slices.Delete(s.pending, i, i+1)
	}
}

// hasInput reports whether bytes wait to be read on conn: a client that
// has sent its request is not idle, even before its goroutine has run.
func hasInput(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	// Control, unlike Read, does not wait for the handler's read in
	// progress on the same socket.
	rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	})
	return n > 0
}

// refuse tells a client that the master is too busy to take it, instead
// of a bare reset, and closes its connection, from a goroutine that Close
// waits for. s.mu is held.
func (s *Server) refuse(conn net.Conn, waiting int) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer conn.Close()
		sayBusy(conn, waiting)
	}()
}

// sayBusy answers a connection the master will not serve. It then reads
// the client's request line (for up to busyLinger), so that the close does
// not come before the client has sent it: the client then gets the answer
// and a clean end of file. A client that sends later still finds the
// answer waiting in its socket (Do reads it even after its send failed).
func sayBusy(conn net.Conn, waiting int) {
	conn.SetDeadline(time.Now().Add(busyLinger))
	json.NewEncoder(conn).Encode(Response{Error: busyMessage(waiting)})
	br := bufio.NewReader(io.LimitReader(conn, MaxRequest))
	br.ReadSlice('\n')
}

// busyLinger bounds how long a refused connection is kept to read the
// client's request.
const busyLinger = time.Second

func busyMessage(waiting int) string {
	return fmt.Sprintf("master busy: %d connections waiting to send a request; try again", waiting)
}

// Close stops accepting, removes the socket, and gives requests in flight
// until ctx ends to write their answers before their connections are
// closed.
func (s *Server) Close(ctx context.Context) {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	finished := make(chan struct{})
	go func() { s.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		return
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-finished
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) handle(pc *pendingConn) {
	var conn net.Conn = pc
	enc := json.NewEncoder(conn)
	reply := func(r Response) bool {
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return enc.Encode(r) == nil
	}
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		reply(Response{Error: msg})
	}
	if err := checkPeer(pc.Conn); err != nil {
		s.logger().Warn("recluster: refused a control connection", "error", err)
		fail("%v", err)
		return
	}
	conn.SetReadDeadline(time.Now().Add(cmp.Or(s.requestTimeout, requestTimeout)))
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 4096), MaxRequest)
	scanned := sc.Scan()
	s.mu.Lock()
	s.dropPending(pc)
	s.mu.Unlock()
	if !scanned {
		if errors.Is(sc.Err(), bufio.ErrTooLong) {
			fail("request longer than %d bytes", MaxRequest)
		} else if sc.Err() != nil {
			fail("no request received: %v", sc.Err())
		}
		return
	}
	conn.SetReadDeadline(time.Time{})
	var req Request
	dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value on the line")
	}
	if err != nil {
		s.logger().Warn("recluster: malformed control request", "error", err)
		fail("malformed request: %v; send one JSON object per line, such as {\"cmd\":\"status\"}", err)
		return
	}
	switch req.Cmd {
	case CmdStatus:
		st := s.status(req.Sample)
		reply(Response{OK: true, Status: &st})
	case CmdReload:
		s.reload(req, reply)
	case CmdScale:
		s.scale(req, reply)
	case CmdRestart:
		s.restart(req, reply)
	case CmdStop:
		s.stop(conn, reply)
	case CmdLogs:
		s.logs(conn, req, reply)
	case CmdReopenLogs:
		if s.Reopen == nil {
			fail("this master writes no log file")
		} else if err := s.Reopen(); err != nil {
			fail("%v", err)
		} else {
			reply(Response{OK: true, Message: "log file reopened"})
		}
	case CmdUpgrade:
		s.upgrade(pc.Conn, reply)
	case "":
		fail("malformed request: no cmd; use one of status, reload, restart, scale, stop, logs, reopen-logs, upgrade")
	default:
		fail("unknown command %q; use one of status, reload, restart, scale, stop, logs, reopen-logs, upgrade", req.Cmd)
	}
}

func (s *Server) reload(req Request, reply func(Response) bool) {
	c := s.Cluster
	var probation time.Duration
	if req.Probation != "" {
		d, err := time.ParseDuration(req.Probation)
		if err != nil || d < 0 {
			reply(Response{Error: fmt.Sprintf("reload: probation %q is not a duration such as 30s", req.Probation)})
			return
		}
		probation = d
	}
	if !req.Wait {
		if st := c.Status(); st.Phase != recluster.PhaseRunning {
			reply(Response{Error: fmt.Sprintf("cannot reload: the cluster is %s", st.Phase)})
			return
		}
		go c.Reload(context.Background()) // the command's OnEvent logs the outcome
		reply(Response{OK: true, Message: "reload started"})
		return
	}
	opts := []recluster.ReloadOption{recluster.WithProbation(probation)}
	var steps *reloadSteps
	if !req.Progress {
		reply(Response{Progress: "reload started"})
	} else { // the reload-started event is the first line
		steps = newReloadSteps(reply)
		opts = append(opts, recluster.WithProgress(steps.push))
	}
	err := c.Reload(context.Background(), opts...)
	committed := err == nil || errors.Is(err, recluster.ErrProbationFailed)
	if steps != nil {
		if committed {
			select {
			case <-steps.last:
			default:
				if old := s.oldWorkers(); old > 0 {
					steps.say(fmt.Sprintf("waiting for %d old workers to finish their work (the master kills them after its --timeout)", old))
				}
				<-steps.last // the old generation has gone
			}
		}
		steps.close()
	}
	switch {
	case errors.Is(err, recluster.ErrProbationFailed):
		reply(Response{Error: err.Error(), Outcome: recluster.ReloadCommitted})
	case err != nil:
		outcome := recluster.ReloadAborted
		if errors.Is(err, recluster.ErrSuperseded) {
			outcome = recluster.ReloadSuperseded
		}
		reply(Response{Error: err.Error(), Outcome: outcome})
	default:
		msg := fmt.Sprintf("reload finished: generation %d is active", c.Status().Generation)
		if probation > 0 {
			msg += fmt.Sprintf(" and stayed up through its %v probation", probation)
		}
		reply(Response{OK: true, Outcome: recluster.ReloadCommitted, Message: msg})
	}
}

// oldWorkers counts the workers of generations older than the active one.
func (s *Server) oldWorkers() int {
	st := s.Cluster.Status()
	n := 0
	for _, w := range st.Workers {
		if w.Generation < st.Generation {
			n++
		}
	}
	return n
}

// reloadSteps writes a reload's events as progress lines, in order, from
// a goroutine of its own: the events come from the supervisor, which must
// not wait for a slow client.
type reloadSteps struct {
	q    *lossy.Queue[Response]
	last chan struct{} // closed at the reload's last event
	once sync.Once
}

// progressBacklog bounds the progress lines waiting for a slow client;
// beyond it, a line says how many were missed.
const progressBacklog = 4096

func newReloadSteps(reply func(Response) bool) *reloadSteps {
	return &reloadSteps{
		q: lossy.New(progressBacklog, func(r Response) { reply(r) }, func(missed int) {
			reply(Response{Progress: fmt.Sprintf("%d progress lines missed: the client reads too slowly", missed)})
		}),
		last: make(chan struct{}),
	}
}

func (r *reloadSteps) push(e recluster.Event) {
	r.q.Push(Response{Progress: e.String(), Event: NewEvent(e)})
	switch e.Kind {
	case recluster.EventReloadDrained, recluster.EventReloadAborted, recluster.EventStopped:
		r.once.Do(func() { close(r.last) })
	}
}

func (r *reloadSteps) say(line string) { r.q.Push(Response{Progress: line, Time: time.Now()}) }

// close waits until every queued line has been written.
func (r *reloadSteps) close() {
	r.q.Close()
	<-r.q.Done()
}

func (s *Server) scale(req Request, reply func(Response) bool) {
	var n int
	var err error
	switch {
	case req.Workers != nil && req.Delta != nil:
		reply(Response{Error: "scale: give workers or delta, not both"})
		return
	case req.Workers != nil:
		n, err = *req.Workers, s.Cluster.Scale(*req.Workers)
	case req.Delta != nil:
		// Applied by the supervisor to the number in force, so that
		// concurrent requests add up.
		n, err = s.Cluster.ScaleBy(*req.Delta)
	default:
		reply(Response{Error: "scale: give workers (a number of slots) or delta (slots to add or remove)"})
		return
	}
	if err != nil {
		reply(Response{Error: strings.TrimPrefix(err.Error(), "recluster: ")})
		return
	}
	if req.Wait {
		reply(Response{Progress: fmt.Sprintf("scaling to %d workers", n)})
		if err := s.awaitSlots(n, reply); err != nil {
			reply(Response{Error: err.Error()})
			return
		}
	}
	reply(Response{OK: true, Message: fmt.Sprintf("scaled to %d workers", n)})
}

// scalePoll is how often a waiting scale looks at the cluster.
const scalePoll = 50 * time.Millisecond

// awaitSlots waits until slots 0..n-1 each have an active worker and no
// worker is left in a higher slot, reporting each slot that gets its
// worker. It gives up when a slot it waits for is failing (its workers
// keep dying), or when the cluster stops or is scaled to another size.
func (s *Server) awaitSlots(n int, reply func(Response) bool) error {
	start := time.Now()
	seen := map[int]bool{} // slots reported active, and -1 once the removed slots were mentioned
	for first, st := true, s.Cluster.Status(); ; first, st = false, s.Cluster.Status() {
		switch {
		case st.Phase != recluster.PhaseRunning:
			return fmt.Errorf("scale: the cluster is %s", st.Phase)
		case st.Slots != n:
			return fmt.Errorf("scale: the cluster was scaled to %d workers meanwhile", st.Slots)
		case len(st.FailingSlots) > 0:
			return fmt.Errorf("scale: slot %d is failing: its workers keep dying before they are ready or soon after; see the master's log", st.FailingSlots[0])
		}
		active, above := map[int]int{}, 0
		for _, w := range st.Workers {
			if w.Slot >= n {
				above++
			} else if w.State == recluster.WorkerActive {
				active[w.Slot] = w.PID
			}
		}
		for slot, pid := range active {
			if !seen[slot] {
				seen[slot] = true
				if !first { // the slots that served already are no news
					reply(Response{Progress: fmt.Sprintf("slot %d: pid %d active after %v", slot, pid, time.Since(start).Round(time.Millisecond))})
				}
			}
		}
		if len(active) == n && above == 0 {
			return nil
		}
		if above > 0 && len(active) == n && !seen[-1] {
			seen[-1] = true
			reply(Response{Progress: fmt.Sprintf("waiting for %d workers of removed slots to finish their work", above)})
		}
		select {
		case <-time.After(scalePoll):
		case <-s.Cluster.Done():
		}
	}
}

// restart replaces the slots one at a time, so that at most one slot is
// ever served by a worker that is still warming up.
func (s *Server) restart(req Request, reply func(Response) bool) {
	if len(req.Slots) == 0 {
		reply(Response{Error: "restart: give the slots to restart, such as [1]"})
		return
	}
	for _, slot := range req.Slots {
		old := s.Cluster.ActiveWorkers()[slot]
		reply(Response{Progress: fmt.Sprintf("restarting slot %d", slot)})
		if err := s.Cluster.Restart(context.Background(), slot); err != nil {
			reply(Response{Error: strings.TrimPrefix(err.Error(), "recluster: ")})
			return
		}
		if w := s.Cluster.ActiveWorkers()[slot]; w != nil && old != nil {
			reply(Response{Progress: fmt.Sprintf("slot %d: pid %d replaced by pid %d", slot, old.PID(), w.PID())})
		}
	}
	reply(Response{OK: true, Message: fmt.Sprintf("restart finished: slots %v have new workers", req.Slots)})
}

func (s *Server) stop(conn net.Conn, reply func(Response) bool) {
	c := s.Cluster
	select {
	case <-c.Done():
	default:
		if s.Stop == nil {
			reply(Response{Error: "this master cannot be stopped through its control socket"})
			return
		}
		reply(Response{Progress: "stopping"})
		s.Stop()
		<-c.Done()
	}
	reply(Response{OK: true, Message: "stopped"})
}

func (s *Server) upgrade(conn net.Conn, reply func(Response) bool) {
	if s.Upgrade == nil {
		reply(Response{Error: "this master cannot be upgraded through its control socket"})
		return
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	err := s.Upgrade(ln, conn, func(msg string) { reply(Response{Progress: msg}) })
	reply(Response{Error: strings.TrimPrefix(err.Error(), "recluster: ")})
}

func (s *Server) status(sample bool) Status {
	st := s.Cluster.Status()
	exe, _ := os.Readlink("/proc/self/exe")
	out := Status{Status: st, MasterPID: os.Getpid(), MasterExe: exe, Program: s.Program, Addrs: []string{}, Workers: []WorkerStatus{}, OutputDropped: s.Cluster.OutputDropped()}
	for _, a := range s.Cluster.Addrs() {
		out.Addrs = append(out.Addrs, a.Network()+":"+a.String())
	}
	// CPU use is the growth of each worker's CPU time over a short window.
	var before map[int]float64
	start := time.Now()
	if sample {
		before = map[int]float64{}
		for _, w := range st.Workers {
			before[w.PID] = w.CPUSeconds
		}
		time.Sleep(sampleWindow)
		st = s.Cluster.Status()
		out.Status = st
	}
	elapsed := time.Since(start).Seconds()
	for _, w := range st.Workers {
		ws := WorkerStatus{WorkerStatus: w}
		if b, ok := before[w.PID]; ok && elapsed > 0 {
			ws.CPUPercent = (w.CPUSeconds - b) / elapsed * 100
		}
		out.Workers = append(out.Workers, ws)
	}
	return out
}

func (s *Server) logs(conn net.Conn, req Request, reply func(Response) bool) {
	slot, n := -1, -1
	if req.Slot != nil {
		if slot = *req.Slot; slot < 0 {
			reply(Response{Error: fmt.Sprintf("logs: slot %d is not a slot; slots are 0 and up", slot)})
			return
		}
	}
	if req.Lines != nil {
		if n = *req.Lines; n < 0 {
			reply(Response{Error: fmt.Sprintf("logs: lines %d: want 0 or more", n)})
			return
		}
	}
	line := func(l recluster.OutputLine) bool { return reply(Response{Progress: "output", Line: &l}) }
	lines, err := s.Cluster.Output(slot, n)
	if err != nil {
		reply(Response{Error: strings.TrimPrefix(err.Error(), "recluster: ")})
		return
	}
	if !req.Follow {
		for _, l := range lines {
			if !line(l) {
				return
			}
		}
		reply(Response{OK: true, Message: fmt.Sprintf("%d lines", len(lines))})
		return
	}
	if !reply(Response{Progress: "following"}) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The client ends a follow by closing its connection.
	go func() {
		io.Copy(io.Discard, conn)
		cancel()
	}()
	go func() {
		select {
		case <-s.Cluster.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	err = s.Cluster.FollowOutput(ctx, slot, n, func(l recluster.OutputLine) {
		if !line(l) {
			cancel()
		}
	}, func(missed int) {
		if !reply(Response{Progress: "missed", Missed: missed}) {
			cancel()
		}
	})
	if err != nil {
		reply(Response{Error: strings.TrimPrefix(err.Error(), "recluster: ")})
		return
	}
	select {
	case <-s.Cluster.Done():
		reply(Response{OK: true, Message: "the master stopped"})
	default:
	}
}
