//go:build !linux

package recluster

import "time"

// procUsage is not available on this kernel: status shows no RSS or CPU
// and MaxRSS has no effect.
func procUsage(pid int) (rssBytes int64, cpu time.Duration, ok bool) {
	return 0, 0, false
}
