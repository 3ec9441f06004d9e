package recluster_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
)

// nginxPath finds Debian's nginx. Under CI (CI=true) a missing nginx is
// installed, and still missing fails the test; elsewhere the test skips.
func nginxPath(t *testing.T) string {
	t.Helper()
	find := func() string {
		if p, err := exec.LookPath("nginx"); err == nil {
			return p
		}
		if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
			return "/usr/sbin/nginx"
		}
		return ""
	}
	if p := find(); p != "" {
		return p
	}
	if os.Getenv("CI") != "true" {
		t.Skip("nginx is not installed: apt-get install nginx-light (.ci/run installs it; under CI=true this test installs it itself)")
	}
	install := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light")
	install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("apt-get install nginx-light: %v\n%s", err, out)
	}
	if p := find(); p != "" {
		return p
	}
	t.Fatal("nginx is still missing after apt-get install nginx-light")
	return ""
}

// startNginx runs nginx in front of upstream as a reverse proxy with a
// pool of idle upstream keep-alive connections, and returns its address.
func startNginx(t *testing.T, upstream string) string {
	t.Helper()
	bin := nginxPath(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // nginx's workers write temp files here
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	user := ""
	if os.Getuid() == 0 {
		user = "user root root;"
	}
	conf := fmt.Sprintf(`%s
worker_processes 1;
daemon off;
master_process on;
pid %[2]s/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
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
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
`, user, dir, upstream, addr)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath)
	cmd.Stdout, cmd.Stderr = testWriter{t}, testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt) // fast shutdown
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	eventually(t, 10*time.Second, "nginx accepting on "+addr, func() bool {
		select {
		case <-exited:
			t.Fatal("nginx exited at start (its log is above)")
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// nginx in front of the cluster keeps idle upstream connections; none of
// the POSTs it passes on through 20 reloads gets a 502 or 504 (nginx does
// not retry a POST on a connection that the upstream closed).
func TestHandoffBehindNginx(t *testing.T) {
	const clients, reloads = 64, 20
	tc := startCluster(t, recluster.Options{Workers: 2})
	proxy := startNginx(t, strings.TrimPrefix(tc.url, "http://"))
	l := startIdleLoad(proxy, clients, 3*time.Second)
	reloadAtRandom(t, tc, reloads)
	l.finish()
	st := tc.Status()
	t.Logf("%d requests through nginx, handoffs %v, fallbacks %v", l.ok, st.Handoffs, st.HandoffFallbacks)
	if len(l.failures) > 0 {
		t.Fatalf("%d failed requests through nginx:\n%s", len(l.failures), strings.Join(l.failures, "\n"))
	}
	if st.Handoffs["handed"] == 0 {
		t.Errorf("no connection was handed over: %v", st.Handoffs)
	}
}
