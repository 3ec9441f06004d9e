package recluster

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/recluster-go/recluster/internal/proto"
)

// envTrampoline tells a re-executed master binary to set LISTEN_PID to its
// own pid and exec the real worker program named by the variable: os/exec
// cannot set an environment variable to the child's pid, and programs
// written for systemd check it.
const envTrampoline = "RECLUSTER_TRAMPOLINE_EXEC"

func init() {
	program, ok := os.LookupEnv(envTrampoline)
	if !ok {
		return
	}
	os.Unsetenv(envTrampoline)
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	args := os.Args
	err := syscall.Exec(program, args, os.Environ())
	fmt.Fprintf(os.Stderr, "recluster: cannot start worker program %s: %v\n", program, err)
	os.Exit(127)
}

// The variables a worker must not inherit from the master: they describe
// the master's own place under systemd or under another recluster.
var masterOnlyEnv = []string{
	"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
	proto.EnvWorkerID, proto.EnvGeneration, proto.EnvChannelFD, proto.EnvTimeout, proto.EnvTimeoutMS, proto.EnvHeartbeat,
	envTrampoline,
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
// when the master process does.
func startProcess(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	spawnOnce.Do(func() {
		spawnRequests = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawnRequests {
				pid, _, err := syscall.StartProcess(r.argv0, r.argv, r.attr)
				r.reply <- spawnResult{pid, err}
			}
		}()
	})
	reply := make(chan spawnResult, 1)
	spawnRequests <- spawnRequest{argv0, argv, attr, reply}
	r := <-reply
	return r.pid, r.err
}

var devNull = sync.OnceValues(func() (*os.File, error) { return os.Open(os.DevNull) })

// outputPipe returns the descriptor a worker writes its stdout or stderr
// to. Output goes straight to the master's own descriptor when it can; a
// pipe and a copying goroutine are used only for a Writer or a label. The
// copier calls label only after spawned is closed.
func outputPipe(w io.Writer, fallback *os.File, label func() string, spawned <-chan struct{}, done *sync.WaitGroup) (fd uintptr, closeWriteEnd func(), err error) {
	if w == nil {
		w = fallback
	}
	// Fd puts the descriptor in blocking mode, which is what a child
	// expects of its stdio; these are never the workers' listeners.
	if f, ok := w.(*os.File); ok && label == nil {
		return f.Fd(), func() {}, nil
	}
	r, pw, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	done.Add(1)
	go func() {
		defer done.Done()
		defer r.Close()
		<-spawned
		prefix := ""
		if label != nil {
			prefix = label()
		}
		copyLines(w, r, prefix)
	}()
	return pw.Fd(), func() { pw.Close() }, nil
}

func copyLines(w io.Writer, r io.Reader, prefix string) {
	if prefix == "" {
		io.Copy(w, r)
		return
	}
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			buf := make([]byte, 0, len(prefix)+len(line)+1)
			buf = append(append(buf, prefix...), line...)
			if buf[len(buf)-1] != '\n' {
				buf = append(buf, '\n')
			}
			w.Write(buf)
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}
