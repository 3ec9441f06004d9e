// Package lossy is a bounded first-in first-out queue that a producer which
// must never wait (the supervisor loop, a logger) hands work to, and one
// goroutine of its own drains. When the consumer falls behind and the queue
// is full, new items are dropped and counted; the count is delivered in
// order, at the place of the gap, so that the consumer learns exactly how
// much it missed and where.
//
// A producer that may wait a little (a reader of a worker's output, which
// would rather slow its worker than lose its lines) uses PushWithin: it
// waits for room while the consumer moves, and drops only once the
// consumer has stalled.
package lossy

import (
	"sync"
	"time"
)

// Queue holds at most its capacity of items (and, when sized, of bytes),
// and a marker for each gap between them.
type Queue[T any] struct {
	mu       sync.Mutex
	items    []entry[T]
	count    int // items in items, gap markers aside
	limit    int
	bytes    int // the size of the items, when sized
	maxBytes int
	size     func(T) int // nil: the queue is bounded by count only
	closed   bool
	wake     chan struct{} // a token when items were added or the queue closed
	done     chan struct{} // closed when the consumer has returned
	start    func()        // starts the consumer, once, at the first item
	taken    chan struct{} // closed when the consumer next takes an entry; nil until a producer waits
	stalled  bool          // a patient producer saw the consumer take nothing for its patience
	busy     bool          // the consumer is delivering an entry
	idle     chan struct{} // closed when the consumer is next idle with nothing queued; nil until Flush waits
}

// entry is an item, or a gap of missed items when missed > 0.
type entry[T any] struct {
	item   T
	missed int
}

// New starts a queue of capacity items whose consumer goroutine calls
// deliver for each item and gap for each run of missed items, in order.
func New[T any](capacity int, deliver func(T), gap func(missed int)) *Queue[T] {
	return NewSized(capacity, 0, nil, deliver, gap)
}

// NewSized is New for a queue that also holds at most maxBytes of items,
// as measured by size. An item larger than maxBytes is queued only into an
// empty queue.
func NewSized[T any](capacity, maxBytes int, size func(T) int, deliver func(T), gap func(missed int)) *Queue[T] {
	if size == nil {
		maxBytes = 0
	}
	q := &Queue[T]{limit: capacity, maxBytes: maxBytes, size: size, wake: make(chan struct{}, 1), done: make(chan struct{})}
	// A queue that is never used costs no goroutine.
	q.start = sync.OnceFunc(func() { go q.consume(deliver, gap) })
	return q
}

// Push queues v without ever blocking. It reports false when v was dropped
// and starts a gap (the first drop since the queue last had room), so that
// the producer may say once that its consumer is behind.
func (q *Queue[T]) Push(v T) (dropped, newGap bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return true, false
	}
	if !q.fits(v) {
		return true, q.dropLocked()
	}
	q.addLocked(v)
	return false, false
}

// PushWithin queues v, waiting for room while the consumer goes on taking
// items: a slow consumer slows the producer and loses nothing. Once the
// consumer has taken nothing for patience, it counts as stalled and v is
// dropped as Push drops it; so is every item that finds the queue full
// after that, at once, until the consumer takes an item again.
func (q *Queue[T]) PushWithin(v T, patience time.Duration) (dropped, newGap bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		switch {
		case q.closed:
			return true, false
		case q.fits(v):
			q.addLocked(v)
			return false, false
		case q.stalled:
			return true, q.dropLocked()
		}
		if q.taken == nil {
			q.taken = make(chan struct{})
		}
		taken := q.taken
		if timer == nil {
			timer = time.NewTimer(patience)
		} else {
			timer.Reset(patience)
		}
		q.mu.Unlock()
		select {
		case <-taken:
			q.mu.Lock()
		case <-timer.C:
			q.mu.Lock()
			if q.taken == taken { // nothing was taken while we waited
				q.stalled = true
			}
		}
	}
}

// Offer queues v only if there is room, and counts
// nothing otherwise: for control items that must not pass for lost data.
func (q *Queue[T]) Offer(v T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || !q.fits(v) {
		return false
	}
	q.addLocked(v)
	return true
}

// fits reports whether v has room. q.mu is held.
func (q *Queue[T]) fits(v T) bool {
	if q.count >= q.limit {
		return false
	}
	return q.maxBytes <= 0 || q.count == 0 || q.bytes+q.size(v) <= q.maxBytes
}

// addLocked queues v. q.mu is held.
func (q *Queue[T]) addLocked(v T) {
	q.count++
	if q.size != nil {
		q.bytes += q.size(v)
	}
	q.items = append(q.items, entry[T]{item: v})
	q.signal()
}

// dropLocked counts a dropped item and reports whether it starts a gap.
// q.mu is held.
func (q *Queue[T]) dropLocked() (newGap bool) {
	if n := len(q.items); n > 0 && q.items[n-1].missed > 0 {
		q.items[n-1].missed++
		return false
	}
	q.items = append(q.items, entry[T]{missed: 1})
	q.signal()
	return true
}

func (q *Queue[T]) signal() {
	q.start()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Close lets the consumer deliver what is queued, gaps included, and end.
// Items pushed after Close are dropped without a count.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	q.closed = true
	q.signal()
	q.mu.Unlock()
}

// Flush waits until the consumer has delivered everything queued and
// reports true, or gives up after timeout (the consumer is stuck) and
// reports false.
func (q *Queue[T]) Flush(timeout time.Duration) bool {
	q.mu.Lock()
	if len(q.items) == 0 && !q.busy {
		q.mu.Unlock()
		return true
	}
	if q.idle == nil {
		q.idle = make(chan struct{})
	}
	idle := q.idle
	q.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}

// Take removes everything queued and returns the items, which the consumer
// will not deliver, and how many items the gaps among them missed.
func (q *Queue[T]) Take() (items []T, missed int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.items {
		if e.missed > 0 {
			missed += e.missed
		} else {
			items = append(items, e.item)
		}
	}
	q.items, q.count, q.bytes = nil, 0, 0
	return items, missed
}

// Done is closed once the consumer has delivered everything and returned.
func (q *Queue[T]) Done() <-chan struct{} { return q.done }

func (q *Queue[T]) consume(deliver func(T), gap func(int)) {
	defer close(q.done)
	for {
		q.mu.Lock()
		q.busy = false
		if len(q.items) == 0 {
			if q.idle != nil {
				close(q.idle)
				q.idle = nil
			}
			closed := q.closed
			q.mu.Unlock()
			if closed {
				return
			}
			<-q.wake
			continue
		}
		e := q.items[0]
		var zero entry[T]
		q.items[0] = zero // let the garbage collector have it
		q.items = q.items[1:]
		if len(q.items) == 0 {
			q.items = nil // do not keep a grown backing array for ever
		}
		if e.missed == 0 {
			q.count--
			if q.size != nil {
				q.bytes -= q.size(e.item)
			}
		}
		q.stalled = false
		q.busy = true
		if q.taken != nil {
			close(q.taken)
			q.taken = nil
		}
		q.mu.Unlock()
		if e.missed > 0 {
			gap(e.missed)
		} else {
			deliver(e.item)
		}
	}
}
