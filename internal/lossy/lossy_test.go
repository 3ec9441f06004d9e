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
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		taken := q.count == 0
		q.mu.Unlock()
		if taken {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the consumer never took the first item")
		}
		time.Sleep(time.Millisecond)
	}
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
