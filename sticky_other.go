//go:build !linux

package recluster

import (
	"errors"
	"runtime"
)

func stickySupported() error {
	return errors.New("recluster: Sticky needs Linux (a classic BPF program on a SO_REUSEPORT group), and this is " + runtime.GOOS + "; turn Sticky off, or balance by client address in a proxy in front of the cluster")
}

func attachSticky(int, *stickyTable) error { return stickySupported() }

func acceptQueue(int) (int, error) { return 0, stickySupported() }
