//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// signals maps signal names (without SIG) to signals for -reload-signal.
var signals = map[string]syscall.Signal{
	"HUP":   syscall.SIGHUP,
	"INT":   syscall.SIGINT,
	"QUIT":  syscall.SIGQUIT,
	"KILL":  syscall.SIGKILL,
	"TERM":  syscall.SIGTERM,
	"USR1":  syscall.SIGUSR1,
	"USR2":  syscall.SIGUSR2,
	"WINCH": syscall.SIGWINCH,
	"CONT":  syscall.SIGCONT,
	"STOP":  syscall.SIGSTOP,
}

// killGroupOnCancel runs cmd in its own process group and makes the
// cancellation of its context kill the whole group, so that children of
// the shell do not outlive it.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
