package deploy_test

import (
	"github.com/recluster-go/recluster/internal/testbin"

	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The base images deploy/Dockerfile names. There is no registry here:
// the test builds stand-ins for both and tags them with these names, so
// that the Dockerfile is built as shipped.
const (
	goImage     = "golang:1.26"
	staticImage = "gcr.io/distroless/static-debian12:nonroot"
)

// dockerd is a Docker daemon the test started in a network namespace of
// its own (only loopback), with its data root in the cache, so that the
// base images and the build's layers stay between runs.
type dockerd struct {
	sock  string // the API socket
	netns string // /run/netns/NAME: the containers' network (--network host)
}

const dockerPrefix = "recluster-ci-docker-"

// startDockerd starts the daemon. No bridge and no iptables: nothing on
// the host's network changes. The cleanup stops it by its pid and checks
// that none of its processes and mounts are left.
func startDockerd(t *testing.T, cache string) *dockerd {
	t.Helper()
	// /usr/bin/docker by its path: it is docker.io's client, whatever
	// else is first on PATH.
	needCommands(t, map[string]string{"dockerd": "docker.io", "/usr/bin/docker": "docker.io", "ip": "iproute2", "nsenter": "util-linux"})
	removeStaleDockerd(t)
	name := fmt.Sprintf("%s%d", dockerPrefix, os.Getpid())
	run(t, time.Minute, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := runErr(time.Minute, "ip", "netns", "delete", name); err != nil {
			t.Errorf("ip netns delete %s: %v %s", name, err, out)
		}
	})
	run(t, time.Minute, "ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
	d := &dockerd{netns: "/run/netns/" + name}
	execRoot := filepath.Join("/run", name)
	d.sock = execRoot + ".sock"
	dataRoot := filepath.Join(cache, "docker")
	cmd := exec.Command("nsenter", "--net="+d.netns, "dockerd",
		"--data-root", dataRoot, "--exec-root", execRoot, "--pidfile", execRoot+".pid",
		"-H", "unix://"+d.sock, "--bridge=none", "--iptables=false", "--ip-masq=false")
	// If the test binary dies (a -timeout panic), dockerd stops too and
	// takes its containers down, instead of holding the data root. The
	// death signal is sent when the thread that forked dies, so the fork
	// is made from a locked thread that lives until dockerd exits (the
	// test's dials end their own locked threads).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	log := &testbin.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	started, exited := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(exited)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			cmd.Wait()
		}
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // nsenter execs dockerd: this is dockerd's pid
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			t.Errorf("dockerd did not stop within 60s of SIGTERM: killed")
			cmd.Process.Kill()
			<-exited
		}
		if left := processesMentioning(execRoot); len(left) > 0 {
			t.Errorf("processes of dockerd left after it stopped:\n%s", strings.Join(left, "\n"))
		}
		// dockerd leaves the bind mount of its network namespace in its
		// exec root; the overlays of the containers must be gone.
		unmountUnder(t, execRoot)
		for _, m := range mountsUnder(dataRoot) {
			t.Errorf("a mount of dockerd left after it stopped: %s", m)
		}
		for _, f := range []string{execRoot, d.sock, execRoot + ".pid"} {
			os.RemoveAll(f)
		}
		if t.Failed() {
			t.Logf("dockerd's log:\n%s", log.String())
		}
	})
	waitUntil(t, 60*time.Second, "dockerd to answer", func() (bool, string) {
		select {
		case <-exited:
			t.Fatalf("dockerd exited: %s", log.String())
		default:
		}
		out, err := d.docker(10*time.Second, "version", "--format", "{{.Server.Version}}")
		return err == nil, out
	})
	t.Logf("dockerd %s", d.must(t, "version", "--format", "{{.Server.Version}}"))
	return d
}

// removeStaleDockerd cleans up after a run that was killed before its
// cleanups ran: the namespaces and exec roots of dockerds whose test
// process is gone (the dockerd itself died with it, by Pdeathsig).
func removeStaleDockerd(t *testing.T) {
	t.Helper()
	stale, _ := filepath.Glob("/run/netns/" + dockerPrefix + "*")
	for _, ns := range stale {
		name := filepath.Base(ns)
		pid, err := strconv.Atoi(strings.TrimPrefix(name, dockerPrefix))
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue // not ours, or its test still runs
		}
		execRoot := filepath.Join("/run", name)
		if left := processesMentioning(execRoot); len(left) > 0 {
			t.Fatalf("a dockerd of a test that is gone still runs; stop it by its pid:\n%s", strings.Join(left, "\n"))
		}
		unmountUnder(t, execRoot)
		os.RemoveAll(execRoot)
		os.Remove(execRoot + ".sock")
		os.Remove(execRoot + ".pid")
		run(t, time.Minute, "ip", "netns", "delete", name)
		t.Logf("removed what a killed run left: %s", name)
	}
}

