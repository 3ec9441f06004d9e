package recluster

import (
	"maps"

	"github.com/recluster-go/recluster/internal/proto"
)

// Connection handoff, the master's part: a draining worker sends each idle
// HTTP/1.1 connection (its descriptor) on its channel, and the master
// passes it on at once to a ready worker of the active generation that
// listens on the same socket and said it takes handed connections (the
// "handoff" flag of its listen request), preferring the sender's slot. The
// master holds such a descriptor only while it routes it: when no worker
// can take it, it is closed on the spot, so none is ever leaked. A worker
// learns from its disconnect message whether handoff is on for its drain;
// it is off when no worker would take the connections (terminate, scale
// down, an aborted reload) and with Options.DisableHandoff, and then the
// worker drains as before. docs/protocol.md, "Connection handoff", has the
// exchange; worker/handoffconn.go the worker's side of the race.

// handoffState counts what happened to handed connections, and knows
// where some may still be in transit.
type handoffState struct {
	results   map[string]int // handed, no_worker, send_failed
	fallbacks map[string]int // by reason, as the workers report them, and no_new_worker
	// reading are the exited workers whose channels are still read to
	// their end (release): connections they handed over may be there.
	reading map[*Worker]bool
}

// readToEnd follows the reading of w's channel to its end, after w has
// been released; an upgrade in place waits for it (upgrade.go).
func (s *supervisor) readToEnd(w *Worker) {
	drained := w.proc.drained()
	select {
	case <-drained:
		return
	default:
	}
	if s.handoff.reading == nil {
		s.handoff.reading = map[*Worker]bool{}
	}
	s.handoff.reading[w] = true
	go func() {
		<-drained
		s.post(func(s *supervisor) {
			delete(s.handoff.reading, w)
			s.upgradeAfterTransit()
		})
	}()
}

func handoffKey(network, address string) string { return network + " " + address }

func (h *handoffState) count(m *map[string]int, key string, n int) {
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[key] += n
}

// noteHandoffListener records that w takes handed connections for sock,
// which it got with a listen request that said so.
func (s *supervisor) noteHandoffListener(w *Worker, m proto.Message, sock *ownedSocket) {
	if m.Handoff {
		s.takesHandoffs(w, handoffKey(sock.addr.Network(), sock.addr.String()))
	}
}

// noteHandoffInherited records that w takes handed connections on a socket
// it inherited at start (the systemd way), which its listening message
// names as its own getsockname says, as the master's registry does.
func (s *supervisor) noteHandoffInherited(w *Worker, m proto.Message) {
	if !m.Handoff || m.Address == "" {
		return
	}
	network := m.Network
	if network == "" {
		network = "tcp"
	}
	s.takesHandoffs(w, handoffKey(network, m.Address))
}

func (s *supervisor) takesHandoffs(w *Worker, key string) {
	if s.opts.DisableHandoff {
		return
	}
	if w.handoffKeys == nil {
		w.handoffKeys = map[string]bool{}
	}
	w.handoffKeys[key] = true
}

// disconnectMessage tells w to go, and whether it may hand its idle
// connections over.
func (s *supervisor) disconnectMessage(w *Worker) proto.Message {
	m := proto.Message{Cmd: proto.CmdDisconnect}
	if len(w.handoffKeys) == 0 {
		return m // a worker that takes no connections sends none either
	}
	for key := range w.handoffKeys {
		if s.handoffTarget(w, key) != nil {
			m.Handoff = true
			return m
		}
	}
	s.handoff.count(&s.handoff.fallbacks, "no_new_worker", 1)
	return m
}

// handoffTarget picks who takes a connection from a worker: a ready worker
// of the active generation (standby ones included: while a reload commits,
// a slot's old worker is told to go just before its successor is marked
// active) that listens on key, the sender's slot first.
func (s *supervisor) handoffTarget(from *Worker, key string) *Worker {
	if s.phase != PhaseRunning || from.slot >= s.slots || from.gen > s.gen {
		return nil
	}
	var best *Worker
	for w := range s.workers {
		if w == from || w.proc == nil || w.killed || w.retiring || w.gen > s.gen || !w.handoffKeys[key] {
			continue
		}
		if w.state != WorkerActive && w.state != WorkerStandby {
			continue
		}
		if best == nil || (w.slot == from.slot && best.slot != from.slot) ||
			(w.slot == best.slot && w.pid < best.pid) { // a stable choice among equals
			best = w
		}
	}
	return best
}

// onHandoffMessage handles the handoff messages from w, which may have
// exited already (its channel is read to the end: release); it reports
// false for any other message.
func (s *supervisor) onHandoffMessage(w *Worker, m proto.Message, fd int) bool {
	switch {
	case m.Cmd == proto.CmdHandoff && fd >= 0:
		s.routeHandoff(w, m, fd)
	case m.Cmd == proto.CmdHandoffFallback && m.Reason != "" && m.Count > 0:
		s.handoff.count(&s.handoff.fallbacks, m.Reason, m.Count)
	default:
		return false
	}
	return true
}

// routeHandoff passes a connection on, or closes it. The master's own copy
// is closed here in every case: the target's writer holds a duplicate
// until the kernel has the descriptor in flight to the worker, and closes
// it if the worker does not read its channel within the channel's write
// timeout, so no connection waits on the master for longer than that.
func (s *supervisor) routeHandoff(from *Worker, m proto.Message, fd int) {
	defer s.sys.closeFD(fd)
	to := s.handoffTarget(from, handoffKey(m.Network, m.Address))
	if to == nil {
		s.handoff.count(&s.handoff.results, "no_worker", 1)
		return
	}
	if !to.proc.handOff(proto.Message{Cmd: proto.CmdHandoff, Network: m.Network, Address: m.Address}, fd) {
		s.handoff.count(&s.handoff.results, "send_failed", 1)
	}
	// A queued one is counted once its write is done (onHandoffWritten).
}

// onHandoffWritten counts a handed connection once the target's writer has
// written it to the worker's channel, or has closed it because the worker
// did not read within the channel's write timeout, or had exited.
func (s *supervisor) onHandoffWritten(delivered bool) {
	if delivered {
		s.handoff.count(&s.handoff.results, "handed", 1)
	} else {
		s.handoff.count(&s.handoff.results, "send_failed", 1)
	}
}

func (s *supervisor) handoffCounts() (results, fallbacks map[string]int) {
	return maps.Clone(s.handoff.results), maps.Clone(s.handoff.fallbacks)
}
