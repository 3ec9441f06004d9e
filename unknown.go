package recluster

import "time"

// unknownReportEvery is how often, at most, the count of a worker's unknown
// commands is logged while they keep coming.
const unknownReportEvery = 10 * time.Second

// unknownCommands rate-limits the log of the commands a worker sends that
// the master does not act on: one noisy worker must not multiply the
// master's log volume (each still reaches OnEvent as an EventMessage).
type unknownCommands struct {
	unlogged int       // received since the last line about them
	total    int       // received in all
	loggedAt time.Time // of the last line about them
}

// noteUnknown logs the first unknown command of w, then a count at most
// every unknownReportEvery.
func (s *supervisor) noteUnknown(w *Worker, cmd string) {
	u := &w.unknown
	u.total++
	if u.total == 1 {
		u.loggedAt = s.sys.now()
		s.log.Warn("recluster: a worker sent a command the master does not know; it is ignored, and more from this worker are counted, not logged one by one",
			"worker", w.slot, "pid", w.pid, "command", cmd)
		return
	}
	u.unlogged++
	if s.sys.now().Sub(u.loggedAt) >= unknownReportEvery {
		s.reportUnknown(w)
	}
}

// reportUnknown logs how many unknown commands w sent since the last line
// about them, if any; the supervisor calls it when w exits too.
func (s *supervisor) reportUnknown(w *Worker) {
	u := &w.unknown
	if u.unlogged == 0 {
		return
	}
	s.log.Warn("recluster: a worker sent more commands the master does not know",
		"worker", w.slot, "pid", w.pid, "more", u.unlogged, "total", u.total)
	u.unlogged, u.loggedAt = 0, s.sys.now()
}
