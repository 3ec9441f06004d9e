package recluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ownedSocket is a listening socket that the master keeps for the life of
// the cluster. The master holds a raw descriptor and never accepts on it:
// it is not in the master's epoll set, so connections cost the master
// nothing, and it is never wrapped in an *os.File whose Fd method would
// flip the shared description into blocking mode under the workers.
type ownedSocket struct {
	name    string
	network string
	address string // as requested
	fd      int
	addr    net.Addr
	adopted bool // inherited from systemd, not bound by the master
	blocked bool // put in blocking mode, before any worker held it
}

// makeBlocking gives a socket passed the systemd way the blocking mode
// that programs written for systemd expect, once, before any worker holds
// it: the mode belongs to the socket that all its holders share, and
// flipping it under a worker that set it non-blocking would stall that
// worker's accept loop.
func (s *ownedSocket) makeBlocking() error {
	if s.blocked {
		return nil
	}
	s.blocked = true
	return unix.SetNonblock(s.fd, false)
}

// socketRegistry maps what workers ask for to the sockets the master owns:
// the first request for an address binds it, every later one (from any
// worker of any generation) gets a duplicate of the same socket, so its
// accept queue outlives every worker.
//
// With reusePort (Options.ReusePort) each slot gets a socket of its own,
// bound with SO_REUSEPORT to the same address, and every generation of
// that slot inherits it: the kernel spreads connections evenly over the
// slots, and no accept queue is closed by a reload.
type socketRegistry struct {
	reusePort bool
	// sticky (Options.Sticky) keeps each TCP address's per-slot sockets
	// in one reuseport group in slot order, and attaches the program that
	// sends each client address to its slot (sticky.go).
	sticky bool
	// slots is, in sticky mode, the number of slots the program serves.
	slots int
	// stickyGroups lists the sticky addresses, by the key of their slot 0
	// socket.
	stickyGroups []stickyGroup
	// retiring holds the slots scaled away whose workers still serve
	// what waits in their queues (supervisor.retireSticky).
	retiring map[int]*retiringSlot
	byKey    map[string]*ownedSocket
	passed   []*ownedSocket // Options.Sockets, in LISTEN_FDS order
	unlinks  []string       // Unix socket paths the master created
	// bound maps an address that asked for port 0 to the port it got, so
	// that every slot's SO_REUSEPORT socket joins the same group.
	bound map[string]string
}

func newSocketRegistry(opts Options) *socketRegistry {
	return &socketRegistry{
		reusePort: opts.ReusePort || opts.Sticky, sticky: opts.Sticky, slots: opts.Workers,
		byKey: map[string]*ownedSocket{}, bound: map[string]string{}, retiring: map[int]*retiringSlot{},
	}
}

func socketKey(network, address string, slot int) string {
	return network + " " + address + " " + strconv.Itoa(slot)
}

// get returns the socket for network and address (and, in reuse-port
// mode, for slot), binding it on first use.
func (r *socketRegistry) get(network, address string, slot int) (*ownedSocket, error) {
	perSlot := r.reusePort && network != "unix"
	if !perSlot {
		slot = -1
	}
	key := socketKey(network, address, slot)
	if s, ok := r.byKey[key]; ok {
		return s, nil
	}
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, fmt.Errorf("network %q is not supported; use tcp, tcp4, tcp6 or unix", network)
	}
	if r.sticky {
		return r.bindStickyGroup(network, address, slot)
	}
	bindAddress := address
	if resolved, ok := r.bound[network+" "+address]; ok && perSlot {
		bindAddress = resolved
	}
	s, err := r.bind(network, address, bindAddress, key, perSlot)
	if err != nil {
		return nil, err
	}
	if network == "unix" && address != "" && address[0] != '@' {
		r.unlinks = append(r.unlinks, address)
	}
	return s, nil
}

// bind binds one socket and files it under key.
func (r *socketRegistry) bind(network, address, bindAddress, key string, perSlot bool) (*ownedSocket, error) {
	fd, addr, err := bindListener(network, bindAddress, perSlot, r.sticky)
	if err != nil {
		return nil, err
	}
	if perSlot {
		r.bound[network+" "+address] = addr.String()
	}
	s := &ownedSocket{name: "listen", network: network, address: address, fd: fd, addr: addr}
	r.byKey[key] = s
	return s, nil
}

