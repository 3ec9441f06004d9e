package recluster

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/proto"
	"github.com/recluster-go/recluster/internal/trampoline"
	"golang.org/x/sys/unix"
)

// The variables a worker must not inherit from the master: they describe
// the master's own place under systemd or under another recluster.
var masterOnlyEnv = []string{
	"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
	proto.EnvWorkerID, proto.EnvGeneration, proto.EnvChannelFD, proto.EnvTimeout, proto.EnvTimeoutMS, proto.EnvHeartbeat,
	trampoline.EnvExec, trampoline.EnvStatus,
}

// workerEnv builds a worker's environment: the master's, less what belongs
// to the master only, plus Options.Env, plus the worker's own variables.
func workerEnv(base, extra, own []string) []string {
	drop := map[string]bool{}
	for _, k := range masterOnlyEnv {
		drop[k] = true
	}
	index := map[string]int{}
	var env []string
	add := func(kv string) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := index[k]; ok {
			env[i] = kv
			return
		}
		index[k] = len(env)
		env = append(env, kv)
	}
	for _, kv := range base {
		if k, _, _ := strings.Cut(kv, "="); !drop[k] {
			add(kv)
		}
	}
	for _, kv := range extra {
		add(kv)
	}
	for _, kv := range own {
		add(kv)
	}
	return env
}

// start is system.start: it duplicates the passed sockets at once (the
// registry may close its own copies before the fork), then forks from a
// goroutine of its own.
func (o *osSystem) start(spec workerSpec, hooks workerHooks) {
	var held []int
	for _, sock := range spec.passed {
		fd, err := dupCloseOnExec(sock.fd)
		if err != nil {
			closeFDs(held)
			go hooks.started(nil, err)
			return
		}
		held = append(held, fd)
	}
	go func() {
		defer closeFDs(held)
		p, announced, err := o.startNow(spec, held, hooks)
		if err != nil {
			hooks.started(nil, err)
			return
		}
		p.readWith(hooks)
		hooks.started(p, nil)
		// What the worker says comes only after the supervisor knows it
		// started, and its exit only after that.
		close(announced)
		p.listen()
	}()
}

// startNow does the process plumbing of one worker: its channel, its
// output, its environment, the trampoline for inherited sockets, its
// notify socket, and the fork.
func (o *osSystem) startNow(spec workerSpec, passedFDs []int, hooks workerHooks) (p *workerProcess, announced chan struct{}, err error) {
	exited := hooks.exited
	var cleanups []func() // undo on failure
	defer func() {
		if err != nil {
			for _, undo := range cleanups {
				undo()
			}
		}
	}()
	conn, childFD, err := proto.Pair()
	if err != nil {
		return nil, nil, err
	}
	defer unix.Close(childFD)
	cleanups = append(cleanups, func() { conn.Close() })
	conn.WriteTimeout = time.Second
	// A worker sends descriptors only with handoff messages (handoff.go).
	p = &workerProcess{conn: conn, handoffWritten: hooks.handoffWritten}
	p.outbox = newOutbox(p)

	null, err := devNull()
	if err != nil {
		return nil, nil, err
	}
	// The output readers learn the pid through p once spawned is closed.
	spawned := make(chan struct{})
	defer close(spawned)
	files := []uintptr{null.Fd()}
	for _, out := range []struct {
		stream   string
		w        io.Writer
		fallback *os.File
	}{{"stdout", o.opts.Stdout, os.Stdout}, {"stderr", o.opts.Stderr, os.Stderr}} {
		fd, closeWriteEnd, err := o.outputPipe(out.stream, out.w, out.fallback, spec, p, spawned)
		if err != nil {
			return nil, nil, err
		}
		defer closeWriteEnd()
		files = append(files, fd)
	}

	var names []string
	for i, sock := range spec.passed {
		files = append(files, uintptr(passedFDs[i]))
		names = append(names, sock.name)
	}
	channelFD := len(files)
	files = append(files, uintptr(childFD))
	own := []string{
		proto.EnvWorkerID + "=" + strconv.Itoa(spec.slot),
		proto.EnvGeneration + "=" + strconv.Itoa(spec.gen),
		proto.EnvChannelFD + "=" + strconv.Itoa(channelFD),
		proto.EnvTimeout + "=" + o.opts.Timeout.String(),
		proto.EnvTimeoutMS + "=" + strconv.FormatInt(o.opts.Timeout.Milliseconds(), 10),
	}
	if hb := o.opts.HeartbeatTimeout; hb > 0 {
		own = append(own, proto.EnvHeartbeat+"="+hb.String(), "WATCHDOG_USEC="+strconv.FormatInt(hb.Microseconds(), 10))
	}
	argv0 := o.program
	argv := append([]string{o.program}, o.opts.Args...)
	var execStatus, execStatusW *os.File // the trampoline's report of its exec
	if len(names) > 0 {
		own = append(own,
			"LISTEN_FDS="+strconv.Itoa(len(names)),
			"LISTEN_FDNAMES="+strings.Join(names, ":"))
		// A program whose workers take passed sockets without LISTEN_PID
		// is executed directly, while it and the files its arguments name
		// (an interpreter's script) are those they were started from; any
		// other needs the trampoline to set LISTEN_PID to its pid.
		p.file = statProgram(o.program, o.opts.Args, o.opts.Dir)
		p.direct = spec.direct.same(p.file)
		if !p.direct {
			if execStatus, execStatusW, err = os.Pipe(); err != nil {
				return nil, nil, err
			}
			defer execStatus.Close()
			defer execStatusW.Close()
			own = append(own,
				trampoline.EnvExec+"="+o.program,
				trampoline.EnvStatus+"="+strconv.Itoa(len(files)))
			files = append(files, execStatusW.Fd())
			argv0 = selfExecutable()
		}
	}
	if o.opts.Notify {
		path := filepath.Join(o.runtimeDir, "notify-"+strconv.FormatInt(o.notifySeq.Add(1), 10)+".sock")
		notify, err := newNotifySocket(path)
		if err != nil {
			return nil, nil, err
		}
		cleanups = append(cleanups, notify.close)
		if err := o.giveToWorkers(notify.path); err != nil {
			return nil, nil, err
		}
		p.notify = notify
		own = append(own, "NOTIFY_SOCKET="+notify.path)
	}
	sys := workerSysProcAttr()
	sys.Credential = o.credential
	attr := &syscall.ProcAttr{
		Dir:   o.opts.Dir,
		Env:   workerEnv(os.Environ(), o.opts.Env, own),
		Files: files,
		Sys:   sys,
	}
	// A trampoline whose exec fails is a start that failed, as a direct
	// exec's failure is: its exit is the master's to collect, not news
	// for the supervisor.
	var execFailed atomic.Bool
	execFailedExit := make(chan struct{})
	exitedUnlessExecFailed := func(st exitStatus) {
		if execFailed.Load() {
			close(execFailedExit)
			return
		}
		exited(st)
	}
	p.id, announced, err = o.reaper.startTracked(func() (int, error) { return startProcess(argv0, argv, attr) }, exitedUnlessExecFailed)
	if err != nil {
		return nil, nil, explainExecError(argv0, o.opts.Dir, err)
	}
	if execStatus != nil {
		execStatusW.Close() // else the trampoline's exec would never read as end of file
		if err := awaitTrampolineExec(execStatus); err != nil {
			execFailed.Store(true)
			syscall.Kill(p.id, syscall.SIGKILL) // it is leaving anyway; this bounds the wait
			close(announced)
			select { // reaped at once; the bound only guards against a reaper gone
			case <-execFailedExit:
			case <-time.After(trampolineExecTimeout):
			}
			return nil, nil, explainExecError(o.program, o.opts.Dir, err)
		}
	}
	return p, announced, nil
}

