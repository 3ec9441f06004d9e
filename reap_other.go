//go:build !linux

package recluster

// endedChild cannot ask which child has ended here: the reaper asks for
// each of its workers instead.
func endedChild() (pid int, ok bool) { return 0, false }
