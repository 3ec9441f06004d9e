// Package lossy is a bounded first-in first-out queue that a producer which
// must never wait (the supervisor loop, a logger) hands work to, and one
// goroutine of its own drains. When the consumer falls behind and the queue
// is full, new items are dropped and counted; the count is delivered in
// order, at the place of the gap, so that the consumer learns exactly how
// much it missed and where.
package lossy

import "sync"

// Queue holds at most its capacity of items, and a marker for each gap
// between them.
type Queue[T any] struct {
	mu     sync.Mutex
	items  []entry[T]
	count  int // items in items, gap markers aside
	limit  int
	closed bool
	wake   chan struct{} // a token when items were added or the queue closed
	done   chan struct{} // closed when the consumer has returned
	start  func()        // starts the consumer, once, at the first item
}

// entry is an item, or a gap of missed items when missed > 0.
type entry[T any] struct {
	item   T
	missed int
}

// New starts a queue of capacity items whose consumer goroutine calls
// deliver for each item and gap for each run of missed items, in order.
func New[T any](capacity int, deliver func(T), gap func(missed int)) *Queue[T] {
	q := &Queue[T]{limit: capacity, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
	if q.count >= q.limit {
		if n := len(q.items); q.items[n-1].missed > 0 {
			q.items[n-1].missed++
			return true, false
		}
		q.items = append(q.items, entry[T]{missed: 1})
		q.signal()
		return true, true
	}
	q.count++
	q.items = append(q.items, entry[T]{item: v})
	q.signal()
	return false, false
}

// Offer queues v only if there is room, and counts
// nothing otherwise: for control items that must not pass for lost data.
func (q *Queue[T]) Offer(v T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.count >= q.limit {
		return false
	}
	q.count++
	q.items = append(q.items, entry[T]{item: v})
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

// Done is closed once the consumer has delivered everything and returned.
func (q *Queue[T]) Done() <-chan struct{} { return q.done }

func (q *Queue[T]) consume(deliver func(T), gap func(int)) {
	defer close(q.done)
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
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
		}
		q.mu.Unlock()
		if e.missed > 0 {
			gap(e.missed)
		} else {
			deliver(e.item)
		}
	}
}
