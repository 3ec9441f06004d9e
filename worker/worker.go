// Package worker is the worker side of recluster: the slot (WORKER_ID),
// listeners shared through the master, readiness, and the signal to leave.
//
// Every function also works when the program runs alone, without a master:
// ID is 0, Listen is net.Listen (or takes a socket that systemd passed),
// Ready tells systemd if NOTIFY_SOCKET is set, and Disconnected closes on
// SIGTERM or SIGINT. So the same binary runs under recluster, under
// systemd, or by hand.
package worker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
	"golang.org/x/sys/unix"
)

// What the process inherited, read once at start-up. The variables that
// would mislead the program's own children are removed from the
// environment then, and the inherited descriptors made close-on-exec.
var inherited = readEnvironment()

type environment struct {
	id           int
	generation   int
	channelFD    int // -1 when there is no master
	timeout      time.Duration
	heartbeat    time.Duration
	notifySocket string
	listenFDs    []inheritedFD
}

type inheritedFD struct {
	fd   int
	name string
}

func readEnvironment() environment {
	env := environment{channelFD: -1}
	env.id, _ = strconv.Atoi(os.Getenv(proto.EnvWorkerID))
	env.generation, _ = strconv.Atoi(os.Getenv(proto.EnvGeneration))
	if fd, err := strconv.Atoi(os.Getenv(proto.EnvChannelFD)); err == nil && fd > 2 {
		env.channelFD = fd
		unix.CloseOnExec(fd)
	}
	env.timeout, _ = time.ParseDuration(os.Getenv(proto.EnvTimeout))
	env.heartbeat, _ = time.ParseDuration(os.Getenv(proto.EnvHeartbeat))
	env.notifySocket = os.Getenv("NOTIFY_SOCKET")
	if pid, err := strconv.Atoi(os.Getenv("LISTEN_PID")); err == nil && pid == os.Getpid() {
		n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
		names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
		for i := 0; i < n; i++ {
			fd := 3 + i
			unix.CloseOnExec(fd)
			name := "unknown"
			if i < len(names) && names[i] != "" {
				name = names[i]
			}
			env.listenFDs = append(env.listenFDs, inheritedFD{fd: fd, name: name})
		}
	}
	for _, k := range []string{proto.EnvChannelFD, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"} {
		os.Unsetenv(k)
	}
	return env
}

func init() {
	// A master that watches heartbeats must get them even from a program
	// that never calls into this package after start-up.
	if inherited.heartbeat > 0 {
		channel()
	}
}

// ID returns the worker's slot, WORKER_ID: 0..N-1, unique among the active
// workers and kept by replacements. It is 0 when the program runs alone.
func ID() int { return inherited.id }

// Generation returns the worker's generation (1 for the cluster's first,
// one more per reload), or 0 when the program runs alone.
func Generation() int { return inherited.generation }

// IsWorker reports whether the program runs under a recluster master.
func IsWorker() bool { return inherited.channelFD >= 0 }

// DrainTimeout returns how long the master lets this worker drain after
// telling it to disconnect, before it kills it; 0 when unknown.
func DrainTimeout() time.Duration { return inherited.timeout }

// master is the worker's end of the channel, opened on first use.
type master struct {
	conn *proto.Conn

	mu      sync.Mutex
	nextID  uint64
	waiting map[uint64]chan listenReply
	closed  bool
}

type listenReply struct {
	msg proto.Message
	fd  int
}

var (
	masterOnce sync.Once
	theMaster  *master
	masterErr  error

	disconnectOnce sync.Once
	disconnected   = make(chan struct{})
	signalsOnce    sync.Once
	retireSent     atomic.Bool
)

