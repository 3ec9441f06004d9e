package worker

import (
	"errors"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
	"golang.org/x/sys/unix"
)

// Connection handoff, the receiving side: a listener from the master
// (Listen) also yields the idle connections that a draining worker of an
// older generation handed over, so that their clients never see the
// reload. The sending side is the drain in http.go; docs/protocol.md,
// "Connection handoff", has the whole exchange.

// handoffKey names a master's socket as the master's listen reply did.
type handoffKey struct{ network, address string }

// handoffListener is a listener from the master that also yields handed
// connections. Accept blocks in the kernel's accept as usual; a handed
// connection wakes it with a past deadline, so the common path costs
// nothing.
type handoffListener struct {
	net.Listener
	key      handoffKey
	deadline interface{ SetDeadline(time.Time) error }

	mu     sync.Mutex
	queue  []net.Conn // handed, not yet returned by Accept
	woken  bool       // the past deadline is ours, not the caller's
	closed bool
}

var handoffListeners struct {
	mu    sync.Mutex
	byKey map[handoffKey][]*handoffListener
	// pending holds connections handed before the listener for their key
	// was made: the master routes to a worker as soon as it has sent the
	// listen reply, and Listen wraps the socket only after this package's
	// reader has passed the reply on.
	pending map[handoffKey][]net.Conn
}

// handoffClaimTimeout bounds how long a handed connection waits for its
// listener; then it is closed, never kept.
const handoffClaimTimeout = 5 * time.Second

// newHandoffListener wraps ln, a listener for the master's socket
// network/address; listeners that cannot take a deadline are returned as
// they are (the master only hands connections to a worker that asked for
// them, and this one then does not: see takeHandoff).
func newHandoffListener(ln net.Listener, network, address string) net.Listener {
	dl, ok := ln.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return ln
	}
	l := &handoffListener{Listener: ln, key: handoffKey{network, address}, deadline: dl}
	handoffListeners.mu.Lock()
	if handoffListeners.byKey == nil {
		handoffListeners.byKey = map[handoffKey][]*handoffListener{}
	}
	handoffListeners.byKey[l.key] = append(handoffListeners.byKey[l.key], l)
	pending := handoffListeners.pending[l.key]
	delete(handoffListeners.pending, l.key)
	handoffListeners.mu.Unlock()
	for _, c := range pending {
		l.deliver(c)
	}
	return l
}

// Accept returns the next handed connection, or else the next one from
// the kernel's queue.
func (l *handoffListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue = l.queue[1:]
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		l.mu.Lock()
		if l.closed {
			// Possibly woken by a handoff: not a timeout to retry on.
			l.mu.Unlock()
			return nil, net.ErrClosed
		}
		ours := l.woken && isTimeout(err)
		if ours {
			// deliver set the deadline under l.mu after it queued, so the
			// queue is not empty or another deliver is on its way.
			l.woken = false
			l.deadline.SetDeadline(time.Time{})
		}
		l.mu.Unlock()
		if !ours {
			return nil, err
		}
	}
}

// deliver queues c for Accept and wakes an Accept blocked in the kernel.
func (l *handoffListener) deliver(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		go returnHandoff(l.key, c)
		return
	}
	l.queue = append(l.queue, c)
	if !l.woken {
		l.woken = true
		l.deadline.SetDeadline(time.Unix(1, 0))
	}
}

