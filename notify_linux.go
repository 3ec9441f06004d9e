package recluster

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// notifySocket is a worker's own NOTIFY_SOCKET: a datagram socket that
// takes sd_notify messages only from the worker's main process (systemd's
// NotifyAccess=main), checked with the sender's kernel credentials.
type notifySocket struct {
	conn *net.UnixConn
	path string
}

func newNotifySocket(path string) (*notifySocket, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err == nil {
		var sockErr error
		err = raw.Control(func(fd uintptr) {
			sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		})
		if err == nil {
			err = sockErr
		}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	return &notifySocket{conn: conn, path: path}, nil
}

// serve delivers each message from pid as its KEY=VALUE fields until the
// socket is closed; messages from any other process are counted as
// rejected through the reject callback.
func (n *notifySocket) serve(pid int, deliver func(fields map[string]string), reject func(senderPID int)) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		nb, oobn, _, _, err := n.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		sender := -1
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if cred, err := unix.ParseUnixCredentials(&m); err == nil {
					sender = int(cred.Pid)
				}
			}
		}
		if sender != pid {
			reject(sender)
			continue
		}
		deliver(parseNotify(string(buf[:nb])))
	}
}

func parseNotify(msg string) map[string]string {
	fields := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k != "" {
			fields[k] = v
		}
	}
	return fields
}

func (n *notifySocket) close() {
	n.conn.Close()
	os.Remove(n.path) // a datagram socket's path outlives the socket
}