// passedFor returns the sockets a worker in slot inherits, in
// LISTEN_FDS order.
func (r *socketRegistry) passedFor(slot int) ([]*ownedSocket, error) {
	if !r.reusePort {
		return r.passed, nil
	}
	out := make([]*ownedSocket, len(r.passed))
	for i, base := range r.passed {
		out[i] = base
		if base.adopted || base.network == "unix" {
			continue // an inherited socket cannot be multiplied
		}
		s, err := r.get(base.network, base.address, slot)
		if err != nil {
			return nil, err
		}
		s.name = base.name
		if err := s.makeBlocking(); err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// releaseSlot closes the master's copies of slot's own sockets (reuse-port
// mode) once the slot is gone.
func (r *socketRegistry) releaseSlot(slot int) {
	if !r.reusePort || r.sticky { // sticky sockets stay for the group's order

		return
	}
	suffix := " " + strconv.Itoa(slot)
	for key, s := range r.byKey {
		if strings.HasSuffix(key, suffix) {
			unix.Close(s.fd)
			delete(r.byKey, key)
		}
	}
}

// bindPassed binds (or adopts) the sockets that every worker inherits.
func (r *socketRegistry) bindPassed(specs []Socket) error {
	for _, spec := range specs {
		var s *ownedSocket
		if spec.FD > 0 {
			addr, err := adoptListener(spec.FD)
			if err != nil {
				return fmt.Errorf("socket %q (fd %d): %w", spec.Name, spec.FD, err)
			}
			s = &ownedSocket{network: addr.Network(), address: spec.Address, fd: spec.FD, addr: addr, adopted: true}
			if s.address == "" {
				s.address = addr.String()
			}
			r.byKey[socketKey(spec.Network, s.address, -1)] = s
		} else {
			var err error
			s, err = r.get(spec.Network, spec.Address, 0)
			if err != nil {
				return fmt.Errorf("socket %q: %w", spec.Name, err)
			}
		}
		s.name = spec.Name
		// Programs written for systemd expect blocking sockets, as systemd
		// passes them; runtimes that want non-blocking ones set that
		// themselves.
		if err := s.makeBlocking(); err != nil {
			return fmt.Errorf("socket %q: %w", spec.Name, err)
		}
		r.passed = append(r.passed, s)
	}
	return nil
}

// bindListener binds with the standard library, keeps a private duplicate
// of the descriptor and closes the Go listener, which takes the socket out
// of the master's netpoller. plainTCP turns off Multipath TCP, which Go
// uses for listeners by default where the kernel has it: the kernel
// refuses a reuseport program on an MPTCP socket (EOPNOTSUPP).
func bindListener(network, address string, reusePort, plainTCP bool) (int, net.Addr, error) {
	lc := &net.ListenConfig{}
	if plainTCP {
		lc.SetMultipathTCP(false)
	}
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var sockErr error
			err := c.Control(func(fd uintptr) {
				sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			if err != nil {
				return err
			}
			return sockErr
		}
	}
	ln, err := lc.Listen(context.Background(), network, address)
	if err != nil {
		return -1, nil, explainListenError(network, address, err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	fd, err := dupListenerFD(ln.(syscall.Conn))
	addr := ln.Addr()
	ln.Close()
	if err != nil {
		return -1, nil, err
	}
	return fd, addr, nil
}

func dupListenerFD(conn syscall.Conn) (int, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	dup := -1
	var dupErr error
	err = raw.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err == nil {
		err = dupErr
	}
	return dup, err
}

// adoptListener checks that an inherited descriptor is a listening socket
// and returns its address.
func adoptListener(fd int) (net.Addr, error) {
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("not a socket: %w", err)
	}
	if listening != 1 {
		return nil, fmt.Errorf("the socket is not listening")
	}
	unix.CloseOnExec(fd)
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "inherited")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	addr := ln.Addr()
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	ln.Close()
	return addr, nil
}

func explainListenError(network, address string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("cannot listen on %s %s: the address is already in use; stop the other program or choose another port", network, address)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("cannot listen on %s %s: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE", network, address)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("cannot listen on %s %s: no interface of this machine has that address", network, address)
	}
	return fmt.Errorf("cannot listen on %s %s: %w", network, address, err)
}

func (r *socketRegistry) addrs() []net.Addr {
	var out []net.Addr
	seen := map[string]bool{}
	add := func(s *ownedSocket) {
		if k := s.addr.Network() + " " + s.addr.String(); !seen[k] {
			seen[k] = true
			out = append(out, s.addr)
		}
	}
	for _, s := range r.passed {
		add(s)
	}
	keys := make([]string, 0, len(r.byKey))
	for k := range r.byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(r.byKey[k])
	}
	return out
}

