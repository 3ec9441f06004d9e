package recluster

import (
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
)

// system is everything the supervisor asks of the operating system, so
// that its decisions can be driven and checked without processes (the
// tests give it a fake). The real one, osSystem, is spread over the files
// of each concern: spawn.go (starting a worker), reap.go (exits),
// procstat_*.go (process statistics).
//
// Every callback that a system or a process makes (a start finished, a
// message, an exit, a timer) comes from a goroutine of its own; the
// supervisor posts it into its loop.
type system interface {
	now() time.Time
	// afterFunc calls f once d has passed, unless the timer is stopped.
	afterFunc(d time.Duration, f func()) timer
	// prepare readies what every worker needs (the account they run as,
	// a directory for notify sockets, the watch for exits); cleanup undoes
	// it once the cluster has stopped.
	prepare() error
	cleanup()
	// start starts a worker as spec says, off the caller's goroutine: the
	// fork must not stall the supervisor. It reports through hooks.
	start(spec workerSpec, hooks workerHooks)
	// usage reads the resident memory and CPU time of each pid's whole
	// process tree (the worker and its descendants), in one pass.
	usage(pids []int) []procFigures
	// closeFD closes a descriptor a worker sent that nobody takes.
	closeFD(fd int)
}

// procFigures are a worker's resource figures, summed over its process
// tree; ok is false when they could not be read.
type procFigures struct {
	rssBytes int64
	cpu      time.Duration
	ok       bool
}

// timer is a scheduled callback; *time.Timer is one.
type timer interface{ Stop() bool }

// process is the supervisor's handle on a started worker process. Its
// methods never block the caller for long.
type process interface {
	pid() int
	// send queues m (with fd attached when fd >= 0; the process keeps a
	// duplicate, so the caller keeps its own) for the worker's channel.
	send(m proto.Message, fd int)
	// handOff queues a handed connection (fd, of which the process keeps
	// a duplicate) for the worker, apart from what send queues, and
	// reports whether it was queued.
	handOff(m proto.Message, fd int) bool
	// signal sends sig to the worker process.
	signal(sig syscall.Signal)
	// kill sends SIGKILL to the worker and its process group.
	kill()
	// release lets go of the channel and the notify socket after the
	// worker has exited, and kills what it left in its process group.
	release()
	// drained, after release, is closed once what the worker sent has
	// been read to its end: its channel (connections it handed over may
	// be in transit there) and its output.
	drained() <-chan struct{}
	// programFile is the program file as it was when the worker was
	// started with passed sockets; the zero programFile when unknown.
	programFile() programFile
	// startedDirectly reports whether it was executed without the exec
	// trampoline, so without LISTEN_PID, on the strength of a declaration
	// (workerSpec.direct).
	startedDirectly() bool
	// unhandled reports whether the worker's channel holds something the
	// supervisor has not been given yet; it may be called off the loop.
	unhandled() bool
}

// programFile identifies what a worker runs, as stats of it found at its
// start: the program's file (the executable the path resolves to) and each
// argument that names an existing regular file, which is the code itself
// when the program is an interpreter (node server.js, python3 server.py).
// A deploy that replaces one of them (a new inode) or rewrites it in place
// (a new mtime, ctime or size) changes it. The zero programFile is unknown
// and matches nothing. It is a value that == compares, so that the
// supervisor only compares.
type programFile struct {
	fileID
	// args identifies the argument files: for each, its place in the
	// arguments and its fileID (argFiles in spawn_exec.go builds it).
	args string
}

// fileID is one file as a stat found it.
type fileID struct {
	dev, ino             uint64
	size                 int64
	mtimeNano, ctimeNano int64
}

// same reports whether f and g are the same known file.
func (f programFile) same(g programFile) bool { return f != programFile{} && f == g }

// workerSpec is what a worker is started with.
type workerSpec struct {
	slot, gen int
	// passed are the sockets the worker inherits the systemd way.
	passed []*ownedSocket
	// direct is the program file whose workers take passed sockets
	// without LISTEN_PID (one of them said so): while the program is
	// still that file, the worker is executed directly, not through the
	// exec trampoline that sets LISTEN_PID. The zero programFile: always
	// through the trampoline.
	direct programFile
}

// workerHooks are how a system reports on one worker. started comes
// first, once; then messages and notifications; exited comes last (and
// never if start failed).
type workerHooks struct {
	started        func(p process, err error)
	message        func(m proto.Message, fd int)
	malformed      func(err error)
	notify         func(fields map[string]string)
	notifyRejected func(senderPID int)
	exited         func(exitStatus)
	// handoffWritten says whether a handed connection that handOff
	// queued reached the worker's channel; one that did not is closed.
	handoffWritten func(delivered bool)
}

// exitStatus is how a worker ended.
type exitStatus struct {
	code   int            // -1 when a signal ended it
	signal syscall.Signal // 0 unless a signal ended it
}

func (e exitStatus) String() string {
	if e.signal != 0 {
		return "was killed by signal " + e.signal.String()
	}
	return "exited with code " + strconv.Itoa(e.code)
}

// socketTable is the registry of the sockets the master owns
// (*socketRegistry), as the supervisor uses it.
type socketTable interface {
	get(network, address string, slot int) (*ownedSocket, error)
	passedFor(slot int) ([]*ownedSocket, error)
	releaseSlot(slot int)
	bindPassed(specs []Socket) error
	addrs() []net.Addr
	closeAll()
	// Sticky mode: resize re-attaches the program for n slots; retiringSlots
	// are the slots scaled away whose workers still serve; queued is how many
	// connections wait in a slot's queues.
	resize(n int) error
	retiringSlots() map[int]*retiringSlot
	queued(slot int) int
}