type spawnRequest struct {
	argv0 string
	argv  []string
	attr  *syscall.ProcAttr
	reply chan spawnResult
}

type spawnResult struct {
	pid int
	err error
}

var (
	spawnOnce     sync.Once
	spawnRequests chan spawnRequest
)

// startProcess forks from one OS thread that never exits: the kernel sends
// a worker its parent-death signal when the thread that forked it ends, not
// when the master process does. That is the main thread when
// ServeMainThread serves it (mainthread.go), else a locked thread of its own.
func startProcess(argv0 string, argv []string, attr *syscall.ProcAttr) (pid int, err error) {
	if onMainThread(func() { pid, _, err = syscall.StartProcess(argv0, argv, attr) }) {
		return pid, err
	}
	forkedElsewhere.Store(true)
	spawnOnce.Do(func() {
		spawnRequests = make(chan spawnRequest)
		go forkThread()
	})
	reply := make(chan spawnResult, 1)
	spawnRequests <- spawnRequest{argv0, argv, attr, reply}
	r := <-reply
	return r.pid, r.err
}

// forkThread serves spawnRequests from a thread of its own, for good.
func forkThread() {
	runtime.LockOSThread() // never unlocked: the thread lives as long as the process
	for r := range spawnRequests {
		pid, _, err := syscall.StartProcess(r.argv0, r.argv, r.attr)
		r.reply <- spawnResult{pid, err}
	}
}

var devNull = sync.OnceValues(func() (*os.File, error) { return os.Open(os.DevNull) })

// outputPipe returns the descriptor a worker writes its stdout or stderr
// to: a pipe to the output relay when there is one, else the master's
// own descriptor, or a pipe copied to Options.Stdout or Stderr when they
// are not files.
func (o *osSystem) outputPipe(stream string, w io.Writer, fallback *os.File, spec workerSpec, p *workerProcess, spawned <-chan struct{}) (fd uintptr, closeWriteEnd func(), err error) {
	if o.relay != nil {
		return o.relay.pipe(stream, spec.slot, spec.gen, p, spawned)
	}
	if w == nil {
		w = fallback
	}
	// Fd puts the descriptor in blocking mode, which is what a child
	// expects of its stdio; these are never the workers' listeners.
	if f, ok := w.(*os.File); ok {
		return f.Fd(), func() {}, nil
	}
	r, pw, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	go func() {
		defer r.Close()
		io.Copy(w, r)
	}()
	return pw.Fd(), func() { pw.Close() }, nil
}