func channel() (*master, error) {
	masterOnce.Do(func() {
		if inherited.channelFD < 0 {
			return
		}
		conn, err := proto.NewConn(inherited.channelFD, "recluster-channel")
		if err != nil {
			masterErr = fmt.Errorf("worker: cannot open the channel to the master: %w", err)
			return
		}
		theMaster = &master{conn: conn, waiting: map[uint64]chan listenReply{}}
		go theMaster.read()
		if inherited.heartbeat > 0 {
			go theMaster.beat(inherited.heartbeat / 3)
		}
	})
	return theMaster, masterErr
}

func (m *master) read() {
	for {
		msg, fd, err := m.conn.Receive()
		if errors.Is(err, proto.ErrMalformed) {
			continue
		}
		if err != nil {
			// The master is gone: leave, as if told to.
			m.mu.Lock()
			m.closed = true
			for id, ch := range m.waiting {
				ch <- listenReply{msg: proto.Message{Error: "the master closed the channel"}, fd: -1}
				delete(m.waiting, id)
			}
			m.mu.Unlock()
			markDisconnected()
			return
		}
		switch msg.Cmd {
		case proto.CmdListen:
			m.mu.Lock()
			ch := m.waiting[msg.ID]
			delete(m.waiting, msg.ID)
			m.mu.Unlock()
			if ch != nil {
				ch <- listenReply{msg: msg, fd: fd}
			} else if fd >= 0 {
				unix.Close(fd)
			}
		case proto.CmdDisconnect:
			markDisconnected()
		default:
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
}

func (m *master) beat(every time.Duration) {
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		if err := m.conn.Send(proto.Message{Cmd: proto.CmdHeartbeat}, -1); err != nil {
			return
		}
	}
}

// listenTimeout bounds the wait for the master's answer to a listen
// request; a live master answers in microseconds.
const listenTimeout = 30 * time.Second

func (m *master) listen(network, address string) (net.Listener, error) {
	reply := make(chan listenReply, 1)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, errors.New("worker: the master closed the channel")
	}
	m.nextID++
	id := m.nextID
	m.waiting[id] = reply
	m.mu.Unlock()
	if err := m.conn.Send(proto.Message{Cmd: proto.CmdListen, ID: id, Network: network, Address: address}, -1); err != nil {
		m.mu.Lock()
		delete(m.waiting, id)
		m.mu.Unlock()
		return nil, fmt.Errorf("worker: asking the master for %s %s: %w", network, address, err)
	}
	var r listenReply
	select {
	case r = <-reply:
	case <-time.After(listenTimeout):
		m.mu.Lock()
		delete(m.waiting, id)
		m.mu.Unlock()
		return nil, fmt.Errorf("worker: the master did not answer the listen request for %s %s within %v", network, address, listenTimeout)
	}
	if r.msg.Error != "" {
		return nil, fmt.Errorf("worker: the master could not listen: %s", r.msg.Error)
	}
	if r.fd < 0 {
		return nil, fmt.Errorf("worker: the master answered the listen request for %s %s without a socket", network, address)
	}
	return fileListener(r.fd, address)
}

// fileListener wraps fd (and takes ownership of it).
func fileListener(fd int, name string) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("worker: descriptor for %s: %w", name, err)
	}
	return ln, nil
}

// Listen returns a listener for address. Under a master it is a duplicate
// of the master's socket for that address (the first worker to ask makes
// the master bind it), so every worker and generation shares one accept
// queue. Sockets passed the systemd way (LISTEN_FDS) are used when one
// matches. Alone, it is net.Listen.
func Listen(network, address string) (net.Listener, error) {
	if ln, ok, err := listenInherited(address); ok {
		return ln, err
	}
	m, err := channel()
	if err != nil {
		return nil, err
	}
	if m != nil {
		return m.listen(network, address)
	}
	return net.Listen(network, address)
}

