//go:build !linux

package recluster

import "syscall"

// workerSysProcAttr puts each worker in a process group of its own. This
// kernel has no parent-death signal; the worker package watches its channel
// and leaves when the master is gone.
func workerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
