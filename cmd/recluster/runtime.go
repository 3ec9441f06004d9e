package main

import (
	"runtime"
	"runtime/debug"
)

// masterGCPercent is the collector's target for a `recluster run` master
// whose GOGC is not set. The master's live heap is about 1 MB and flat
// (docs/benchmarks.md §8), so Go's default of 100, with its 4 MB minimum
// goal, lets the heap grow to four times what it holds between
// collections: most of the master's private memory. At 40 the minimum goal
// is 1.6 MB; each collection of a 1 MB heap costs well under a millisecond,
// and the master allocates about 0.6 MB per reload. containerd's shim, the
// same kind of per-workload Go supervisor, makes the same trade with the
// same value.
const masterGCPercent = 40

// masterMaxProcs caps the Ps of a master whose GOMAXPROCS is not set. Its
// work is one event loop, a locked fork thread and blocking reads of pipes
// and sockets, none of which run in parallel to any gain; every P beyond
// that costs a per-P allocation cache, a collector worker and a thread, so
// a master on a 64-core host would pay for 64 of them.
const masterMaxProcs = 2

// tuneMasterRuntime sets the master's collector target and Ps, each only
// when the operator did not set it through its Go variable: GOGC=100 or
// GOMAXPROCS=8 in the environment wins. It is not applied to the library:
// a master built on package recluster is the user's program, with the
// user's settings.
func tuneMasterRuntime(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(masterGCPercent)
	}
	if getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) > masterMaxProcs {
		runtime.GOMAXPROCS(masterMaxProcs)
	}
}

// returnMemory gives the operating system back the heap that the master
// holds free, at the two moments after which it idles, perhaps for days:
// its first generation is up, or a reload's old generation has gone. A
// start or a reload allocates for every worker (buffers, messages, /proc
// reads) and frees most of it, and the runtime's background scavenger
// would return those pages only slowly: a 16-worker master held 4.8 MB
// of private memory 10 s after its start without this, 4.2 MB with it. It costs one
// collection of a heap of a few megabytes per start or reload.
// containerd's shim does the same every 30 s.
var returnMemory = debug.FreeOSMemory
