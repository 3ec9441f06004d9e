// Package worker is the worker side of recluster: the slot ([ID]),
// listeners shared through the master ([Listen]), readiness ([Ready]), and
// the signal to leave ([Disconnected], [Serve]).
//
// Every function also works when the program runs alone, without a master:
// ID is 0, Listen is [net.Listen] (or takes a socket that systemd passed),
// Ready tells systemd if NOTIFY_SOCKET is set, and Disconnected closes on
// SIGTERM or SIGINT. So the same binary runs under recluster, under
// systemd, or by hand.
//
// # Environment
//
// The package reads what the process inherited once, when it is
// initialised. Under a master ([IsWorker]) it then takes the variables that
// the master set for this one process out of the environment: the channel
// to the master, LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES and NOTIFY_SOCKET,
// so that the worker's own children do not take them for theirs. WORKER_ID
// and RECLUSTER_GENERATION stay.
//
// In any other process the environment is the program's and the package
// leaves it as it is: a program alone keeps what systemd gave it, and a
// master built on [github.com/recluster-go/recluster] that imports this
// package to be its own worker ([github.com/recluster-go/recluster.Self])
// still finds its NOTIFY_SOCKET and LISTEN_* variables, to notify systemd
// and to take the sockets that systemd passed. In every process the passed
// sockets (fds 3 and up) are marked close-on-exec.
//
// A program alone takes passed sockets only when LISTEN_PID is its own pid,
// the systemd rule. Under a master it also takes them when LISTEN_PID is
// not set (one that names another process still means they are not its
// own), and says so to the master in its listening message: the master
// may then start later workers of the same program file without the exec
// trampoline that sets LISTEN_PID, which saves a Go runtime start per
// worker (see docs/protocol.md, section 3.1).
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
	"github.com/recluster-go/recluster/internal/systemd"
	"golang.org/x/sys/unix"
)

// What the process inherited, read once at start-up (see the package
// documentation, Environment).
var inherited = readEnvironment()

type environment struct {
	id         int
	generation int
	channelFD  int // -1 when there is no master
	timeout    time.Duration
	heartbeat  time.Duration
	sockets    []systemd.Socket // passed by socket activation, close-on-exec
}

// workerOnlyEnv are the variables a master sets for one worker process:
// under a master they are taken out of the environment so that the
// worker's own children do not mistake them for theirs.
var workerOnlyEnv = append([]string{proto.EnvChannelFD, "NOTIFY_SOCKET"}, systemd.ListenEnv...)

