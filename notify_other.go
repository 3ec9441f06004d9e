//go:build !linux

package recluster

import "errors"

type notifySocket struct{ path string }

func newNotifySocket(path string) (*notifySocket, error) {
	return nil, errors.New("Options.Notify (a NOTIFY_SOCKET per worker) needs Linux: use ReadyWhen listening or the channel's ready message")
}

func (n *notifySocket) serve(pid int, deliver func(map[string]string), reject func(int)) {}

func (n *notifySocket) close() {}
