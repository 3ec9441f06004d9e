package loadgen

import (
	"net/http"
	"slices"
	"sync"
	"time"
)

// Response headers the load generator counts by.
const (
	// HeaderWorkerID identifies the worker that produced a response;
	// responses are counted per distinct value (Result.Workers).
	HeaderWorkerID = "X-Worker-Id"
	// HeaderWorkerPID optionally carries the worker's process id; the
	// distinct values seen are listed per worker.
	HeaderWorkerPID = "X-Worker-Pid"
)

// maxPIDsPerWorker bounds the process ids remembered per worker id.
const maxPIDsPerWorker = 16

// shard accumulates the outcomes of a subset of the clients. Clients share
// a few shards rather than one global lock, and the shards are merged
// into a Result at the end.
type shard struct {
	mu          sync.Mutex
	maxExamples int

	hist       histogram
	successes  int64
	failures   [len(Kinds)]int64
	examples   [len(Kinds)][]ErrorExample
	aborted    int64
	conns      int64
	reconnects int64
	bodyBytes  int64
	status     map[int]int64
	workers    map[string]*workerAgg
	noWorkerID int64
}

// workerAgg is the per-worker-id tally of a shard.
type workerAgg struct {
	responses int64
	pids      []string
}

func newShard(maxExamples int) *shard {
	return &shard{
		maxExamples: maxExamples,
		status:      make(map[int]int64),
		workers:     make(map[string]*workerAgg),
	}
}

func (s *shard) addSuccess(latency time.Duration) {
	s.mu.Lock()
	s.successes++
	s.hist.record(latency)
	s.mu.Unlock()
}

func (s *shard) addFailure(k Kind, at time.Duration, msg string, reused bool) {
	i := k.index()
	s.mu.Lock()
	s.failures[i]++
	if len(s.examples[i]) < s.maxExamples {
		s.examples[i] = append(s.examples[i], ErrorExample{At: at, Error: msg, Reused: reused})
	}
	s.mu.Unlock()
}

func (s *shard) addResponse(resp *http.Response, bodyBytes int64) {
	id := resp.Header.Get(HeaderWorkerID)
	pid := resp.Header.Get(HeaderWorkerPID)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[resp.StatusCode]++
	s.bodyBytes += bodyBytes
	if id == "" {
		s.noWorkerID++
		return
	}
	w := s.workers[id]
	if w == nil {
		w = &workerAgg{}
		s.workers[id] = w
	}
	w.responses++
	if pid != "" && len(w.pids) < maxPIDsPerWorker && !slices.Contains(w.pids, pid) {
		w.pids = append(w.pids, pid)
	}
}

func (s *shard) addAborted() {
	s.mu.Lock()
	s.aborted++
	s.mu.Unlock()
}

func (s *shard) addConn() {
	s.mu.Lock()
	s.conns++
	s.mu.Unlock()
}

func (s *shard) addReconnect() {
	s.mu.Lock()
	s.reconnects++
	s.mu.Unlock()
}