// processesMentioning returns the processes whose command line holds s.
func processesMentioning(s string) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err == nil && bytes.Contains(b, []byte(s)) {
			found = append(found, filepath.Base(filepath.Dir(f))+": "+string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return found
}

// mountsUnder returns the mount points at or below dir, deepest last.
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var under []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			under = append(under, f[4])
		}
	}
	return under
}

func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	mounts := mountsUnder(dir)
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil {
			t.Errorf("umount %s: %v", mounts[i], err)
		}
	}
}

func (d *dockerd) docker(timeout time.Duration, args ...string) (string, error) {
	return runErr(timeout, "/usr/bin/docker", append([]string{"-H", "unix://" + d.sock}, args...)...)
}

func (d *dockerd) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.docker(5*time.Minute, args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

// build runs docker build with the classic builder: BuildKit would fetch
// the "# syntax=" frontend from a registry, and there is none here.
// --force-rm: a failed step leaves no container behind.
func (d *dockerd) build(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("/usr/bin/docker", append([]string{"-H", "unix://" + d.sock, "build", "--force-rm"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	cmd.WaitDelay = 5 * time.Second
	out := &testbin.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	timer := time.AfterFunc(20*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker build %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// hasImage reports whether the image is there and was built from recipe.
func (d *dockerd) hasImage(image, recipe string) bool {
	out, err := d.docker(time.Minute, "image", "inspect", "-f", `{{index .Config.Labels "recluster-ci"}}`, image)
	return err == nil && strings.TrimSpace(out) == recipe
}

// goBuildImage makes the stand-in of golang:1.26, unless the daemon has
// one from the same recipe: the debootstrap tree (Debian, as the real
// image), the host's Go toolchain at /usr/local/go, a module cache filled
// from the host's with GOPROXY=off (no network), and a build cache of the
// packages the Dockerfile builds, compiled on the host with the
// Dockerfile's flags, so that a change to recluster's code recompiles only
// recluster's packages, not the standard library and every dependency.
// Go's cache is keyed by content, flags and toolchain: it changes nothing
// in what the build makes.
func (d *dockerd) goBuildImage(t *testing.T, root string) {
	t.Helper()
	goroot := strings.TrimSpace(run(t, time.Minute, "go", "env", "GOROOT"))
	goVersion := strings.TrimSpace(run(t, time.Minute, "go", "env", "GOVERSION"))
	const dockerfile = "FROM scratch\nADD rootfs.tar /\nCOPY go /usr/local/go\nCOPY mod /go/pkg/mod\nCOPY gocache /root/.cache/go-build\n" +
		"ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin GOPATH=/go GOTOOLCHAIN=local GOPROXY=off\n" +
		"WORKDIR /go\n"
	recipe := fmt.Sprintf("%x", sha256.Sum256([]byte(readFile(t, filepath.Join(root, ".recluster-ci"))+"\n"+goVersion+"\n"+readFile(t, "../go.sum")+dockerfile)))
	if d.hasImage(goImage, recipe) {
		return
	}
	start := time.Now()
	ctx := t.TempDir()
	run(t, 10*time.Minute, "tar", "-C", root, "--exclude=./proc/*", "--exclude=./sys/*", "-cf", filepath.Join(ctx, "rootfs.tar"), ".")
	run(t, 10*time.Minute, "cp", "-a", goroot, filepath.Join(ctx, "go"))
	// The host's module cache first gets what go.mod names (from the
	// host's GOPROXY), then the image's cache is filled from it alone.
	hostGo := func(timeout time.Duration, env []string, args ...string) {
		cmd := exec.Command("go", args...)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), env...)
		cmd.WaitDelay = 5 * time.Second
		timer := time.AfterFunc(timeout, func() { cmd.Process.Kill() })
		defer timer.Stop()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s (%s): %v\n%s", strings.Join(args, " "), strings.Join(env, " "), err, out)
		}
	}
	hostGo(10*time.Minute, nil, "mod", "download")
	hostCache := strings.TrimSpace(run(t, time.Minute, "go", "env", "GOMODCACHE"))
	hostGo(10*time.Minute, []string{"GOMODCACHE=" + filepath.Join(ctx, "mod"), "GOPROXY=file://" + hostCache + "/cache/download", "GOFLAGS=-mod=mod"}, "mod", "download")
	hostGo(20*time.Minute, []string{"GOCACHE=" + filepath.Join(ctx, "gocache"), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"},
		"build", "-trimpath", "./cmd/recluster", "./examples/hello")
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	d.build(t, ctx, "-q", "--label", "recluster-ci="+recipe, "-t", goImage, ".")
	t.Logf("made the stand-in %s in %v", goImage, time.Since(start).Round(time.Second))
}

// staticImage makes the stand-in of distroless/static-debian12:nonroot:
// what the Dockerfile's runtime stage relies on, /etc/passwd and
// /etc/group with root, nobody and nonroot (65532), the CA certificates, a
// /tmp and nonroot's home; no shell, no libc; user 65532.
func (d *dockerd) staticImage(t *testing.T) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, mode int64, uid int, body string) {
		h := &tar.Header{Name: name, Mode: mode, Uid: uid, Gid: uid, Size: int64(len(body)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if strings.HasSuffix(name, "/") {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	add("etc/", 0o755, 0, "")
	add("etc/passwd", 0o644, 0, "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
	add("etc/group", 0o644, 0, "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")
	if certs, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		add("etc/ssl/", 0o755, 0, "")
		add("etc/ssl/certs/", 0o755, 0, "")
		add("etc/ssl/certs/ca-certificates.crt", 0o644, 0, string(certs))
	}
	add("tmp/", 0o1777, 0, "")
	add("home/", 0o755, 0, "")
	add("home/nonroot/", 0o700, 65532, "")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	const dockerfile = "FROM scratch\nADD static.tar /\nUSER 65532:65532\nWORKDIR /home/nonroot\n"
	recipe := fmt.Sprintf("%x", sha256.Sum256(append(buf.Bytes(), dockerfile...)))
	if d.hasImage(staticImage, recipe) {
		return
	}
	ctx := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctx, "static.tar"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	d.build(t, ctx, "-q", "--label", "recluster-ci="+recipe, "-t", staticImage, ".")
}

// dockerContainer is one docker run of the image, with the Kubernetes
// manifest's securityContext: a read-only root with a tmpfs on /tmp (the
// manifest's emptyDir, for the control socket), no capabilities, no new
// privileges (and Docker's default seccomp profile, as RuntimeDefault).
type dockerContainer struct {
	d    *dockerd
	name string
	pid1 int // the container's PID 1, as a host pid
}

func runContainer(t *testing.T, d *dockerd, image string, runFlags []string, cmd ...string) *dockerContainer {
	t.Helper()
	c := &dockerContainer{d: d, name: fmt.Sprintf("recluster-ci-%d-%d", os.Getpid(), time.Now().UnixNano())}
	args := append([]string{"run", "-d", "--name", c.name, "--network", "host",
		"--read-only", "--tmpfs", "/tmp:size=16m", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"}, runFlags...)
	d.must(t, append(append(args, image), cmd...)...)
	t.Cleanup(func() { d.docker(time.Minute, "rm", "-f", c.name) })
	c.pid1, _ = strconv.Atoi(d.must(t, "inspect", "-f", "{{.State.Pid}}", c.name))
	return c
}

// waitReady waits for the master's /readyz, failing at once if the
// container exits.
func (c *dockerContainer) waitReady(t *testing.T, client netnsGetter) {
	t.Helper()
	waitUntil(t, 60*time.Second, "/readyz", func() (bool, string) {
		body, err := client.get("http://127.0.0.1:9100/readyz")
		if running := c.d.must(t, "inspect", "-f", "{{.State.Running}}", c.name); running != "true" {
			logs, _ := c.d.docker(time.Minute, "logs", c.name)
			t.Fatalf("the container exited:\n%s", logs)
		}
		return err == nil, fmt.Sprint(body, err)
	})
}

// stop runs docker stop with the time the Dockerfile's comment asks for
// and returns how long it took and the container's exit code.
func (c *dockerContainer) stop(t *testing.T) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	c.d.must(t, "stop", "--time", "40", c.name)
	took := time.Since(start)
	return took, c.d.must(t, "inspect", "-f", "{{.State.ExitCode}}", c.name)
}

// netnsGetter fetches URLs in the daemon's network namespace.
type netnsGetter struct{ nsPath string }

func (g netnsGetter) get(url string) (string, error) {
	return get(netnsClient(g.nsPath, 10*time.Second), url)
}

// TestPlatformDocker builds deploy/Dockerfile as shipped (only its base
// images are local stand-ins) and runs the image the way the Kubernetes
// manifest does.
func TestPlatformDocker(t *testing.T) {
	platformTests(t)
	start := time.Now()
	cache := cacheDir(t)
	lockCache(t, cache)
	root := rootfs(t, cache)
	d := startDockerd(t, cache)
	d.goBuildImage(t, root)
	d.staticImage(t)
	t.Logf("rootfs, dockerd and base images took %v", time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() { d.docker(5*time.Minute, "image", "prune", "-f") }) // the images this run's build replaced

	buildStart := time.Now()
	const image = "recluster-hello:ci"
	dockerfile := "deploy/Dockerfile"
	if text := readFile(t, "Dockerfile"); platformBreak(text) != text {
		dockerfile = filepath.Join(t.TempDir(), "Dockerfile")
		if err := os.WriteFile(dockerfile, []byte(platformBreak(text)), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("RECLUSTER_PLATFORM_BREAK=%q: building a broken Dockerfile", os.Getenv("RECLUSTER_PLATFORM_BREAK"))
	}
	out := d.build(t, "..", "-f", dockerfile, "-t", image, ".")
	if i := strings.Index(out, "Sending build context to Docker daemon"); i >= 0 {
		t.Logf("%s", strings.SplitN(out[i:], "\n", 2)[0])
	}
	t.Logf("docker build -f deploy/Dockerfile took %v", time.Since(buildStart).Round(100*time.Millisecond))
	g := netnsGetter{d.netns}

	t.Run("hello", func(t *testing.T) {
		c := runContainer(t, d, image, nil)
		c.waitReady(t, g)
		status := readFile(t, fmt.Sprintf("/proc/%d/status", c.pid1))
		for _, want := range []string{"\nUid:\t65532\t65532\t65532\t65532\n", "\nCapEff:\t0000000000000000\n", "\nCapBnd:\t0000000000000000\n", "\nNoNewPrivs:\t1\n", "\nSeccomp:\t2\n"} {
			if !strings.Contains(status, want) {
				field, _, _ := strings.Cut(strings.TrimSpace(want), ":")
				t.Errorf("PID 1 of the container: want %q in /proc/PID/status, have %q", strings.TrimSpace(want), statusLine(status, field))
			}
		}
		if comm := strings.TrimSpace(readFile(t, fmt.Sprintf("/proc/%d/comm", c.pid1))); comm != "recluster" {
			t.Errorf("PID 1 is %q, want recluster", comm)
		}
		if opts := rootMountOptions(t, c.pid1); !strings.HasPrefix(opts, "ro,") {
			t.Errorf("the container's / is mounted %q, want read-only", opts)
		}
		if body, err := g.get("http://127.0.0.1:8080/"); err != nil || !strings.Contains(body, "generation 1") {
			t.Fatalf("GET / = %q, %v; want generation 1", body, err)
		}

		// docker kill -s HUP under requests: the new generation serves and
		// no request fails across the reload.
		var failed []string
		var served int
		stopLoad, loadDone := make(chan struct{}), make(chan struct{})
		endLoad := func() {
			select {
			case <-stopLoad:
			default:
				close(stopLoad)
			}
			<-loadDone
		}
		defer endLoad() // also when a check below ends the test
		go func() {
			defer close(loadDone)
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				if _, err := g.get("http://127.0.0.1:8080/"); err != nil {
					failed = append(failed, err.Error())
				}
				served++
			}
		}()
		d.must(t, "kill", "-s", "HUP", c.name)
		waitUntil(t, 60*time.Second, "generation 2 to serve after docker kill -s HUP", func() (bool, string) {
			body, err := g.get("http://127.0.0.1:8080/")
			return err == nil && strings.Contains(body, "generation 2"), fmt.Sprint(body, err)
		})
		// docker exec finds the control socket through the image's
		// RECLUSTER_CONTROL.
		waitUntil(t, 60*time.Second, "docker exec recluster status to show every worker in generation 2", func() (bool, string) {
			out, err := d.docker(time.Minute, "exec", c.name, "recluster", "status")
			gens := workerGenerations(out)
			return err == nil && len(gens) > 0 && strings.Trim(strings.Join(gens, ""), "2") == "", fmt.Sprint(out, err)
		})
		endLoad()
		t.Logf("%d requests across the reload, %d failed", served, len(failed))
		if len(failed) > 0 {
			t.Errorf("%d of %d requests failed across docker kill -s HUP: %s", len(failed), served, strings.Join(failed[:min(len(failed), 5)], "; "))
		}

		took, code := c.stop(t)
		t.Logf("docker stop took %v, exit code %s", took.Round(time.Millisecond), code)
		if code != "0" || took > 10*time.Second {
			t.Errorf("docker stop took %v with exit code %s, want 0 within 10s", took.Round(time.Millisecond), code)
		}
	})

	t.Run("orphans", func(t *testing.T) {
		// The worker is itself a recluster master, with two hello workers:
		// killed, it leaves them to PID 1 (their death signal kills them),
		// which must reap them. RECLUSTER_WORKERS=1 is for the outer
		// master only: the inner one's --workers wins.
		c := runContainer(t, d, image, []string{"-e", "RECLUSTER_WORKERS=1"},
			"/usr/local/bin/recluster", "run", "--workers", "2", "--listen", "http=:8080",
			"--control", "/tmp/inner.sock", "--", "/usr/local/bin/hello")
		c.waitReady(t, g)
		var inner int
		var orphans []process
		waitUntil(t, 60*time.Second, "the inner master's two workers", func() (bool, string) {
			kids := children(c.pid1)
			if len(kids) != 1 {
				return false, fmt.Sprint("PID 1's children ", kids)
			}
			inner, orphans = kids[0], nil
			for _, pid := range children(inner) {
				orphans = append(orphans, processOf(pid))
			}
			return len(orphans) == 2, fmt.Sprint("the inner master's children ", orphans)
		})
		if err := syscall.Kill(inner, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 60*time.Second, "the orphans to end and be reaped", func() (bool, string) {
			var left []string
			for _, p := range orphans {
				if now := processOf(p.pid); now.start == p.start {
					left = append(left, now.stat)
				}
			}
			return len(left) == 0, strings.Join(left, "; ")
		})
		c.waitReady(t, g) // the outer master started a new inner one
		for _, pid := range children(c.pid1) {
			if p := processOf(pid); p.state == "Z" {
				t.Errorf("a zombie child of PID 1: %s", p.stat)
			}
		}
		took, code := c.stop(t)
		if code != "0" {
			t.Errorf("exit code %s after docker stop (%v), want 0", code, took.Round(time.Millisecond))
		}
	})
	t.Logf("the Docker tests took %v", time.Since(start).Round(100*time.Millisecond))
}

// statusLine returns the line of /proc/PID/status that starts with field.
func statusLine(status, field string) string {
	for _, line := range strings.Split(status, "\n") {
		if strings.HasPrefix(line, field+":") {
			return line
		}
	}
	return ""
}

// rootMountOptions returns the mount options of pid's root directory.
func rootMountOptions(t *testing.T, pid int) string {
	t.Helper()
	for _, line := range strings.Split(readFile(t, fmt.Sprintf("/proc/%d/mountinfo", pid)), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == "/" {
			return f[5]
		}
	}
	t.Fatalf("no / in /proc/%d/mountinfo", pid)
	return ""
}

// process is a snapshot of /proc/PID/stat: its start time tells a pid's
// process from a later one that reuses the pid.
type process struct {
	pid          int
	state, start string
	stat         string
}

func processOf(pid int) process {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return process{pid: pid}
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // the name may hold spaces
	p := process{pid: pid, stat: strings.TrimSpace(s)}
	if len(fields) > 19 {
		p.state, p.start = fields[0], fields[19]
	}
	return p
}

// children returns the host pids of pid's children.
func children(pid int) []int {
	var kids []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(s)
			kids = append(kids, n)
		}
	}
	return kids
}

// workerGenerations returns the GEN column of recluster status's table,
// one entry a worker.
func workerGenerations(status string) []string {
	var gens []string
	table := false
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 2 && f[0] == "SLOT" && f[2] == "GEN":
			table = true
		case table && len(f) > 2:
			gens = append(gens, f[2])
		}
	}
	return gens
}
