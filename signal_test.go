package recluster_test

import "syscall"

func syscallKill(pid int, sig string) error {
	return syscall.Kill(pid, map[string]syscall.Signal{"STOP": syscall.SIGSTOP, "KILL": syscall.SIGKILL}[sig])
}
