package recluster

import (
	"context"
	"sync"

	"github.com/recluster-go/recluster/internal/lossy"
)

// Bounds of a follower's queue: a follower (recluster logs -f) that reads
// more slowly than the workers write misses lines, and is told how many.
const (
	followerQueueLines = 4096
	followerQueueBytes = 1 << 20
)

// outputRing keeps the most recent lines of the workers' output, at most
// maxLines of them and maxBytes of their size, and hands new lines to its
// followers. The readers of every worker add to it, so it has a lock of
// its own; nothing in it waits with the lock held.
type outputRing struct {
	mu                 sync.Mutex
	lines              []OutputLine // a circle: the oldest at head
	head, count, bytes int
	maxBytes           int
	followers          map[*outputFollower]struct{}
}

type outputFollower struct {
	slot  int // < 0: every slot
	queue *lossy.Queue[OutputLine]
}

func newOutputRing(maxLines, maxBytes int) *outputRing {
	if maxLines <= 0 {
		maxLines = DefaultOutputHistoryLines
	}
	if maxBytes <= 0 {
		maxBytes = DefaultOutputHistoryBytes
	}
	return &outputRing{lines: make([]OutputLine, maxLines), maxBytes: maxBytes, followers: map[*outputFollower]struct{}{}}
}

func (r *outputRing) add(l OutputLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.count > 0 && (r.count == len(r.lines) || r.bytes+l.size() > r.maxBytes) {
		r.bytes -= r.lines[r.head].size()
		r.lines[r.head] = OutputLine{}
		r.head = (r.head + 1) % len(r.lines)
		r.count--
	}
	r.lines[(r.head+r.count)%len(r.lines)] = l
	r.count++
	r.bytes += l.size()
	for f := range r.followers {
		if f.slot < 0 || f.slot == l.Slot {
			f.queue.Push(l)
		}
	}
}

// recent returns up to n of the newest lines of slot (every slot when
// slot < 0; all kept lines when n < 0), oldest first.
func (r *outputRing) recent(slot, n int) []OutputLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recentLocked(slot, n)
}

// recentLocked is recent with r.mu held.
func (r *outputRing) recentLocked(slot, n int) []OutputLine {
	if n < 0 {
		n = r.count
	}
	var picked []OutputLine
	for i := r.count - 1; i >= 0 && len(picked) < n; i-- {
		if l := r.lines[(r.head+i)%len(r.lines)]; slot < 0 || l.Slot == slot {
			picked = append(picked, l)
		}
	}
	for i, j := 0, len(picked)-1; i < j; i, j = i+1, j-1 {
		picked[i], picked[j] = picked[j], picked[i]
	}
	return picked
}

// follow is Cluster.FollowOutput. The recent lines and the follower's
// registration are taken together, so that no line is missed or seen
// twice between them.
func (r *outputRing) follow(ctx context.Context, slot, history int, deliver func(OutputLine), missed func(int)) {
	f := &outputFollower{slot: slot}
	f.queue = lossy.NewSized(followerQueueLines, followerQueueBytes, OutputLine.size, func(l OutputLine) {
		if ctx.Err() == nil {
			deliver(l)
		}
	}, func(n int) {
		if ctx.Err() == nil {
			missed(n)
		}
	})
	r.mu.Lock()
	for _, l := range r.recentLocked(slot, history) {
		f.queue.Push(l)
	}
	r.followers[f] = struct{}{}
	r.mu.Unlock()

	<-ctx.Done()
	r.mu.Lock()
	delete(r.followers, f)
	r.mu.Unlock()
	f.queue.Close()
	<-f.queue.Done()
}
