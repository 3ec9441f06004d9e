package lossy

import (
	"slices"
	"testing"
	"time"
)

// record is what a consumer saw: an item, or a gap as its negated size.
func collect(t *testing.T, capacity int, gate chan struct{}) (*Queue[int], func() []int) {
	t.Helper()
	var got []int
	q := New(capacity, func(v int) {
		<-gate
		got = append(got, v)
	}, func(missed int) { got = append(got, -missed) })
	return q, func() []int {
		select {
		case <-q.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the consumer did not finish")
		}
		return got
	}
}

func TestDeliversInOrderWhenNotFull(t *testing.T) {
	gate := make(chan struct{})
	close(gate)
	q, result := collect(t, 4, gate)
	for i := 1; i <= 3; i++ {
		if dropped, _ := q.Push(i); dropped {
			t.Fatalf("item %d dropped with room in the queue", i)
		}
	}
	q.Close()
	if got := result(); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("delivered %v, want [1 2 3]", got)
	}
}

func TestGapIsCountedWhereItHappened(t *testing.T) {
	gate := make(chan struct{})
	q, result := collect(t, 2, gate)
	q.Push(1) // taken by the consumer, which then waits at the gate
	waitTaken(t, q)
	q.Push(2)
	q.Push(3)
	gaps := 0
	for i := 4; i <= 8; i++ {
		dropped, newGap := q.Push(i)
		if !dropped {
			t.Fatalf("item %d queued in a full queue", i)
		}
		if newGap {
			gaps++
		}
	}
	if gaps != 1 {
		t.Fatalf("%d gaps reported for one run of drops", gaps)
	}
	gate <- struct{}{} // 1 delivered: room for one more
	gate <- struct{}{} // 2 delivered
	q.Push(9)
	close(gate)
	q.Close()
	want := []int{1, 2, 3, -5, 9}
	if got := result(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v (negative: a gap of that many)", got, want)
	}
}

func TestSizedQueueIsBoundedByBytes(t *testing.T) {
	gate := make(chan struct{})
	var got []int
	q := NewSized(100, 10, func(v int) int { return v }, func(v int) {
		<-gate
		got = append(got, v)
	}, func(missed int) { got = append(got, -missed) })
	q.Push(1) // taken by the consumer, which waits at the gate
	waitTaken(t, q)
	for _, v := range []int{4, 6} { // 10 bytes: full
		if dropped, _ := q.Push(v); dropped {
			t.Fatalf("item %d dropped with room for its bytes", v)
		}
	}
	if dropped, _ := q.Push(1); !dropped {
		t.Fatal("an item queued past the byte bound")
	}
	close(gate)
	q.Close()
	<-q.Done()
	if want := []int{1, 4, 6, -1}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

// A patient producer loses nothing to a consumer that is slow but moves.
func TestPushWithinWaitsForAMovingConsumer(t *testing.T) {
	var got []int
	q := New(2, func(v int) {
		time.Sleep(time.Millisecond)
		got = append(got, v)
	}, func(missed int) { got = append(got, -missed) })
	for i := 1; i <= 50; i++ {
		if dropped, _ := q.PushWithin(i, 10*time.Second); dropped {
			t.Fatalf("item %d dropped though the consumer moves", i)
		}
	}
	q.Close()
	<-q.Done()
	if len(got) != 50 || got[0] != 1 || got[49] != 50 {
		t.Fatalf("delivered %v, want 1 to 50", got)
	}
}

// Once the consumer has stalled for the producer's patience, items are
// dropped at once, and patience applies again after the consumer moves.
func TestPushWithinDropsForAStalledConsumer(t *testing.T) {
	gate := make(chan struct{})
	var got []int
	q := New(1, func(v int) {
		<-gate
		got = append(got, v)
	}, func(missed int) { got = append(got, -missed) })
	q.PushWithin(1, time.Second) // taken, then stuck at the gate
	q.PushWithin(2, time.Second) // waits in the queue
	start := time.Now()
	if dropped, newGap := q.PushWithin(3, 50*time.Millisecond); !dropped || !newGap {
		t.Fatalf("item 3 not dropped (%v) or no new gap (%v) for a stalled consumer", dropped, newGap)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("item 3 dropped after %v, before the producer's patience", waited)
	}
	start = time.Now()
	if dropped, _ := q.PushWithin(4, 10*time.Second); !dropped {
		t.Fatal("item 4 queued into a full queue")
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("item 4 waited %v for a consumer known to be stalled", waited)
	}
	close(gate)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		q.mu.Lock()
		stalled := q.stalled
		q.mu.Unlock()
		if !stalled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the consumer, let go, never took an item")
		}
	}
	if dropped, _ := q.PushWithin(5, 10*time.Second); dropped {
		t.Fatal("item 5 dropped though the consumer moves again")
	}
	q.Close()
	<-q.Done()
	if want := []int{1, 2, -2, 5}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

// Flush waits for the last delivery to end, not only for the queue to be
// empty; against a stuck consumer it gives up, and Take then has the rest.
func TestFlushAndTake(t *testing.T) {
	gate, delivering := make(chan struct{}), make(chan int, 8)
	var got []int
	q := New(8, func(v int) {
		delivering <- v
		<-gate
		got = append(got, v)
	}, func(int) {})
	if !q.Flush(time.Millisecond) {
		t.Fatal("Flush of an unused queue failed")
	}
	for i := 1; i <= 3; i++ {
		q.Push(i)
	}
	if v := <-delivering; v != 1 {
		t.Fatalf("first delivery %d, want 1", v)
	}
	if q.Flush(20 * time.Millisecond) {
		t.Fatal("Flush succeeded while the consumer was stuck")
	}
	// The consumer is stuck delivering item 1; 2 and 3 are taken.
	if items, missed := q.Take(); !slices.Equal(items, []int{2, 3}) || missed != 0 {
		t.Fatalf("Take = %v, %d missed; want [2 3], 0", items, missed)
	}
	flushed := make(chan bool)
	go func() { flushed <- q.Flush(10 * time.Second) }()
	close(gate) // item 1 is delivered; the queue is then idle
	if !<-flushed {
		t.Fatal("Flush did not see the consumer go idle")
	}
	q.Close()
	<-q.Done()
	if !slices.Equal(got, []int{1}) {
		t.Fatalf("delivered %v, want [1]", got)
	}
}

// waitTaken waits until the consumer has taken everything queued, so that
// what is pushed next fills the queue and nothing else.
func waitTaken[T any](t *testing.T, q *Queue[T]) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		taken := q.count == 0
		q.mu.Unlock()
		if taken {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the consumer never took the first item")
		}
		time.Sleep(time.Millisecond)
	}
}
