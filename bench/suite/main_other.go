//go:build !linux

// Command suite is the benchmark suite; it measures processes through
// /proc and so runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "suite: the benchmark suite reads /proc and runs on Linux only")
	os.Exit(2)
}
