//go:build !linux

package main

// monotonicUsec is only needed under systemd, which is Linux's.
func monotonicUsec() int64 { return 0 }
