package deploy_test

// The real-platform tests: the systemd units run under a real systemd as
// PID 1 (systemd-nspawn --boot in a debootstrap rootfs, systemd_test.go),
// and deploy/Dockerfile is built and run by a real Docker daemon
// (docker_test.go). They need root on Debian, install what they need with
// apt-get, keep the rootfs and the daemon's images in a cache directory
// between runs, and stop everything they start. RECLUSTER_PLATFORM_TESTS=1
// turns them on (.ci/run does, in a step of its own):
//
//	RECLUSTER_PLATFORM_TESTS=1 go test -count=1 -run '^TestPlatform' -v ./deploy/

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// platformTests skips or fails the test unless the real-platform tests
// were asked for. Under CI=true a missing switch is a failure, not a skip:
// .ci/run sets it to 1 in its platform step and to 0 in the others.
func platformTests(t *testing.T) {
	t.Helper()
	switch v := os.Getenv("RECLUSTER_PLATFORM_TESTS"); v {
	case "1":
	case "0":
		t.Skip("RECLUSTER_PLATFORM_TESTS=0: the real-platform tests run in a step of their own (.ci/run)")
	default:
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but RECLUSTER_PLATFORM_TESTS=%q: set it to 1 to run the real-platform tests, or to 0 in a run where another step runs them", v)
		}
		t.Skip("the real-platform tests (systemd, Docker) need RECLUSTER_PLATFORM_TESTS=1 (as root, on Debian; see the README)")
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Fatal("RECLUSTER_PLATFORM_TESTS=1 needs root on Linux")
	}
}

var aptUpdate sync.Once

// needCommands installs the Debian packages of the commands that are
// missing: command -> package.
func needCommands(t *testing.T, commands map[string]string) {
	t.Helper()
	var pkgs []string
	for cmd, pkg := range commands {
		if _, err := exec.LookPath(cmd); err != nil {
			pkgs = append(pkgs, pkg)
		}
	}
	if len(pkgs) == 0 {
		return
	}
	aptUpdate.Do(func() { run(t, 10*time.Minute, "apt-get", "update", "-q") })
	// No package the tests install may start its service: docker.io
	// would start the system's dockerd, with its bridge and iptables
	// rules, and the tests start daemons of their own. policy-rc.d
	// answering 101 is Debian's way to say so.
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); os.IsNotExist(err) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\n# recluster's deploy tests: no service starts on install\nexit 101\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(policy)
	}
	cmd := exec.Command("apt-get", append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get install %v: %v\n%s", pkgs, err, out)
	}
}

// cacheDir is where the rootfs is kept between
// runs: $RECLUSTER_CI_CACHE, or /var/cache/recluster-ci. A lock on it
// keeps two runs on one machine apart.
func cacheDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RECLUSTER_CI_CACHE")
	if dir == "" {
		dir = "/var/cache/recluster-ci"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// lockCache holds an exclusive lock on the cache until the test ends.
func lockCache(t *testing.T, dir string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

// rootfs returns a Debian bookworm tree made by debootstrap, from the
// cache when a complete one is there. The tests never write to it: the
// container boots on an overlay of it.
func rootfs(t *testing.T, cache string) string {
	t.Helper()
	const recipe = "debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,procps,iproute2 bookworm"
	dir := filepath.Join(cache, "rootfs-bookworm")
	if b, err := os.ReadFile(filepath.Join(dir, ".recluster-ci")); err == nil && string(b) == recipe {
		return dir
	}
	needCommands(t, map[string]string{"debootstrap": "debootstrap"})
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	os.RemoveAll(dir)
	args := append(strings.Fields(recipe)[1:], tmp, "http://deb.debian.org/debian")
	start := time.Now()
	run(t, 15*time.Minute, "debootstrap", args...)
	t.Logf("debootstrap took %v", time.Since(start).Round(time.Second))
	if err := os.WriteFile(filepath.Join(tmp, ".recluster-ci"), []byte(recipe), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// platformBreak changes nothing, unless RECLUSTER_PLATFORM_BREAK='OLD=>NEW'
// asks for a broken recipe, to show that the checks fail: then every line
// OLD of a unit file or of the Dockerfile becomes NEW. For example
// 'Type=notify=>Type=simple' (systemd) or 'USER 65532:65532=>USER 0:0'
// (Docker).
func platformBreak(recipe string) string {
	if e := os.Getenv("RECLUSTER_PLATFORM_BREAK"); e != "" {
		from, to, _ := strings.Cut(e, "=>")
		return strings.ReplaceAll(recipe, from+"\n", to+"\n")
	}
	return recipe
}

// run runs a command on the host and fails the test if it fails.
func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runErr(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}

// netnsClient is an HTTP client whose connections are made in the network
// namespace of the file nsPath (/proc/PID/ns/net or /run/netns/NAME), and
// never reused or retried: one new connection per request.
func netnsClient(nsPath string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialInNetns(ctx, nsPath, network, addr)
		},
	}}
}

// dialInNetns dials from a thread that entered the namespace: a socket
// belongs to the namespace of the thread that makes it. The thread stays
// locked and ends with its goroutine, so no other goroutine runs on it.
func dialInNetns(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{nil, err}
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			done <- result{nil, fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}

// waitUntil polls cond every 50ms until it holds or the time is over.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %s", within, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// copyFile copies src to dst with the given mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil { // atomic: a running binary is never overwritten in place
		t.Fatal(err)
	}
}
