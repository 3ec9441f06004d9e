package recluster

import (
	"slices"
	"testing"

	"github.com/recluster-go/recluster/internal/proto"
)

const fakeKey = "tcp 127.0.0.1:8080"

func (h *harness) markTakesHandoffs(ws ...*Worker) {
	for _, w := range ws {
		w.handoffKeys = map[string]bool{fakeKey: true}
	}
}

func handoffMsg() proto.Message {
	return proto.Message{Cmd: proto.CmdHandoff, Network: "tcp", Address: "127.0.0.1:8080"}
}

func lastSent(w *Worker, cmd string) (proto.Message, bool) {
	sent := proc(w).sent
	for i := len(sent) - 1; i >= 0; i-- {
		if sent[i].Cmd == cmd {
			return sent[i], true
		}
	}
	return proto.Message{}, false
}

// A connection from a draining worker goes to the new worker of its slot;
// the master keeps no copy, and closes what no worker takes.
func TestFakeHandoffRoutesOrCloses(t *testing.T) {
	h := newHarness(t, Options{Workers: 2})
	h.sys.stubborn = true // the old workers stay while they drain
	h.runReady()
	old0, old1 := h.active(0), h.active(1)
	h.markTakesHandoffs(old0, old1)
	h.reload()
	new0, new1 := h.one(0, 2), h.one(1, 2)
	h.markTakesHandoffs(new0, new1)
	h.readyGen(2)
	if m, ok := lastSent(old0, proto.CmdDisconnect); !ok || !m.Handoff {
		t.Fatalf("the old worker's disconnect is %+v, want one that offers handoff", m)
	}

	proc(old1).hooks.message(handoffMsg(), 50)
	h.settle()
	if _, ok := lastSent(new1, proto.CmdHandoff); !ok {
		t.Fatal("the connection did not go to the new worker of the sender's slot")
	}
	if _, ok := lastSent(new0, proto.CmdHandoff); ok {
		t.Fatal("the connection went to another slot's worker")
	}

	// A socket no worker listens on: closed at once.
	other := handoffMsg()
	other.Address = "127.0.0.1:9090"
	proc(old0).hooks.message(other, 51)
	// The new worker's queue is full: closed too.
	h.sys.refuseHandoffs = true
	proc(old0).hooks.message(handoffMsg(), 52)
	h.settle()
	h.sys.refuseHandoffs = false

	// A worker that has exited still has its last handoffs routed.
	proc(old0).exit(0)
	h.settle()
	proc(old0).hooks.message(handoffMsg(), 53)
	h.settle()
	if _, ok := lastSent(new0, proto.CmdHandoff); !ok {
		t.Fatal("a connection handed by a worker that has exited since was dropped")
	}

	if !slices.Equal(h.sys.closedFDs, []int{50, 51, 52, 53}) {
		t.Fatalf("the master closed %v, want its copy of every handed descriptor: 50, 51, 52, 53", h.sys.closedFDs)
	}
	st := h.s.status()
	if st.Handoffs["handed"] != 2 || st.Handoffs["no_worker"] != 1 || st.Handoffs["send_failed"] != 1 {
		t.Fatalf("handoffs %v, want 2 handed, 1 no_worker, 1 send_failed", st.Handoffs)
	}

	// Fallbacks reported by a worker are counted by reason.
	proc(old1).hooks.message(proto.Message{Cmd: proto.CmdHandoffFallback, Reason: "tls", Count: 3}, -1)
	h.settle()
	if got := h.s.status().HandoffFallbacks["tls"]; got != 3 {
		t.Fatalf("tls fallbacks %d, want 3", got)
	}
}

// With no worker to take them (terminate), or with the option off, a
// worker is not offered handoff and drains the old way.
func TestFakeHandoffNotOfferedWithoutATaker(t *testing.T) {
	h := newHarness(t, Options{Workers: 1})
	h.sys.stubborn = true
	h.runReady()
	w := h.active(0)
	h.markTakesHandoffs(w)
	h.s.terminate(make(chan error, 1))
	h.settle()
	if m, ok := lastSent(w, proto.CmdDisconnect); !ok || m.Handoff {
		t.Fatalf("disconnect on terminate is %+v, want one without handoff", m)
	}
	if got := h.s.status().HandoffFallbacks["no_new_worker"]; got != 1 {
		t.Fatalf("no_new_worker %d, want 1", got)
	}
}
