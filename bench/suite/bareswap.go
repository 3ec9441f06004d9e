//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// bareSwap is the reload's work done without recluster, the baseline that
// the reloadtime scenario measures the master's overhead against: start n
// copies of a worker program one after another, wait until each says
// READY=1 the systemd way, then stop the n copies started before with
// SIGTERM and reap them. What a reload costs beyond that is the master's.
type bareSwap struct {
	program string
	args    []string
	n       int
	env     []string
	files   []*os.File // stdin, stdout and stderr of every worker: /dev/null
	notify  *net.UnixConn
	path    string
	ready   chan readyNote
	current []*os.Process // the generation that runs, ready
}

// readyNote is one READY=1 that a process sent to the notify socket.
type readyNote struct {
	pid int
	at  time.Time
}

// swapTiming is one bare generation swap.
type swapTiming struct {
	total      time.Duration // first start -> last old worker reaped
	ready      time.Duration // first start -> last new worker's READY=1
	start      time.Duration // the slowest new worker's own start -> READY=1
	workersCPU time.Duration // the CPU of the children reaped meanwhile: the old generation's
}

// newBareSwap opens the notify socket at dir/notify-N.sock and starts the
// first generation (untimed).
func newBareSwap(program string, args []string, n int, dir string, patience time.Duration) (*bareSwap, error) {
	path := filepath.Join(dir, fmt.Sprintf("notify-%d.sock", n))
	os.Remove(path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	// With SO_PASSCRED the kernel tells the sender's pid with each
	// datagram, so one socket serves every worker.
	if err := setPassCred(conn); err != nil {
		conn.Close()
		return nil, err
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		conn.Close()
		return nil, err
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		for _, k := range []string{"NOTIFY_SOCKET=", "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES="} {
			if strings.HasPrefix(kv, k) {
				return true
			}
		}
		return false
	})
	b := &bareSwap{
		program: program, args: args, n: n,
		env:    append(env, "NOTIFY_SOCKET="+path),
		files:  []*os.File{devNull, devNull, devNull},
		notify: conn, path: path,
		ready: make(chan readyNote, 2*n),
	}
	go b.readNotifications()
	gen, _, err := b.startGeneration(patience)
	if err != nil {
		b.close(patience)
		return nil, err
	}
	b.current = gen
	return b, nil
}

func setPassCred(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var sockErr error
	if err := raw.Control(func(fd uintptr) {
		sockErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil {
		return err
	}
	return sockErr
}

// readNotifications passes on every READY=1 with its sender's pid until
// the socket is closed.
func (b *bareSwap) readNotifications() {
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	for {
		n, oobn, _, _, err := b.notify.ReadMsgUnix(buf, oob)
		if err != nil {
			close(b.ready)
			return
		}
		at := time.Now()
		if !slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
			continue
		}
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) == 0 {
			continue
		}
		if cred, err := syscall.ParseUnixCredentials(&msgs[0]); err == nil {
			select {
			case b.ready <- readyNote{pid: int(cred.Pid), at: at}:
			default: // more than 2n unread: none of them is awaited
			}
		}
	}
}

// swap starts a new generation and, once all of it is ready, stops the
// one that ran before: one reload's work.
func (b *bareSwap) swap(patience time.Duration) (swapTiming, error) {
	t0, workersCPU0 := time.Now(), childrenCPU()
	gen, start, err := b.startGeneration(patience)
	if err != nil {
		return swapTiming{}, err
	}
	ready := time.Since(t0)
	old := b.current
	b.current = gen
	if err := stop(old, syscall.SIGTERM, patience); err != nil {
		return swapTiming{}, err
	}
	total := time.Since(t0)
	return swapTiming{total: total, ready: ready, start: start, workersCPU: childrenCPU() - workersCPU0}, nil
}

// startGeneration starts n workers one after another, as the master
// spawns a generation, and waits for every one's READY=1. It returns the
// slowest worker's own start, from its fork to its READY=1.
func (b *bareSwap) startGeneration(patience time.Duration) ([]*os.Process, time.Duration, error) {
	attr := &os.ProcAttr{
		Env:   b.env,
		Files: b.files,
		// As the master's workers: their own process group, and killed
		// if the suite dies.
		Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	argv := append([]string{b.program}, b.args...)
	gen := make([]*os.Process, 0, b.n)
	spawned := make(map[int]time.Time, b.n)
	for range b.n {
		at := time.Now()
		p, err := os.StartProcess(b.program, argv, attr)
		if err != nil {
			stop(gen, syscall.SIGKILL, patience)
			return nil, 0, err
		}
		gen = append(gen, p)
		spawned[p.Pid] = at
	}
	var slowest time.Duration
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	for len(spawned) > 0 {
		select {
		case note, ok := <-b.ready:
			if !ok {
				stop(gen, syscall.SIGKILL, patience)
				return nil, 0, errors.New("the notify socket closed")
			}
			if at, ok := spawned[note.pid]; ok {
				slowest = max(slowest, note.at.Sub(at))
				delete(spawned, note.pid)
			}
		case <-deadline.C:
			stop(gen, syscall.SIGKILL, patience)
			return nil, 0, fmt.Errorf("%d of %d workers of %s did not send READY=1 within %v", len(spawned), b.n, filepath.Base(b.program), patience)
		}
	}
	return gen, slowest, nil
}

// stop sends sig to every process and reaps them all; what is left after
// patience is killed, and that is an error.
func stop(procs []*os.Process, sig syscall.Signal, patience time.Duration) error {
	for _, p := range procs {
		p.Signal(sig)
	}
	killed := make(chan int, 1)
	late := time.AfterFunc(patience, func() {
		n := 0
		for _, p := range procs {
			if p.Signal(syscall.SIGKILL) == nil {
				n++
			}
		}
		killed <- n
	})
	for _, p := range procs {
		p.Wait()
	}
	if !late.Stop() {
		return fmt.Errorf("%d of %d workers had not exited %v after %v and were killed", <-killed, len(procs), patience, sig)
	}
	return nil
}

// close stops the running generation and closes the notify socket.
func (b *bareSwap) close(patience time.Duration) {
	stop(b.current, syscall.SIGTERM, patience)
	b.current = nil
	b.notify.Close()
	b.files[0].Close()
	os.Remove(b.path)
}

// measureBareSwaps times swaps bare generation swaps of n workers of the
// reloadtime scenario's worker program, with 50 ms between them as
// between its reloads.
func measureBareSwaps(ctx context.Context, env *Env, n, swaps int) ([]swapTiming, error) {
	patience := startPatience(n)
	b, err := newBareSwap(env.Server, reloadTimeArgs, n, env.Dir, patience)
	if err != nil {
		return nil, fmt.Errorf("bare generation of %d: %w", n, err)
	}
	defer b.close(patience)
	var out []swapTiming
	for i := range swaps {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s, err := b.swap(patience)
		if err != nil {
			return nil, fmt.Errorf("bare swap %d: %w", i+1, err)
		}
		out = append(out, s)
		time.Sleep(50 * time.Millisecond)
	}
	return out, nil
}