func (r *socketRegistry) closeAll() {
	closed := map[int]bool{}
	for _, s := range r.byKey {
		if !closed[s.fd] {
			closed[s.fd] = true
			unix.Close(s.fd)
		}
	}
	for _, p := range r.unlinks {
		os.Remove(p)
	}
	r.byKey = map[string]*ownedSocket{}
	r.passed = nil
	r.unlinks = nil
}

// stickyGroup is one TCP address of a sticky registry: the per-slot
// sockets that share it, keyed by socketKey(network, address, slot).
type stickyGroup struct{ network, address string }

// bindStickyGroup binds, on the first request for an address, one socket
// per slot in slot order, because the kernel numbers a reuseport group's
// sockets in the order they start listening and the program returns slot
// numbers; then it attaches the program. A slot beyond the table (a
// worker of a slot being scaled away) gets a socket too, after the
// others, which the program never chooses.
func (r *socketRegistry) bindStickyGroup(network, address string, slot int) (*ownedSocket, error) {
	if network == "unix" {
		return nil, fmt.Errorf("cannot listen on unix %s with Sticky: Sticky sends each client IP address to one slot, and a Unix socket has no client address; listen on TCP, or turn Sticky off", address)
	}
	g := stickyGroup{network, address}
	if err := r.growStickyGroup(g, max(r.slots, slot+1)); err != nil {
		return nil, err
	}
	if !slices.Contains(r.stickyGroups, g) {
		r.stickyGroups = append(r.stickyGroups, g)
		if err := r.attachStickyGroup(g); err != nil {
			return nil, err
		}
	}
	return r.byKey[socketKey(network, address, slot)], nil
}

// growStickyGroup binds the sockets of g's slots below n that it lacks,
// in slot order. A slot scaled away keeps its socket (see retireSticky),
// so the sockets of the group are always slots 0..k-1 in order.
func (r *socketRegistry) growStickyGroup(g stickyGroup, n int) error {
	for slot := 0; slot < n; slot++ {
		key := socketKey(g.network, g.address, slot)
		if _, ok := r.byKey[key]; ok {
			continue
		}
		bindAddress := g.address
		if resolved, ok := r.bound[g.network+" "+g.address]; ok {
			bindAddress = resolved
		}
		if _, err := r.bind(g.network, g.address, bindAddress, key, true); err != nil {
			return err
		}
	}
	return nil
}

func (r *socketRegistry) attachStickyGroup(g stickyGroup) error {
	s := r.byKey[socketKey(g.network, g.address, 0)]
	if err := attachSticky(s.fd, newStickyTable(r.slots)); err != nil {
		return fmt.Errorf("%s %s: %w", g.network, s.addr, err)
	}
	return nil
}

// resize changes, in sticky mode, the slots the program serves: growing,
// the new slots' sockets start listening before the program sends them
// clients; shrinking, the program stops sending clients to the removed
// slots at once, and their sockets stay open so that the group's order
// holds (see retireSticky).
func (r *socketRegistry) resize(n int) error {
	if !r.sticky {
		return nil
	}
	if n > StickyBuckets {
		return fmt.Errorf("recluster: cannot scale to %d workers with Sticky: it shares %d buckets of client addresses, so at most %d slots get clients", n, StickyBuckets, StickyBuckets)
	}
	for _, g := range r.stickyGroups {
		if err := r.growStickyGroup(g, n); err != nil {
			return err
		}
	}
	old := r.slots
	r.slots = n
	now := time.Now()
	for slot := n; slot < old; slot++ {
		r.retiring[slot] = &retiringSlot{since: now, quietSince: now}
	}
	for _, g := range r.stickyGroups {
		if err := r.attachStickyGroup(g); err != nil {
			r.slots = old
			for _, g := range r.stickyGroups {
				r.attachStickyGroup(g)
			}
			return err
		}
	}
	return nil
}

// queued counts the connections that wait in the accept queues of slot's
// sticky sockets.
func (r *socketRegistry) retiringSlots() map[int]*retiringSlot { return r.retiring }

func (r *socketRegistry) queued(slot int) int {
	total := 0
	for _, g := range r.stickyGroups {
		if s, ok := r.byKey[socketKey(g.network, g.address, slot)]; ok {
			if n, err := acceptQueue(s.fd); err == nil {
				total += n
			}
		}
	}
	return total
}
