package recluster

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// reaper turns SIGCHLD into the exits of the workers it tracks, off the
// supervisor's loop: a cluster of hundreds of workers costs the loop one
// call per exit, not one wait per worker per signal.
type reaper struct {
	orphans bool // reap every child, as PID 1 must

	// mu is held across each fork and each reaping pass, so that a pid is
	// forgotten before the kernel can give it to a new worker, and a new
	// worker is tracked before its exit can be seen.
	mu      sync.Mutex
	tracked map[int]*trackedProcess
	quit    chan struct{}
	done    chan struct{}
}

type trackedProcess struct {
	exited func(exitStatus)
	// announced is closed once the supervisor knows the process started:
	// its exit is delivered only after that.
	announced chan struct{}
}

func newReaper(orphans bool) *reaper {
	return &reaper{orphans: orphans, tracked: map[int]*trackedProcess{}}
}

// startTracked runs fork and tracks the pid it returns. The caller closes
// announced once it has reported the start.
func (r *reaper) startTracked(fork func() (int, error), exited func(exitStatus)) (int, chan struct{}, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := fork()
	if err != nil {
		return 0, nil, err
	}
	t := &trackedProcess{exited: exited, announced: make(chan struct{})}
	r.tracked[pid] = t
	return pid, t.announced, nil
}

// watch starts the goroutine that waits for SIGCHLD.
func (r *reaper) watch() {
	r.quit, r.done = make(chan struct{}), make(chan struct{})
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	go func() {
		defer close(r.done)
		defer signal.Stop(sigchld)
		for {
			select {
			case <-sigchld:
				r.reap()
			case <-r.quit:
				return
			}
		}
	}()
}

func (r *reaper) stop() {
	if r.quit != nil {
		close(r.quit)
		<-r.done
		r.quit = nil
	}
}

func (r *reaper) reap() {
	r.mu.Lock()
	type ended struct {
		t  *trackedProcess
		st exitStatus
	}
	var gone []ended
	var ws syscall.WaitStatus
	wait := func(pid int) {
		if t := r.tracked[pid]; t != nil {
			delete(r.tracked, pid)
			gone = append(gone, ended{t, exitStatusOf(ws)})
		}
	}
	if r.orphans {
		for {
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			wait(pid)
		}
	} else {
		// Ask the kernel which child has ended, without reaping it, and
		// reap it if it is ours: a SIGCHLD costs O(exits), not a wait for
		// each of hundreds of workers. A child that is not ours (the
		// program's own os/exec children) stays for its owner, and then
		// every tracked pid is asked for instead.
		scan := false
		for {
			pid, ok := endedChild()
			if !ok || (pid != 0 && r.tracked[pid] == nil) {
				scan = true
				break
			}
			if pid == 0 {
				break
			}
			if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); got != pid || err != nil {
				scan = true
				break
			}
			wait(pid)
		}
		for pid := range r.tracked {
			if !scan {
				break
			}
			if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); got == pid && err == nil {
				wait(pid)
			}
		}
	}
	r.mu.Unlock()
	for _, e := range gone {
		go func() {
			<-e.t.announced
			e.t.exited(e.st)
		}()
	}
}

func exitStatusOf(ws syscall.WaitStatus) exitStatus {
	if ws.Signaled() {
		return exitStatus{code: -1, signal: ws.Signal()}
	}
	return exitStatus{code: ws.ExitStatus()}
}
