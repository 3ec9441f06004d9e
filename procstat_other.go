//go:build !linux

package recluster

// treeUsage is not available on this kernel: status shows no RSS or CPU
// and MaxRSS has no effect.
func treeUsage(pids []int) []procFigures { return make([]procFigures, len(pids)) }
