// Package nginx runs Debian's nginx as a reverse proxy with a pool of idle
// upstream keep-alive connections, in front of a cluster: the tests and
// the benchmarks use it to see what such a proxy sees during reloads (it
// answers 502 when a pooled upstream connection is closed under a POST,
// which it does not retry).
package nginx

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrNotInstalled says that no nginx binary was found.
var ErrNotInstalled = errors.New("nginx is not installed (apt-get install nginx-light)")

// Find returns the path of nginx: on PATH, or where Debian puts it
// (/usr/sbin is not on every user's PATH).
func Find() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", ErrNotInstalled
}

// Proxy is a running nginx.
type Proxy struct {
	// Addr is where it accepts, on 127.0.0.1.
	Addr   string
	cmd    *exec.Cmd
	dir    string
	exited chan struct{}
}

// Start runs the nginx at bin with its files in dir (which must exist)
// in front of upstream (host:port), and returns once it accepts, within
// 10 s. Its error log goes to dir/error.log, which the error names if it
// fails to start.
func Start(bin, dir, upstream string) (*Proxy, error) {
	os.Chmod(dir, 0o755) // nginx's workers write temp files here
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := probe.Addr().String()
	probe.Close()
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(config(dir, upstream, addr)), 0o644); err != nil {
		return nil, err
	}
	p := &Proxy{Addr: addr, cmd: exec.Command(bin, "-p", dir, "-c", confPath), dir: dir, exited: make(chan struct{})}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("nginx exited at start: %s", p.errorLog())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("nginx did not accept on %s within 10s: %s", addr, p.errorLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop shuts nginx down fast (SIGINT), and kills it after 10 s.
func (p *Proxy) Stop() {
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *Proxy) errorLog() string {
	b, err := os.ReadFile(filepath.Join(p.dir, "error.log"))
	if err != nil || len(b) == 0 {
		return "its error log is empty"
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// config keeps up to 32 idle connections to upstream, speaks HTTP/1.1 to
// it without passing the client's Connection header on (else nginx would
// not reuse them), and keeps the clients' connections for long.
func config(dir, upstream, listen string) string {
	user := ""
	if os.Getuid() == 0 {
		user = "user root root;" // nginx refuses to run its workers as root otherwise
	}
	return fmt.Sprintf(`%s
worker_processes 1;
daemon off;
master_process on;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	upstream app {
		server %[3]s;
		keepalive 32;
	}
	server {
		listen %[4]s;
		keepalive_timeout 75s;
		keepalive_requests 100000;
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
`, user, dir, upstream, listen)
}