// listenInherited finds a passed socket by name ("name:http" or the bare
// name) or by address; with a single passed socket, any address matches.
func listenInherited(address string) (net.Listener, bool, error) {
	fds := inherited.listenFDs
	if len(fds) == 0 {
		return nil, false, nil
	}
	for _, lf := range fds {
		if lf.name == strings.TrimPrefix(address, "name:") || addressMatches(lf.fd, address) || len(fds) == 1 {
			if on, err := unix.GetsockoptInt(lf.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on != 1 {
				return nil, true, fmt.Errorf("worker: inherited fd %d (%s) is not a listening socket; with systemd, use Accept=no in the socket unit", lf.fd, lf.name)
			}
			dup, err := unix.FcntlInt(uintptr(lf.fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return nil, true, fmt.Errorf("worker: inherited socket %s: %w", lf.name, err)
			}
			ln, err := fileListener(dup, lf.name)
			if err == nil {
				// The master cannot see a worker start listening on an
				// inherited socket: say so (ReadyWhen=listening).
				send(proto.Message{Cmd: proto.CmdListening, Address: ln.Addr().String()}, "")
			}
			return ln, true, err
		}
	}
	return nil, false, nil
}

func addressMatches(fd int, address string) bool {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		if u, ok := sa.(*unix.SockaddrUnix); ok {
			return u.Name == address
		}
		return false
	}
	var gotPort int
	var gotIP net.IP
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		gotPort, gotIP = a.Port, net.IP(a.Addr[:])
	case *unix.SockaddrInet6:
		gotPort, gotIP = a.Port, net.IP(a.Addr[:])
	default:
		return false
	}
	if strconv.Itoa(gotPort) != port {
		return false
	}
	return host == "" || gotIP.Equal(net.ParseIP(host)) || gotIP.IsUnspecified()
}

// Ready tells the master that this worker is ready to serve (for
// ReadyWhen=ready); under systemd alone it sends READY=1. Alone it does
// nothing.
func Ready() error {
	return send(proto.Message{Cmd: proto.CmdReady}, "READY=1")
}

// SetStatus publishes a short status line that operators see in
// `recluster status` (or systemctl status).
func SetStatus(text string) error {
	return send(proto.Message{Cmd: proto.CmdStatus, Status: text}, "STATUS="+text)
}

// Heartbeat tells the master that the worker is not hung. Workers whose
// master sets a heartbeat timeout send one by themselves; a program may
// also call it from its own main loop, which proves more than a timer does.
func Heartbeat() error {
	return send(proto.Message{Cmd: proto.CmdHeartbeat}, "WATCHDOG=1")
}

// Retire asks the master to replace this worker: the master starts a new
// worker in the same slot and, once it is ready, tells this one to
// disconnect. Until then this worker keeps serving.
func Retire() error {
	if !retireSent.CompareAndSwap(false, true) {
		return nil
	}
	return send(proto.Message{Cmd: proto.CmdDisconnect}, "")
}

func send(msg proto.Message, notifyLine string) error {
	m, err := channel()
	if err != nil {
		return err
	}
	if m != nil {
		return m.conn.Send(msg, -1)
	}
	if notifyLine != "" && inherited.notifySocket != "" {
		return sdNotify(inherited.notifySocket, notifyLine)
	}
	return nil
}

func sdNotify(socket, line string) error {
	if strings.HasPrefix(socket, "@") {
		socket = "\x00" + socket[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("worker: sd_notify: %w", err)
	}
	defer conn.Close()
	_, err = conn.Write([]byte(line))
	return err
}

// Disconnected returns a channel that is closed when this worker should
// stop accepting, finish its in-flight work and exit: the master sent
// disconnect, the master is gone, or the process got SIGTERM or SIGINT.
func Disconnected() <-chan struct{} {
	if _, err := channel(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	signalsOnce.Do(func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		go func() {
			<-sig
			// A second signal gets the default action: a program alone
			// can still be stopped at once with another Ctrl-C.
			signal.Stop(sig)
			markDisconnected()
		}()
	})
	return disconnected
}

func markDisconnected() {
	disconnectOnce.Do(func() { close(disconnected) })
}
