package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/recluster-go/recluster"
	"golang.org/x/sys/unix"
)

// listenSpec is one --listen value.
type listenSpec struct {
	sock  recluster.Socket
	named bool // NAME= was given
}

// parseListen parses [NAME=]ADDR, where ADDR is HOST:PORT, :PORT,
// tcp4:HOST:PORT, tcp6:HOST:PORT, unix:PATH or a path starting with /.
func parseListen(v string) (listenSpec, error) {
	var spec listenSpec
	addr := v
	if i := strings.IndexByte(v, '='); i >= 0 && !strings.ContainsAny(v[:i], ":/[") {
		spec.sock.Name, addr, spec.named = v[:i], v[i+1:], true
		if err := checkFDName(spec.sock.Name); err != nil {
			return spec, err
		}
	}
	network := "tcp"
	for _, p := range []string{"unix", "tcp4", "tcp6", "tcp"} {
		rest, ok := strings.CutPrefix(addr, p+":")
		if !ok {
			continue
		}
		if _, err := strconv.Atoi(rest); err == nil && p != "unix" {
			rest = ":" + rest // tcp:8080 is every interface, port 8080
		}
		if p == "unix" || strings.Contains(rest, ":") {
			network, addr = p, rest
			break
		}
	}
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	spec.sock.Network, spec.sock.Address = network, addr
	if network == "unix" {
		if addr == "" {
			return spec, fmt.Errorf("%q has no socket path after \"unix:\"", v)
		}
		if len(addr) > 107 {
			return spec, fmt.Errorf("socket path %q is longer than the 107 bytes a Unix socket address holds", addr)
		}
		return spec, nil
	}
	if _, err := strconv.Atoi(addr); err == nil {
		return spec, fmt.Errorf("%q is not an address; did you mean :%s (every interface) or 127.0.0.1:%s?", v, addr, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return spec, fmt.Errorf("%q is not an address: want HOST:PORT, :PORT or unix:PATH", v)
	}
	if strings.Trim(host, "0123456789.") == "" && host != "" && net.ParseIP(host) == nil {
		return spec, fmt.Errorf("%q: %s is not an IPv4 address", v, host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return spec, fmt.Errorf("%q: port %q is not a number from 0 to 65535", v, port)
	}
	return spec, nil
}

// checkFDName applies systemd's rules for LISTEN_FDNAMES entries.
func checkFDName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("socket name %q must have 1 to 255 characters", name)
	}
	for _, r := range name {
		if r < 0x21 || r > 0x7e || r == ':' {
			return fmt.Errorf("socket name %q may hold only printable ASCII characters other than ':' and space", name)
		}
	}
	return nil
}

// inheritedFD is a socket that systemd (or systemd-socket-activate) passed
// to the master.
type inheritedFD struct {
	fd   int
	name string
}

// takeInherited reads LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, checks
// that they are meant for this process, marks the descriptors
// close-on-exec and removes the variables from the environment.
func takeInherited() []inheritedFD {
	defer func() {
		for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
			os.Unsetenv(k)
		}
	}()
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	var fds []inheritedFD
	for i := 0; i < n; i++ {
		fd := 3 + i
		unix.CloseOnExec(fd)
		name := "unknown"
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		fds = append(fds, inheritedFD{fd: fd, name: name})
	}
	return fds
}

// matchInherited has each --listen address served by the inherited
// socket with its name (when NAME= was given) or its address. Without
// --listen, every inherited socket is passed on, under its own name.
// Inherited sockets that match nothing are closed.
func matchInherited(specs []listenSpec, fds []inheritedFD, log *slog.Logger) []listenSpec {
	if len(fds) == 0 {
		return specs
	}
	if len(specs) == 0 {
		for _, f := range fds {
			specs = append(specs, listenSpec{sock: recluster.Socket{Name: f.name, FD: f.fd}, named: true})
			log.Info("recluster: using a socket passed by systemd", "name", f.name, "fd", f.fd)
		}
		return specs
	}
	used := map[int]bool{}
	for i := range specs {
		for _, f := range fds {
			if used[f.fd] {
				continue
			}
			if (specs[i].named && f.name == specs[i].sock.Name) || fdMatches(f.fd, specs[i].sock) {
				used[f.fd] = true
				specs[i].sock.FD = f.fd
				log.Info("recluster: using a socket passed by systemd", "listen", specs[i].sock.Address, "name", f.name, "fd", f.fd)
				break
			}
		}
	}
	for _, f := range fds {
		if !used[f.fd] {
			log.Warn("recluster: closing a socket passed by systemd that matches no --listen address", "name", f.name, "fd", f.fd)
			unix.Close(f.fd)
		}
	}
	return specs
}

// fdMatches reports whether the socket fd is bound to the address of s.
func fdMatches(fd int, s recluster.Socket) bool {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	if s.Network == "unix" {
		u, ok := sa.(*unix.SockaddrUnix)
		return ok && u.Name == s.Address
	}
	want, err := net.ResolveTCPAddr(s.Network, s.Address)
	if err != nil {
		return false
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
	if want.Port != 0 && want.Port != port {
		return false
	}
	if want.IP == nil || want.IP.IsUnspecified() {
		return ip.IsUnspecified()
	}
	return want.IP.Equal(ip)
}
