//go:build !linux

package recluster

import "time"

// socketInode has no /proc to match against on this system.
func socketInode(fd int) (uint64, bool) { return 0, false }

// acceptingOn cannot look into another process here.
func acceptingOn(pid int, inodes map[uint64]bool, tree *procTree, now time.Time) (bool, error) {
	return false, &undetectable{"seeing a worker wait for connections needs Linux's /proc"}
}

// procTree has nothing to know on this system.
type procTree struct{}
