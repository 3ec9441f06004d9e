package recluster

import "syscall"

// workerSysProcAttr puts each worker in a process group of its own, so that
// a terminal's Ctrl-C reaches only the master (which then drains the
// workers), and has the kernel kill the worker if the master dies, even by
// SIGKILL, so that no orphan keeps serving or holding the port.
func workerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