func readEnvironment() environment {
	env := environment{channelFD: -1}
	env.id, _ = strconv.Atoi(os.Getenv(proto.EnvWorkerID))
	env.generation, _ = strconv.Atoi(os.Getenv(proto.EnvGeneration))
	env.timeout, _ = time.ParseDuration(os.Getenv(proto.EnvTimeout))
	env.heartbeat, _ = time.ParseDuration(os.Getenv(proto.EnvHeartbeat))
	fd, err := strconv.Atoi(os.Getenv(proto.EnvChannelFD))
	if err != nil || fd <= 2 {
		env.sockets = systemd.Sockets()
		return env
	}
	// Under a master the channel says that the passed sockets are this
	// process's, so LISTEN_PID may be absent: the master then started the
	// program without its exec trampoline, which this package allows for
	// (listenInherited tells the master so).
	env.sockets = systemd.SocketsWithoutPID()
	env.channelFD = fd
	unix.CloseOnExec(fd)
	for _, k := range workerOnlyEnv {
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

// IsWorker reports whether the program runs under a recluster master: a
// program that is its own worker ([github.com/recluster-go/recluster.Self])
// asks it to choose between serving and being the master.
func IsWorker() bool { return inherited.channelFD >= 0 }

// DrainTimeout returns how long the master lets this worker drain after
// telling it to disconnect, before it kills it
// ([github.com/recluster-go/recluster.Options].Timeout); 0 when unknown.
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
			noteDisconnect(msg)
			markDisconnected()
			returnPendingHandoffs()
		case proto.CmdHandoff:
			takeHandoff(msg, fd)
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
	if err := m.conn.Send(proto.Message{Cmd: proto.CmdListen, ID: id, Network: network, Address: address, Handoff: true}, -1); err != nil {
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
	ln, err := fileListener(r.fd, address)
	if err != nil {
		return nil, err
	}
	return newHandoffListener(ln, r.msg.Network, r.msg.Address), nil
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
// queue. A socket passed the systemd way (LISTEN_FDS, by the master's
// [github.com/recluster-go/recluster.Options].Sockets or by systemd) is used
// when it matches: by its name, as "name:NAME" or NAME, or by its address,
// where a wildcard host on either side matches any IP; a single passed
// socket matches any address. Alone, it is [net.Listen].
func Listen(network, address string) (net.Listener, error) {
	if ln, ok, err := listenInherited(network, address); ok {
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
func listenInherited(network, address string) (net.Listener, bool, error) {
	socks := inherited.sockets
	for _, sock := range socks {
		if !sock.Serves(strings.TrimPrefix(address, "name:"), network, address) && len(socks) > 1 {
			continue
		}
		if !systemd.Listening(sock.FD) {
			return nil, true, fmt.Errorf("worker: inherited fd %d (%s) is not a listening socket; with systemd, use Accept=no in the socket unit", sock.FD, sock.Name)
		}
		dup, err := unix.FcntlInt(uintptr(sock.FD), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, true, fmt.Errorf("worker: inherited socket %s: %w", sock.Name, err)
		}
		sockNet, sockAddr, named := socketName(dup)
		if named {
			// The master cannot see a worker start listening on an
			// inherited socket: say so (ReadyWhen=listening), and that it
			// takes handed connections, and needs no LISTEN_PID (later
			// workers of this program file may start without the
			// trampoline that sets it). Said before the Go runtime adds
			// the socket to its epoll set, where the master's accept
			// watcher would see it waiting for connections and mark it
			// ready without knowing that it takes handed ones: a reload
			// would then tell the old workers to hand theirs to nobody.
			send(proto.Message{Cmd: proto.CmdListening, Network: sockNet, Address: sockAddr, Handoff: true, ListenPID: proto.ListenPIDOptional}, "")
		}
		ln, err := fileListener(dup, sock.Name)
		if err == nil && named {
			// It also yields connections handed over by a draining worker
			// (handoff.go), which may come as soon as the master hears of
			// it: takeHandoff keeps them until the listener is made.
			ln = newHandoffListener(ln, sockNet, sockAddr)
		}
		return ln, true, err
	}
	return nil, false, nil
}

// socketName names a socket as its net.Listener's Addr would (getsockname,
// converted as package net does), before there is a listener.
func socketName(fd int) (network, address string, ok bool) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "", "", false
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return "tcp", (&net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}).String(), true
	case *unix.SockaddrInet6:
		zone := ""
		if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); sa.ZoneId != 0 && err == nil {
			zone = ifi.Name
		}
		return "tcp", (&net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port, Zone: zone}).String(), true
	case *unix.SockaddrUnix:
		if t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err == nil && t == unix.SOCK_SEQPACKET {
			return "unixpacket", sa.Name, true
		}
		return "unix", sa.Name, true
	}
	return "", "", false
}

// Ready tells the master that this worker is ready to serve, which is when
// it counts as ready with ReadyWhen [github.com/recluster-go/recluster.Ready].
// Alone under systemd it sends READY=1 to NOTIFY_SOCKET; alone without
// systemd it does nothing.
func Ready() error {
	return send(proto.Message{Cmd: proto.CmdReady}, systemd.Ready(""))
}

// SetStatus publishes a short status line that operators see in
// `recluster status` (alone under systemd: STATUS= in systemctl status).
func SetStatus(text string) error {
	return send(proto.Message{Cmd: proto.CmdStatus, Status: text}, systemd.Status(text))
}

// Heartbeat tells the master that the worker is not hung (alone under
// systemd: WATCHDOG=1). Workers whose master sets
// [github.com/recluster-go/recluster.Options].HeartbeatTimeout send one by
// themselves; a program may also call it from its own main loop, which
// proves more than a timer does.
func Heartbeat() error {
	return send(proto.Message{Cmd: proto.CmdHeartbeat}, systemd.Watchdog)
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

// send tells the master, or alone systemd when notification is not empty.
func send(msg proto.Message, notification string) error {
	m, err := channel()
	if err != nil {
		return err
	}
	if m != nil {
		return m.conn.Send(msg, -1)
	}
	if notification != "" {
		if err := systemd.Notify(notification); err != nil {
			return fmt.Errorf("worker: sd_notify: %w", err)
		}
	}
	return nil
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
