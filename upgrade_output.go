package recluster

import "fmt"

// The output relay across an upgrade in place: the workers' pipes travel
// with their workers (stateWorker.Outputs); what the relay itself holds
// travels as a stateRelay.

// takeState is what the relay holds once every reader has paused: the
// recent lines and its counts, and the lines its sink has not written.
// It waits up to outputPatience for the sink to write them; those a stuck
// sink leaves are taken along, for the new master to write.
func (r *outputRelay) takeState() *stateRelay {
	st := &stateRelay{History: r.history.recent(-1, -1), Dropped: r.dropped.Load()}
	if !r.queue.Flush(outputPatience) {
		st.Queued, st.Missed = r.queue.Take()
	}
	return st
}

// giveBack queues again what takeState took, when the upgrade failed.
func (r *outputRelay) giveBack(st *stateRelay) {
	if st.Missed > 0 {
		fmt.Fprintln(r.stderr, OutputDroppedMessage, st.Missed)
	}
	for _, l := range st.Queued {
		r.queue.Push(l)
	}
}

// adoptState takes over, in the new master, what the relay of the master
// before the upgrade held.
func (r *outputRelay) adoptState(st *stateRelay) {
	for _, l := range st.History {
		r.history.add(l)
	}
	r.dropped.Add(st.Dropped)
	r.giveBack(st)
}
