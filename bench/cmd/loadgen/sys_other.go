//go:build !unix

package main

import (
	"os/exec"
	"syscall"
)

// signals maps signal names (without SIG) to signals for -reload-signal.
var signals = map[string]syscall.Signal{
	"HUP":  syscall.SIGHUP,
	"INT":  syscall.SIGINT,
	"QUIT": syscall.SIGQUIT,
	"KILL": syscall.SIGKILL,
	"TERM": syscall.SIGTERM,
}

// killGroupOnCancel leaves cmd as it is: on this platform only the shell
// itself is killed when its context is canceled.
func killGroupOnCancel(*exec.Cmd) {}
