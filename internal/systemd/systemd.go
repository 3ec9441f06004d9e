// Package systemd is the one home of the systemd conventions that the CLI
// and package worker share: the sockets that socket activation passes
// (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), which of them serves a
// requested address, and the sd_notify messages sent to NOTIFY_SOCKET.
//
// Sending is go-systemd's daemon.SdNotify. Passed sockets are read here
// rather than with go-systemd's activation.Files, which wraps each
// descriptor in an *os.File: its finalizer closes the descriptor once the
// File is dropped, and its Fd method turns a NonBlocking=yes socket
// blocking for every process that shares it. Both users keep plain
// descriptors instead: the CLI hands them to recluster.Socket.FD, and the
// worker duplicates one for each Listen.
package systemd

import (
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenFDsStart is SD_LISTEN_FDS_START: the first passed descriptor.
const listenFDsStart = 3

// ListenEnv are the variables of socket activation. They describe one
// process (LISTEN_PID): a program's own children must not inherit them.
var ListenEnv = []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}

// Socket is a descriptor passed by socket activation.
type Socket struct {
	FD int
	// Name is its LISTEN_FDNAMES entry (FileDescriptorName= in the
	// socket unit), or "unknown" as systemd names an unnamed one.
	Name string
}

// Sockets returns the sockets passed to this process, in order: none
// unless LISTEN_PID is this process's pid. It marks them close-on-exec so
// that the program's children do not inherit them, and leaves the
// environment as it is: unsetting ListenEnv is the caller's decision.
func Sockets() []Socket { return takeSockets(false) }

// SocketsWithoutPID is Sockets for a process that knows by other means
// that the passed sockets are its own, as a recluster worker does from its
// channel to the master: it also takes them when LISTEN_PID is not set, as
// a master that executes the worker without its exec trampoline passes
// them. A LISTEN_PID that names another process still means that they are
// not this one's.
func SocketsWithoutPID() []Socket { return takeSockets(true) }

func takeSockets(pidOptional bool) []Socket {
	socks := parseListenEnv(os.Getpid(), os.Getenv, pidOptional)
	for _, s := range socks {
		unix.CloseOnExec(s.FD)
	}
	return socks
}

func parseListenEnv(pid int, getenv func(string) string, pidOptional bool) []Socket {
	listenPID := getenv("LISTEN_PID")
	if p, err := strconv.Atoi(listenPID); (err != nil || p != pid) && !(pidOptional && listenPID == "") {
		return nil
	}
	n, err := strconv.Atoi(getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil
	}
	names := strings.Split(getenv("LISTEN_FDNAMES"), ":")
	socks := make([]Socket, n)
	for i := range socks {
		socks[i] = Socket{FD: listenFDsStart + i, Name: "unknown"}
		if i < len(names) && names[i] != "" {
			socks[i].Name = names[i]
		}
	}
	return socks
}

// UnsetListenEnv removes ListenEnv from the environment.
func UnsetListenEnv() {
	for _, k := range ListenEnv {
		os.Unsetenv(k)
	}
}

// Serves reports whether s serves a request for the socket called name
// (when name is not empty) or for a listener on network and address (see
// BoundTo).
func (s Socket) Serves(name, network, address string) bool {
	return (name != "" && s.Name == name) || BoundTo(s.FD, network, address)
}

// BoundTo reports whether the socket fd is where a listener on network and
// address would be: the same Unix socket path, or the same TCP port (any
// port for port 0) on the same IP, where a wildcard (an empty host,
// 0.0.0.0 or ::) on either side matches any IP. A socket on 0.0.0.0:80
// serves a request for 127.0.0.1:80, and one on 127.0.0.1:80 a request for
// :80: while the passed socket is open the requested one could not be
// bound, so it is the only socket that can serve.
func BoundTo(fd int, network, address string) bool {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	if u, ok := sa.(*unix.SockaddrUnix); ok {
		return strings.HasPrefix(network, "unix") && u.Name == address
	}
	var ip net.IP
	var port int
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ip, port = net.IP(a.Addr[:]), a.Port
	case *unix.SockaddrInet6:
		ip, port = net.IP(a.Addr[:]), a.Port
	default:
		return false
	}
	if strings.HasPrefix(network, "unix") {
		return false
	}
	if network == "" {
		network = "tcp"
	}
	want, err := net.ResolveTCPAddr(network, address)
	if err != nil {
		return false
	}
	if want.Port != 0 && want.Port != port {
		return false
	}
	return want.IP == nil || want.IP.IsUnspecified() || ip.IsUnspecified() || want.IP.Equal(ip)
}

// Listening reports whether fd is a listening socket, which a socket unit
// passes with Accept=no (with Accept=yes it passes one connection).
func Listening(fd int) bool {
	on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && on == 1
}
