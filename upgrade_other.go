//go:build !linux

package recluster

import (
	"errors"
	"syscall"
	"time"
)

func upgradeSupported() error {
	return errors.New("recluster: upgrade in place needs Linux (memfd, and the parent-death signal that ties workers to the master's main thread)")
}

func onTheMainThread() bool { return false }

// The workers' side of an upgrade (upgrade_process_linux.go) is never
// reached where upgradeSupported fails.
func (p *workerProcess) pause(stopped func()) { go stopped() }
func (p *workerProcess) resume()              {}
func (p *workerProcess) flush()               {}
func (p *workerProcess) descriptors() (channel, notify int, err error) {
	return -1, -1, upgradeSupported()
}
func adoptProcess(stateWorker, workerHooks) (*workerProcess, error) {
	return nil, upgradeSupported()
}
func (p *workerProcess) outputState() ([]stateOutput, error)    { return nil, upgradeSupported() }
func (p *workerProcess) adoptOutputs(stateWorker, *outputRelay) {}

func fdOf(c syscall.Conn) (int, error) { return -1, upgradeSupported() }

func monotonicNow() int64 { return time.Now().UnixNano() }

func execWithState(*upgradeState, string, []string) error { return upgradeSupported() }
