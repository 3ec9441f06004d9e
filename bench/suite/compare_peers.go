//go:build linux

package main

// Scenario 4's servers: the SO_REUSEPORT ceiling (bench/compare/plain), the
// recluster CLI, Node's recluster, PM2 cluster mode and a tableflip server,
// each started on a free 127.0.0.1 port and stopped by the pid we started.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/bench/loadgen"
)

// cmpTarget is one running server under test.
type cmpTarget struct {
	key     string // unique label in the throughput tables
	tool    string // what it is: "recluster (Go)", "PM2", ...
	version string
	mode    string // how it is run: "shared socket", "cluster mode", ...
	workers int
	addr    string
	note    string // how it works, for the report
	peer    string // its name in the reload runs, "" when it has none
	// manager returns the pid of the process that manages the workers (a
	// master or daemon), or 0 when there is none.
	manager func() int
	// reload swaps the servers for new ones and returns once the new ones
	// serve.
	reload func(ctx context.Context) error
	stop   func()
}

// cmpTools is what the scenario built and installed, and their versions.
type cmpTools struct {
	plain        string // bench/compare/plain binary
	tableflip    string // bench/compare/tableflip binary, "" when it did not build
	tableflipVer string
	nodeDir      string // installed npm project, "" when node or npm is missing
	nodeVer      string
	pm2Ver       string
	reclusterNpm string // npm recluster version
	goVer        string
	reclusterVer string
	notes        []string // what was skipped and why
}

// cmpPrepare builds the Go programs and installs the npm project into
// env.Dir. A missing peer is a note, not an error; only the ceiling is
// required.
func cmpPrepare(ctx context.Context, env *Env) (*cmpTools, error) {
	t := &cmpTools{goVer: cmdOut("go", "env", "GOVERSION"), reclusterVer: reclusterRevision()}
	t.plain = filepath.Join(env.Dir, "compare-plain")
	env.Log("compare: go build ./compare/plain (in bench/)")
	build := exec.CommandContext(ctx, "go", "build", "-o", t.plain, "./compare/plain")
	build.Dir = filepath.Join(env.Root, "bench")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./compare/plain in bench/: %v: %s", err, out)
	}

	// tableflip is a module of its own so that recluster does not depend on
	// it; build it in its directory.
	tfDir := filepath.Join(env.Root, "bench", "compare", "tableflip")
	t.tableflipVer = goModRequire(filepath.Join(tfDir, "go.mod"), "github.com/cloudflare/tableflip")
	bin := filepath.Join(env.Dir, "compare-tableflip")
	env.Log("compare: go build in bench/compare/tableflip (github.com/cloudflare/tableflip %s)", t.tableflipVer)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = tfDir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.notes = append(t.notes, fmt.Sprintf("tableflip skipped: `go build` in bench/compare/tableflip failed: %s", oneLine(lastLine(string(out), err))))
	} else {
		t.tableflip = bin
	}

	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		t.notes = append(t.notes, "Node recluster and PM2 skipped: `node` and `npm` are not both in $PATH.")
		return t, nil
	}
	t.nodeVer = cmdOut(node, "--version")
	src := filepath.Join(env.Root, "bench", "compare", "node")
	dst := filepath.Join(env.Dir, "compare-node")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return nil, err
	}
	for _, f := range []string{"package.json", "package-lock.json", "server.js", "cluster.js"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			return nil, err
		}
	}
	env.Log("compare: npm ci in %s", dst)
	ictx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd = exec.CommandContext(ictx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dst
	if out, err := cmd.CombinedOutput(); err != nil {
		t.notes = append(t.notes, fmt.Sprintf("Node recluster and PM2 skipped: `npm ci` failed: %s", oneLine(lastLine(string(out), err))))
		return t, nil
	}
	t.nodeDir = dst
	t.pm2Ver = npmVersion(dst, "pm2")
	t.reclusterNpm = npmVersion(dst, "recluster")
	return t, nil
}

// reclusterRevision names the recluster under test: the commit, +dirty
// with local changes.
func reclusterRevision() string {
	rev, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "this tree"
	}
	s := "commit " + strings.TrimSpace(string(rev))
	if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(out) > 0 {
		s += "+dirty"
	}
	return s
}

