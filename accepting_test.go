package recluster

import (
	"testing"
	"time"
)

// A worker seen accepting while its channel still holds a message (the
// worker package's "listening" with handoff, which it sends before it
// accepts) is not marked ready until the supervisor has taken that
// message; until then only the channel is asked, not /proc.
func TestAcceptWatchWaitsForTheChannelBeforeReady(t *testing.T) {
	posted := make(chan func(*supervisor), 1)
	looks := 0
	a := &acceptWatcher{
		post: func(f func(*supervisor)) { posted <- f },
		accepting: func(int, map[uint64]bool, *procTree, time.Time) (bool, error) {
			looks++
			return true, nil
		},
	}
	unread := true
	now := time.Now()
	aw := &acceptWatch{pid: 1, inodes: map[uint64]bool{1: true}, stop: make(chan struct{}),
		unhandled: func() bool { return unread }, delay: acceptPollFirst, deadline: now.Add(time.Minute)}
	var tree procTree
	for i := range 3 {
		if a.look(aw, now.Add(time.Duration(i)*acceptPollFirst), &tree) {
			t.Fatal("the watch ended while the channel held an unread message")
		}
	}
	select {
	case <-posted:
		t.Fatal("the worker was marked ready before the supervisor read its channel")
	default:
	}
	if looks != 1 {
		t.Fatalf("/proc was walked %d times, want once: after the accept is seen only the channel is asked", looks)
	}
	unread = false
	if !a.look(aw, now.Add(time.Second), &tree) {
		t.Fatal("the watch goes on once the channel is read")
	}
	select {
	case <-posted:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker was never marked ready")
	}
}

// The gate has a bound: a channel never read (a wedged supervisor) ends the
// watch at the ready timeout, which then tells the rest.
func TestAcceptWatchEndsAtTheDeadline(t *testing.T) {
	a := &acceptWatcher{
		post:      func(func(*supervisor)) { t.Error("marked ready with its channel unread") },
		accepting: func(int, map[uint64]bool, *procTree, time.Time) (bool, error) { return true, nil },
	}
	now := time.Now()
	aw := &acceptWatch{pid: 1, inodes: map[uint64]bool{1: true}, stop: make(chan struct{}),
		unhandled: func() bool { return true }, delay: acceptPollFirst, deadline: now.Add(time.Second)}
	var tree procTree
	if a.look(aw, now, &tree) {
		t.Fatal("the watch ended before its deadline")
	}
	if !a.look(aw, now.Add(2*time.Second), &tree) {
		t.Fatal("the watch goes on past its deadline")
	}
}
