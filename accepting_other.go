//go:build !linux

package recluster

// socketInode has no /proc to match against on this system.
func socketInode(fd int) (uint64, bool) { return 0, false }

// acceptingOn cannot look into another process here.
func acceptingOn(pid int, inodes map[uint64]bool) (bool, error) {
	return false, &undetectable{"seeing a worker wait for connections needs Linux's /proc"}
}

// processTree knows only the worker itself on this system.
func processTree(pid int) []int { return []int{pid} }
