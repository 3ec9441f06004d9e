// Package trampoline is the exec trampoline of a worker that inherits
// sockets: the master starts its own binary with EnvExec naming the worker
// program, and this package's init sets LISTEN_PID to the process's own
// pid and executes that program. os/exec cannot set a variable to the
// child's pid, and programs written for systemd check it. Workers that said
// they need no LISTEN_PID are executed directly instead (spawn.go), which
// saves this start of the master's binary.
//
// It is a package of its own, importing next to nothing, so that Go
// initialises it before nearly every other package of the binary: the
// trampoline runs once per worker start, and the package inits of a large
// master binary (a metrics client, a TUI, parsers) cost more CPU than the
// exec itself. The master's side (the pipe, the environment) is in package
// recluster (spawn.go, spawn_exec.go).
package trampoline

import (
	"os"
	"strconv"
	"syscall"
)

// EnvExec names the program a re-executed master binary is to execute in
// place of itself.
const EnvExec = "RECLUSTER_TRAMPOLINE_EXEC"

// EnvStatus names the descriptor on which the trampoline reports that it
// could not execute the worker program. The master holds the other end of
// a pipe; the trampoline marks its end close-on-exec, so a successful exec
// closes it (the master reads end of file), and a failed one writes
// "ERRNO TEXT" there before exiting with code 127. It is the same scheme
// os/exec uses for its own fork and exec, carried one exec further.
const EnvStatus = "RECLUSTER_TRAMPOLINE_STATUS_FD"

func init() {
	program, ok := syscall.Getenv(EnvExec)
	if !ok {
		return
	}
	syscall.Unsetenv(EnvExec)
	status := takeStatus()
	syscall.Setenv("LISTEN_PID", strconv.Itoa(syscall.Getpid()))
	err := syscall.Exec(program, os.Args, syscall.Environ())
	reportFailure(status, program, err)
	os.Exit(127)
}

// takeStatus returns the descriptor the master gave the trampoline for its
// exec failure, marked close-on-exec, or -1.
func takeStatus() int {
	v, ok := syscall.Getenv(EnvStatus)
	syscall.Unsetenv(EnvStatus)
	fd, err := strconv.Atoi(v)
	if !ok || err != nil || fd < 3 {
		return -1
	}
	syscall.CloseOnExec(fd)
	return fd
}

// reportFailure is the trampoline's last word when its exec failed: on
// the status descriptor when it has one, else on its stderr.
func reportFailure(statusFD int, program string, err error) {
	errno, _ := err.(syscall.Errno)
	if statusFD >= 0 {
		msg := strconv.Itoa(int(errno)) + " " + err.Error()
		if _, werr := syscall.Write(statusFD, []byte(msg)); werr == nil {
			return
		}
	}
	syscall.Write(2, []byte("recluster: cannot start worker program "+program+": "+err.Error()+"\n"))
}
