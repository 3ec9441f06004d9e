package recluster

// treeRSS reads, for the sweep, the resident memory of every worker that
// MaxRSS may recycle (active, not already being replaced), each summed
// over its process tree; nil when MaxRSS is off or a reload is in
// progress.
func (s *supervisor) treeRSS() map[*Worker]int64 {
	if s.opts.MaxRSS <= 0 || s.reload != nil {
		return nil
	}
	var ws []*Worker
	var pids []int
	for w := range s.workers {
		if w.state == WorkerActive && !w.retiring && !w.killed && w.proc != nil {
			ws, pids = append(ws, w), append(pids, w.pid)
		}
	}
	if len(ws) == 0 {
		return nil
	}
	rss := map[*Worker]int64{}
	for i, u := range s.sys.usage(pids) {
		if u.ok {
			rss[ws[i]] = u.rssBytes
		}
	}
	return rss
}
