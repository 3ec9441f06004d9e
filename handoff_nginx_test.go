package recluster_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/nginx"
)

// nginxPath finds Debian's nginx. Under CI (CI=true) a missing nginx is
// installed, and still missing fails the test; elsewhere the test skips.
func nginxPath(t *testing.T) string {
	t.Helper()
	if p, err := nginx.Find(); err == nil {
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
	p, err := nginx.Find()
	if err != nil {
		t.Fatal("nginx is still missing after apt-get install nginx-light")
	}
	return p
}

// startNginx runs nginx in front of upstream as a reverse proxy with a
// pool of idle upstream keep-alive connections, and returns its address.
func startNginx(t *testing.T, upstream string) string {
	t.Helper()
	proxy, err := nginx.Start(nginxPath(t), t.TempDir(), upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Stop)
	return proxy.Addr
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
