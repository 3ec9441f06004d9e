package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/systemd"
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

// takeInherited returns the sockets that systemd (or
// systemd-socket-activate) passed to the master, close-on-exec, and takes
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES out of the environment: they
// describe the master, not its workers.
func takeInherited() []systemd.Socket {
	defer systemd.UnsetListenEnv()
	return systemd.Sockets()
}

// matchInherited has each --listen address served by the inherited
// socket with its name (when NAME= was given) or its address. Without
// --listen, every inherited socket is passed on, under its own name.
// Inherited sockets that match nothing are closed.
func matchInherited(specs []listenSpec, socks []systemd.Socket, log *slog.Logger) []listenSpec {
	if len(socks) == 0 {
		return specs
	}
	if len(specs) == 0 {
		for _, f := range socks {
			specs = append(specs, listenSpec{sock: recluster.Socket{Name: f.Name, FD: f.FD}, named: true})
			log.Info("recluster: using a socket passed by systemd", "name", f.Name, "fd", f.FD)
		}
		return specs
	}
	used := map[int]bool{}
	for i := range specs {
		name := ""
		if specs[i].named {
			name = specs[i].sock.Name
		}
		for _, f := range socks {
			if !used[f.FD] && f.Serves(name, specs[i].sock.Network, specs[i].sock.Address) {
				used[f.FD] = true
				specs[i].sock.FD = f.FD
				log.Info("recluster: using a socket passed by systemd", "listen", specs[i].sock.Address, "name", f.Name, "fd", f.FD)
				break
			}
		}
	}
	for _, f := range socks {
		if !used[f.FD] {
			log.Warn("recluster: closing a socket passed by systemd that matches no --listen address", "name", f.Name, "fd", f.FD)
			unix.Close(f.FD)
		}
	}
	return specs
}
