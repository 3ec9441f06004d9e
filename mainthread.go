package recluster

import (
	"errors"
	"runtime"
	"sync/atomic"
)

// The kernel ties a worker's parent-death signal to the thread that
// forked it, and execve ends every thread but the one that calls it. An
// upgrade in place (Cluster.Upgrade) therefore keeps its workers only if
// every one of them was forked by the thread that calls execve; after the
// exec that thread is the process's main thread, so the rule that holds
// across any number of upgrades is: fork and exec from the main thread
// only. ServeMainThread lends the main goroutine, locked to the main
// thread, to the cluster for that.

// mainThreadCalls carries work to the main thread while ServeMainThread
// serves; mainThreadDone is closed when it stops.
var (
	mainThreadCalls = make(chan func())
	mainThreadDone  = make(chan struct{})
	mainThreadOn    atomic.Bool
	// forkedElsewhere is set once a worker was forked off the main thread:
	// an exec would then kill it.
	forkedElsewhere atomic.Bool
)

// ServeMainThread runs main on a goroutine of its own and, until main
// returns, serves the cluster's forks and an upgrade's exec on the calling
// goroutine, which must be the program's main goroutine on the main
// thread: call it from func main, with runtime.LockOSThread called in an
// init function of package main, which keeps the main goroutine on the
// main thread. When it is not on the main thread, it only runs main, and
// Cluster.Upgrade refuses to run (the forks then come from a thread of
// their own, as they do in any program that does not call it).
func ServeMainThread(main func()) {
	runtime.LockOSThread()
	if !onTheMainThread() || !mainThreadOn.CompareAndSwap(false, true) {
		runtime.UnlockOSThread()
		main()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		main()
	}()
	for {
		select {
		case f := <-mainThreadCalls:
			f()
		case <-done:
			close(mainThreadDone)
			return
		}
	}
}

// errNotMainThread says why an upgrade cannot keep the workers.
var errNotMainThread = errors.New("recluster: cannot upgrade in place: the workers were not all forked by the main thread, and an exec would kill them (the parent-death signal belongs to the forking thread); run the master's main function through recluster.ServeMainThread, with runtime.LockOSThread in an init function of package main")

// onMainThread runs f on the main thread and reports false when
// ServeMainThread does not serve (or no longer does).
func onMainThread(f func()) bool {
	if !mainThreadOn.Load() {
		return false
	}
	finished := make(chan struct{})
	select {
	case mainThreadCalls <- func() { f(); close(finished) }:
		<-finished
		return true
	case <-mainThreadDone:
		return false
	}
}