// Close stops accepting. Handed connections that Accept has not returned
// yet go back to the master (none of their bytes has been read).
func (l *handoffListener) Close() error {
	l.mu.Lock()
	l.closed = true
	queued := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, c := range queued {
		returnHandoff(l.key, c)
	}
	handoffListeners.mu.Lock()
	list := handoffListeners.byKey[l.key]
	for i, other := range list {
		if other == l {
			handoffListeners.byKey[l.key] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	handoffListeners.mu.Unlock()
	return l.Listener.Close()
}

// takeHandoff gives a connection from the master to a listener of its
// socket; with none (the program closed it), the connection is closed.
func takeHandoff(msg proto.Message, fd int) {
	if fd < 0 {
		return
	}
	f := os.NewFile(uintptr(fd), "handoff")
	c, err := net.FileConn(f) // a duplicate: closing f sends no FIN
	f.Close()
	if err != nil {
		return
	}
	key := handoffKey{msg.Network, msg.Address}
	select {
	case <-disconnected:
		returnHandoff(key, c) // a leaving worker sends it back at once
		return
	default:
	}
	// Looking for the listener and queueing for it go under one lock:
	// a listener made in between would take the queue before c is in it,
	// and c would wait for nobody (handed connections come right after
	// the listen reply, while Listen is making the listener).
	handoffListeners.mu.Lock()
	if list := handoffListeners.byKey[key]; len(list) > 0 {
		l := list[0]
		handoffListeners.mu.Unlock()
		l.deliver(c)
		return
	}
	keep(key, c)
	handoffListeners.mu.Unlock()
}

// keep holds c until the listener for key is made, and closes it if none
// is within handoffClaimTimeout; handoffListeners.mu is held. It runs on
// the channel's reader, as returnPendingHandoffs does, which sends back
// what is kept when the worker is told to leave.
func keep(key handoffKey, c net.Conn) {
	if handoffListeners.pending == nil {
		handoffListeners.pending = map[handoffKey][]net.Conn{}
	}
	handoffListeners.pending[key] = append(handoffListeners.pending[key], c)
	time.AfterFunc(handoffClaimTimeout, func() {
		handoffListeners.mu.Lock()
		list := handoffListeners.pending[key]
		i := slices.Index(list, c)
		if i >= 0 {
			handoffListeners.pending[key] = slices.Delete(list, i, i+1)
		}
		handoffListeners.mu.Unlock()
		if i >= 0 {
			c.Close()
		}
	})
}

// returnPendingHandoffs sends back the connections still waiting for a
// listener when the worker is told to leave.
func returnPendingHandoffs() {
	handoffListeners.mu.Lock()
	pending := handoffListeners.pending
	handoffListeners.pending = nil
	handoffListeners.mu.Unlock()
	for key, list := range pending {
		for _, c := range list {
			returnHandoff(key, c)
		}
	}
}

// returnHandoff sends back to the master a handed connection that this
// worker will not serve because it is leaving (its disconnect message may
// come right after the handoff, or its listener is closed already): the
// master passes it to a worker that is not draining, or closes it. A
// worker that is not leaving closes it, so that a connection cannot go
// back and forth between two programs that stopped listening.
func returnHandoff(key handoffKey, c net.Conn) {
	defer c.Close()
	select {
	case <-disconnected:
	default:
		return
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	if dup, err := dupConn(sc); err == nil {
		sendHandoff(key, dup)
		unix.Close(dup)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// The master's disconnect says whether a worker of a newer generation takes
// handed connections. disconnectMessage is closed once the message has
// arrived; a SIGTERM that the master sends with it may be seen first.
var (
	disconnectOnceMsg sync.Once
	disconnectMessage = make(chan struct{})
	handoffOffered    bool // written before disconnectMessage is closed
)

func noteDisconnect(msg proto.Message) {
	disconnectOnceMsg.Do(func() {
		handoffOffered = msg.Handoff
		close(disconnectMessage)
	})
}

// disconnectWait bounds the wait for the master's disconnect message after
// a stop signal. The master's channel writer sends the signal only after
// the message, so it is already in the channel's buffer and waits only for
// this process's reader to be scheduled (which takes long on a loaded
// machine); a signal from anyone else finds no message and drains as
// before, only this much later.
const disconnectWait = time.Second

// handoffAllowed reports whether the master offered handoff for this drain.
func handoffAllowed() bool {
	if !IsWorker() {
		return false
	}
	t := time.NewTimer(disconnectWait)
	defer t.Stop()
	select {
	case <-disconnectMessage:
		return handoffOffered
	case <-t.C:
		return false
	}
}

// sendHandoff passes fd (a duplicate the caller keeps and closes) to the
// master for the socket key.
func sendHandoff(key handoffKey, fd int) error {
	m, err := channel()
	if err != nil {
		return err
	}
	if m == nil {
		return errors.New("worker: no master")
	}
	return m.conn.Send(proto.Message{Cmd: proto.CmdHandoff, Network: key.network, Address: key.address}, fd)
}

// sendFallbacks reports connections that could not be handed over.
func sendFallbacks(counts map[string]int) {
	for reason, n := range counts {
		if n > 0 {
			send(proto.Message{Cmd: proto.CmdHandoffFallback, Reason: reason, Count: n}, "")
		}
	}
}

// dupConn duplicates the descriptor under c, close-on-exec.
func dupConn(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	dup := -1
	var dupErr error
	if err := rc.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	return dup, dupErr
}
