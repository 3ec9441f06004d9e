package recluster

import (
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func upgradeSupported() error { return nil }

// onTheMainThread reports whether the caller runs on the process's main
// thread, whose thread id is the process id.
func onTheMainThread() bool { return unix.Gettid() == unix.Getpid() }

// monotonicNow reads the system's monotonic clock, which an exec does not
// reset (Go's own monotonic readings count from the process's start).
func monotonicNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// execWithState writes st to a memfd and executes binary on the main
// thread with it and every descriptor st names kept open; it returns only
// if the exec failed, with every descriptor as it was.
func execWithState(st *upgradeState, binary string, argv []string) error {
	memfd, err := unix.MemfdCreate("recluster-upgrade-state", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(memfd), "recluster-upgrade-state")
	defer f.Close()
	if err := encodeState(f, st); err != nil {
		return err
	}
	if _, err := f.Seek(0, 0); err != nil {
		return err
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envUpgradeState+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, envUpgradeState+"="+strconv.Itoa(memfd))
	fds := append(st.descriptors(), memfd)
	execErr := errNotMainThread
	onMainThread(func() {
		// No fork may inherit the descriptors while they are open to exec.
		syscall.ForkLock.Lock()
		defer syscall.ForkLock.Unlock()
		for _, fd := range fds {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
				execErr = err
				break
			}
		}
		if execErr == errNotMainThread {
			execErr = syscall.Exec(binary, argv, env)
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
		}
	})
	return execErr
}