// lastLine returns the last non-empty line of out, or err's text.
func lastLine(out string, err error) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return err.Error()
}

// goModRequire returns the version of module mod required in a go.mod.
func goModRequire(gomod, mod string) string {
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && f[0] == mod {
			return f[1]
		}
	}
	return "unknown"
}

// npmVersion returns the installed version of an npm package.
func npmVersion(dir, pkg string) string {
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", pkg, "package.json"))
	if err != nil {
		return "unknown"
	}
	var p struct{ Version string }
	if json.Unmarshal(b, &p) != nil || p.Version == "" {
		return "unknown"
	}
	return p.Version
}

// cmpProc is a process the scenario started, with its output in a log file
// and each output line offered to onLine.
type cmpProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// cmpStart starts bin with args; its stdout and stderr go to a log file in
// env.Dir named after name. onLine, when set, sees every stdout line.
func cmpStart(env *Env, name, dir string, extraEnv []string, onLine func(string), bin string, args ...string) (*cmpProc, error) {
	p := &cmpProc{log: filepath.Join(env.Dir, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), extraEnv...)
	p.cmd.Stderr = logf
	// If the suite dies, so does what it started directly.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	var out io.ReadCloser
	if onLine != nil {
		if out, err = p.cmd.StdoutPipe(); err != nil {
			logf.Close()
			return nil, err
		}
	} else {
		p.cmd.Stdout = logf
	}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	var scanned sync.WaitGroup
	if out != nil {
		scanned.Go(func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				fmt.Fprintln(logf, sc.Text())
				onLine(sc.Text())
			}
		})
	}
	go func() {
		scanned.Wait()
		p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// pid is the process's pid.
func (p *cmpProc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *cmpProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to timeout, then SIGKILLs.
func (p *cmpProc) stop(timeout time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// cmpWaitWorkers sends requests on new connections to addr until n distinct
// X-Worker-Id values have answered, or timeout.
func cmpWaitWorkers(ctx context.Context, addr string, n int, timeout time.Duration, alive func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	seen := map[string]bool{}
	var last error
	for len(seen) < n {
		if alive != nil && !alive() {
			return errors.New("the server exited")
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				seen[resp.Header.Get(loadgen.HeaderWorkerID)] = true
				continue
			}
			err = errors.New(resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d workers answered on %s: %v (last: %v)", len(seen), n, addr, ctx.Err(), last)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// procGone reports whether pid has exited (a zombie counts as exited).
func procGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// waitGone waits until pid has exited, or ctx ends.
func waitGone(ctx context.Context, pid int) error {
	for !procGone(pid) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("pid %d still running: %w", pid, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// startCeiling starts n copies of bench/compare/plain on one port, each
// binding it with SO_REUSEPORT: no manager at all.
func startCeiling(ctx context.Context, env *Env, tools *cmpTools, n int) (*cmpTarget, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var procs []*cmpProc
	stop := func() {
		for _, p := range procs {
			p.stop(5 * time.Second)
		}
	}
	for i := range n {
		p, err := cmpStart(env, fmt.Sprintf("compare-plain-%d-%d", port, i), "", nil, nil, tools.plain, "-addr", addr, "-id", strconv.Itoa(i))
		if err != nil {
			stop()
			return nil, err
		}
		procs = append(procs, p)
	}
	alive := func() bool {
		for _, p := range procs {
			if p.exited() {
				return false
			}
		}
		return true
	}
	if err := cmpWaitWorkers(ctx, addr, n, 10*time.Second, alive); err != nil {
		stop()
		return nil, fmt.Errorf("ceiling: %w (log %s: %s)", err, procs[0].log, tail(procs[0].log, 300))
	}
	return &cmpTarget{
		key: fmt.Sprintf("ceiling-%d", n), tool: "ceiling: N plain processes", version: tools.goVer,
		mode: "SO_REUSEPORT, no manager", workers: n, addr: addr,
		note:    "bench/compare/plain: the hello handler on plain net/http; each process binds the port itself and the kernel spreads connections over N accept queues",
		manager: func() int { return 0 }, stop: stop,
	}, nil
}

// startReclusterCLI starts `recluster run -w n` with examples/hello, on the
// shared socket or with --reuseport.
func startReclusterCLI(ctx context.Context, env *Env, tools *cmpTools, n int, reuseport bool) (*cmpTarget, error) {
	m, err := StartMaster(ctx, env, MasterConfig{Workers: n, ReusePort: reuseport})
	if err != nil {
		return nil, err
	}
	t := &cmpTarget{
		key: fmt.Sprintf("recluster-shared-%d", n), tool: "recluster (Go) + examples/hello", version: tools.reclusterVer,
		mode: "shared socket (default)", workers: n, addr: m.Addr,
		note:    "`recluster run --listen`: the workers accept on duplicates of the master's one socket; the master is not in the data path",
		peer:    "recluster",
		manager: func() int { return m.PID },
		reload:  m.Reload,
		stop:    func() { m.Stop(15 * time.Second) },
	}
	if reuseport {
		t.key, t.mode = fmt.Sprintf("recluster-reuseport-%d", n), "--reuseport"
		t.note = "one SO_REUSEPORT socket per slot, bound and kept by the master"
		t.peer = ""
	}
	return t, nil
}

// startNodeRecluster starts bench/compare/node/cluster.js: doxout/recluster
// with n workers of server.js, reloaded by SIGUSR2.
func startNodeRecluster(ctx context.Context, env *Env, tools *cmpTools, n int) (*cmpTarget, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ready := make(chan struct{}, 1)
	reloaded := make(chan struct{}, 16)
	onLine := func(line string) {
		switch strings.TrimSpace(line) {
		case "ready":
			select {
			case ready <- struct{}{}:
			default:
			}
		case "reloaded":
			select {
			case reloaded <- struct{}{}:
			default:
			}
		}
	}
	p, err := cmpStart(env, fmt.Sprintf("compare-node-recluster-%d", port), tools.nodeDir,
		[]string{"PORT=" + strconv.Itoa(port), "HOST=127.0.0.1", "WORKERS=" + strconv.Itoa(n), "NODE_ENV=development"},
		onLine, "node", "cluster.js")
	if err != nil {
		return nil, err
	}
	select {
	case <-ready:
	case <-p.done:
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	if err := cmpWaitWorkers(ctx, addr, n, 10*time.Second, func() bool { return !p.exited() }); err != nil {
		p.stop(5 * time.Second)
		return nil, fmt.Errorf("node recluster: %w (log %s: %s)", err, p.log, tail(p.log, 300))
	}
	reload := func(ctx context.Context) error {
		for len(reloaded) > 0 { // a stale notice
			<-reloaded
		}
		if err := p.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
			return err
		}
		select {
		case <-reloaded:
			return nil
		case <-p.done:
			return errors.New("cluster.js exited")
		case <-ctx.Done():
			return fmt.Errorf("no \"reloaded\" from cluster.js: %w", ctx.Err())
		}
	}
	return &cmpTarget{
		key: fmt.Sprintf("node-recluster-%d", n), tool: "Node recluster (npm)", version: tools.reclusterNpm + ", node " + tools.nodeVer,
		mode: "node:cluster, master round-robin", workers: n, addr: addr,
		note: "cluster.js as in recluster's README (timeout 1 s); Node's cluster master accepts every connection and passes it to a worker",
		peer: "Node recluster", manager: func() int { return p.pid() }, reload: reload,
		stop: func() { p.stop(5 * time.Second) },
	}, nil
}

// startPM2 starts server.js in PM2 cluster mode with n instances, with a
// PM2_HOME of its own; stop runs `pm2 kill`, which ends the daemon it
// started.
func startPM2(ctx context.Context, env *Env, tools *cmpTools, n int) (*cmpTarget, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	home := filepath.Join(env.Dir, fmt.Sprintf("pm2-%d", port))
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	bin := filepath.Join(tools.nodeDir, "node_modules", ".bin", "pm2")
	// A small environment: the PM2 daemon hands its environment to the app.
	penv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "PM2_HOME=" + home,
		"PORT=" + strconv.Itoa(port), "HOST=127.0.0.1", "NODE_ENV=development"}
	pm2 := func(ctx context.Context, args ...string) error {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir, cmd.Env = tools.nodeDir, penv
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("pm2 %s: %v: %s", strings.Join(args, " "), err, oneLine(lastLine(string(out), err)))
		}
		return nil
	}
	daemon := func() int {
		b, _ := os.ReadFile(filepath.Join(home, "pm2.pid"))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	stop := func() {
		kctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		pid := daemon()
		if err := pm2(kctx, "kill"); err != nil {
			env.Log("compare: %v", err)
		}
		// The daemon is ours: make sure it is gone.
		if pid > 0 && !procGone(pid) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			wctx, wcancel := context.WithTimeout(context.Background(), 3*time.Second)
			if waitGone(wctx, pid) != nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			wcancel()
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := pm2(sctx, "start", "server.js", "-i", strconv.Itoa(n), "--name", "compare"); err != nil {
		stop()
		return nil, err
	}
	if err := cmpWaitWorkers(ctx, addr, n, 15*time.Second, nil); err != nil {
		stop()
		return nil, fmt.Errorf("pm2: %w", err)
	}
	return &cmpTarget{
		key: fmt.Sprintf("pm2-%d", n), tool: "PM2", version: tools.pm2Ver + ", node " + tools.nodeVer,
		mode: "cluster mode (-i N), daemon round-robin", workers: n, addr: addr,
		note: "`pm2 start server.js -i N`, `pm2 reload`; the PM2 daemon is the cluster master and passes every connection to a worker; server.js closes its server on SIGINT (PM2's graceful-shutdown recipe), default kill_timeout",
		peer: "PM2", manager: daemon,
		reload: func(ctx context.Context) error { return pm2(ctx, "reload", "compare") },
		stop:   stop,
	}, nil
}

// startTableflip starts the tableflip server: one process, upgraded in
// place on SIGHUP. Each upgrade's new process is a child of the old one, so
// it watches the suite's pid to end with it.
func startTableflip(ctx context.Context, env *Env, tools *cmpTools) (*cmpTarget, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pidFile := filepath.Join(env.Dir, fmt.Sprintf("compare-tableflip-%d.pid", port))
	p, err := cmpStart(env, fmt.Sprintf("compare-tableflip-%d", port), "", nil, nil, tools.tableflip,
		"-addr", addr, "-pid-file", pidFile, "-watch-pid", strconv.Itoa(os.Getpid()))
	if err != nil {
		return nil, err
	}
	current := func() int {
		b, _ := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	stop := func() {
		if pid := current(); pid > 0 && pid != p.pid() && !procGone(pid) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if waitGone(wctx, pid) != nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			cancel()
		}
		p.stop(5 * time.Second)
	}
	if err := cmpWaitWorkers(ctx, addr, 1, 10*time.Second, func() bool { return !p.exited() }); err != nil {
		stop()
		return nil, fmt.Errorf("tableflip: %w (log %s: %s)", err, p.log, tail(p.log, 300))
	}
	// An upgrade: SIGHUP to the current process; done once the new process
	// has written the pid file (after Ready) and the old one has exited,
	// which tableflip needs before it allows the next upgrade.
	reload := func(ctx context.Context) error {
		old := current()
		if old <= 0 {
			return errors.New("no pid in the pid file")
		}
		if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
			return err
		}
		for {
			if pid := current(); pid > 0 && pid != old {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("no new process after SIGHUP: %w", ctx.Err())
			case <-time.After(2 * time.Millisecond):
			}
		}
		return waitGone(ctx, old)
	}
	return &cmpTarget{
		key: "tableflip", tool: "tableflip (Go)", version: "github.com/cloudflare/tableflip " + tools.tableflipVer + ", " + tools.goVer,
		mode: "one process, in-place upgrade", workers: 1, addr: addr,
		note: "tableflip's example: SIGHUP upgrades; the old process calls `http.Server.Shutdown` as soon as the new one is ready. One process with GOMAXPROCS=2",
		peer: "tableflip", manager: func() int { return 0 }, reload: reload, stop: stop,
	}, nil
}
