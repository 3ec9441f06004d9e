package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/control"
	"github.com/recluster-go/recluster/metrics"
)

const runUsage = `Usage: recluster run [FLAGS] -- PROGRAM [ARGS...]

Start a master that runs PROGRAM (a path, or a name looked up in $PATH) as a
cluster of workers, and keep it running until it is told to stop.

Every worker gets WORKER_ID (its slot, 0 to N-1), RECLUSTER_GENERATION and a
NOTIFY_SOCKET of its own for sd_notify. With --listen it also gets the
master's sockets the systemd way: as fds 3, 4, ..., with LISTEN_FDS,
LISTEN_FDNAMES, and LISTEN_PID set to the worker's own pid (left out, to
save a start of this binary per worker, once a worker of the same program
file said {"cmd":"listening","listen_pid":"optional"} on its channel).

Flags:
  -w, --workers N           number of workers (default: one per CPU)
      --listen [NAME=]ADDR  bind ADDR in the master before any worker starts
                            and pass it to every worker; repeatable. ADDR is
                            HOST:PORT, :PORT, tcp4:HOST:PORT, tcp6:HOST:PORT,
                            unix:PATH or /PATH. NAME goes to LISTEN_FDNAMES
                            (default "listen")
      --ready-when MODE     when a new worker counts as ready: listening,
                            started or ready (default listening; see below)
      --min-uptime DUR      with --listen and --ready-when listening: how long a
                            worker that does not say it listens must run to
                            count as listening (default 1s); see below
      --ready-timeout DUR   how long a new worker may take to get ready before
                            it is killed and a reload aborted (default 30s)
      --timeout DUR         how long a worker may drain after it is told to
                            stop before it is killed; 0 kills at once
                            (default 1s, or 1h with RECLUSTER_ENV=production)
      --respawn DUR         minimum gap between respawns of workers that died
                            (default 1s)
      --backoff DUR         double the respawn gap after each crash, up to DUR;
                            0 disables (default 0)
      --stop-signal SIG     signal sent to a worker with the disconnect message:
                            TERM, INT, QUIT, HUP, USR1, USR2, WINCH or none
                            (default TERM)
      --env KEY=VALUE       add a variable to the workers' environment;
                            repeatable
      --dir DIR             the workers' working directory (default: the
                            master's); a relative PROGRAM is found there
      --output FORMAT       how the workers' output is written, one whole line
                            at a time: labelled ([SLOT PID gGEN] first),
                            plain or json (default labelled; see below)
      --prefix              the same as --output labelled; --prefix=false is
                            --output plain (kept for old command lines)
      --log-file PATH       append the master's log and the workers' output
                            to PATH instead of stderr and stdout; reopened on
                            USR1 and on recluster logs --reopen (logrotate)
      --control PATH        the control socket (default: see recluster help)
      --reuseport           give each slot a socket of its own with
                            SO_REUSEPORT, inherited by every generation of
                            the slot: the kernel spreads connections evenly
                            (see docs/operations.md for the trade-off)
      --sticky              send every connection from one client IP to the
                            same slot, chosen in the kernel; implies
                            --reuseport; Linux, TCP, not behind a proxy or
                            NAT (see docs/operations.md)
      --no-handoff          keep idle keep-alive connections in a draining
                            worker (Connection: close, grace, close) instead
                            of handing them to the new generation
      --metrics ADDR        serve Prometheus /metrics, /healthz, /readyz and
                            /status (read only) on ADDR
      --user USER           run the workers as USER (name or uid); the master
                            must run as root, binds the sockets and keeps them
      --group GROUP         run the workers with GROUP (default: USER's group)
      --heartbeat-timeout DUR
                            replace a worker that sent no heartbeat (channel
                            message or WATCHDOG=1) for DUR; 0 disables
      --max-rss SIZE        recycle a worker whose memory passes SIZE (bytes,
                            or with K, M or G: 512M); 0 disables
      --max-age DUR         recycle a worker older than DUR, less up to 10%
                            jitter; 0 disables. Recycling starts the
                            replacement first, as a reload does
      --log-format FORMAT   the master's log on stderr: text or json
                            (default text)
      --log-level LEVEL     debug, info, warn or error (default info)
      --config FILE         read settings from a JSON, YAML or TOML file
  -h, --help                show this help

DUR is a number with a unit: 500ms, 10s, 2m, 1h.

The workers' output (stdout and stderr) goes through the master, which
writes it one whole line at a time, so that lines of different workers never
mix, and keeps the last 2000 lines (at most 1 MiB) for recluster logs. A
line longer than 16 KiB is cut into pieces, each but the last ending in
"...[continued]". A slow stdout slows the workers' writes; one that takes
nothing for a second has lines dropped and counted rather than stall them.

Every flag but --env and --config has an environment variable: RECLUSTER_
and the flag's name in capitals with - as _ (RECLUSTER_WORKERS,
RECLUSTER_READY_WHEN, ...); RECLUSTER_LISTEN takes a comma-separated list.
RECLUSTER_CONFIG names the config file. Its format follows its extension:
.json (an object), .yaml or .yml (a mapping) or .toml (top-level keys). The
keys are the flags' long names; an unknown key is an error that suggests the
nearest name, in every format alike:

  {"workers": 4, "listen": ["http=127.0.0.1:8080"], "ready-when": "ready",
   "timeout": "30s", "env": ["APP_ENV=production"]}

  workers: 4                        workers = 4
  listen: [http=127.0.0.1:8080]     listen = ["http=127.0.0.1:8080"]
  timeout: 30s                      timeout = "30s"

A flag wins over its environment variable, which wins over the config file,
which wins over the default.

Readiness (--ready-when), which a reload waits for before it stops the old
workers:
  listening  the worker listens: it got a socket from the master through the
             recluster channel, or, with --listen, it said it listens on the
             socket it inherited (Go's worker.Listen does both) or has run
             for --min-uptime: a program that dies at start-up aborts its
             reload instead of replacing the old workers
  started    the process is running: for programs that speak neither sd_notify
             nor the channel
  ready      the worker says so: READY=1 on its NOTIFY_SOCKET (sd_notify) or
             the channel's ready message. Use it for programs that send
             READY=1: it is the only mode that waits until they really serve

Signals to the master:
  HUP, USR2   reload: start a new generation, then stop the old one
  TERM, INT   stop gracefully (a second one kills the workers at once); the
              exit status is 0 after a clean stop
  TTIN, TTOU  add or remove one worker
  USR1        reopen --log-file, and forwarded to every worker

Under systemd (Type=notify, or notify-reload) the master sends READY=1 once
its first workers are ready, RELOADING=1 and READY=1 around each reload and
STOPPING=1 on the way out, and it stays the main pid. Sockets that systemd
passes to it (LISTEN_FDS) serve the --listen addresses they match (by NAME
or by address); without --listen, every passed socket goes to the workers.
As PID 1 in a container, it also reaps every orphan that ends.

Examples:
  recluster run -w 4 --listen 127.0.0.1:8080 -- ./server
  recluster run --listen http=:80 --ready-when ready -- python3 app.py
  RECLUSTER_WORKERS=2 recluster run --config /etc/app/recluster.json -- app
`

// runConfig is everything recluster run was told.
type runConfig struct {
	workers                                 int
	listen, env                             []string
	readyWhen, stopSignal, dir, controlPath string
	logFormat, logLevel, configPath         string
	output, logFile                         string
	timeout, respawn, backoff, readyTimeout time.Duration
	timeoutSet                              bool // --timeout 0 kills at once, unlike no --timeout
	minUptime                               time.Duration
	minUptimeSet                            bool
	prefix, reusePort                       bool
	sticky, noHandoff                       bool
	metricsAddr, user, group                string
	heartbeatTimeout, maxAge                time.Duration
	maxRSS                                  int64
	program                                 string
	args                                    []string
}

var signalNames = map[string]syscall.Signal{
	"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "HUP": syscall.SIGHUP,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "WINCH": syscall.SIGWINCH, "NONE": 0,
}

func checkSignal(s string) error {
	if _, ok := signalNames[strings.TrimPrefix(strings.ToUpper(s), "SIG")]; !ok {
		return errors.New("want TERM, INT, QUIT, HUP, USR1, USR2, WINCH or none")
	}
	return nil
}

func checkEnv(kv string) error {
	if i := strings.IndexByte(kv, '='); i <= 0 {
		return fmt.Errorf("%q is not KEY=VALUE", kv)
	}
	return nil
}

func checkListen(v string) error {
	_, err := parseListen(v)
	return err
}

// newRunFlags returns the flag set of recluster run and its settings.
func newRunFlags(cfg *runConfig) (*flag.FlagSet, []*setting) {
	cfg.readyWhen, cfg.stopSignal, cfg.logFormat, cfg.logLevel = "listening", "TERM", "text", "info"
	cfg.controlPath = control.DefaultPath()
	cfg.prefix = true // labelled output is the default; --prefix=false asks for plain
	settings := []*setting{
		{name: "workers", short: "w", env: "RECLUSTER_WORKERS", value: intValue{&cfg.workers, 1}},
		{name: "listen", env: "RECLUSTER_LISTEN", value: listValue{&cfg.listen, checkListen}, list: true},
		{name: "ready-when", env: "RECLUSTER_READY_WHEN", value: stringValue{&cfg.readyWhen, oneOf("listening", "started", "ready")}},
		{name: "min-uptime", env: "RECLUSTER_MIN_UPTIME", value: durationValue{&cfg.minUptime, &cfg.minUptimeSet, atLeast(0, "want a duration of 0 or more")}},
		{name: "ready-timeout", env: "RECLUSTER_READY_TIMEOUT", value: durationValue{&cfg.readyTimeout, nil, atLeast(time.Millisecond, "want a duration of at least 1ms")}},
		{name: "timeout", env: "RECLUSTER_TIMEOUT", value: durationValue{&cfg.timeout, &cfg.timeoutSet, atLeast(0, "want a duration of 0 or more")}},
		{name: "respawn", env: "RECLUSTER_RESPAWN", value: durationValue{&cfg.respawn, nil, atLeast(time.Millisecond, "want a duration of at least 1ms")}},
		{name: "backoff", env: "RECLUSTER_BACKOFF", value: durationValue{&cfg.backoff, nil, atLeast(0, "want a duration of 0 or more")}},
		{name: "stop-signal", env: "RECLUSTER_STOP_SIGNAL", value: stringValue{&cfg.stopSignal, checkSignal}},
		{name: "env", value: listValue{&cfg.env, checkEnv}, list: true},
		{name: "dir", env: "RECLUSTER_DIR", value: stringValue{&cfg.dir, notEmpty}},
		{name: "output", env: "RECLUSTER_OUTPUT", value: stringValue{&cfg.output, oneOf(outputFormats...)}},
		{name: "prefix", env: "RECLUSTER_PREFIX", value: boolValue{&cfg.prefix}},
		{name: "log-file", env: "RECLUSTER_LOG_FILE", value: stringValue{&cfg.logFile, notEmpty}},
		{name: "control", env: "RECLUSTER_CONTROL", value: stringValue{&cfg.controlPath, notEmpty}},
		{name: "reuseport", env: "RECLUSTER_REUSEPORT", value: boolValue{&cfg.reusePort}},
		{name: "sticky", env: "RECLUSTER_STICKY", value: boolValue{&cfg.sticky}},
		{name: "no-handoff", env: "RECLUSTER_NO_HANDOFF", value: boolValue{&cfg.noHandoff}},
		{name: "metrics", env: "RECLUSTER_METRICS", value: stringValue{&cfg.metricsAddr, notEmpty}},
		{name: "user", env: "RECLUSTER_USER", value: stringValue{&cfg.user, notEmpty}},
		{name: "group", env: "RECLUSTER_GROUP", value: stringValue{&cfg.group, notEmpty}},
		{name: "heartbeat-timeout", env: "RECLUSTER_HEARTBEAT_TIMEOUT", value: durationValue{&cfg.heartbeatTimeout, nil, atLeast(0, "want a duration of 0 or more")}},
		{name: "max-rss", env: "RECLUSTER_MAX_RSS", value: sizeValue{&cfg.maxRSS}},
		{name: "max-age", env: "RECLUSTER_MAX_AGE", value: durationValue{&cfg.maxAge, nil, atLeast(0, "want a duration of 0 or more")}},
		{name: "log-format", env: "RECLUSTER_LOG_FORMAT", value: stringValue{&cfg.logFormat, oneOf("text", "json")}},
		{name: "log-level", env: "RECLUSTER_LOG_LEVEL", value: stringValue{&cfg.logLevel, oneOf("debug", "info", "warn", "error")}},
		{name: "config", env: "RECLUSTER_CONFIG", value: stringValue{&cfg.configPath, notEmpty}},
	}
	fs := flag.NewFlagSet("recluster run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, s := range settings {
		fs.Var(s.value, s.name, "")
		if s.short != "" {
			fs.Var(s.value, s.short, "")
		}
	}
	return fs, settings
}

// parseRun turns recluster run's arguments, environment and config file
// into a runConfig.
func parseRun(args []string, getenv func(string) string) (*runConfig, error) {
	cfg := &runConfig{}
	fs, settings := newRunFlags(cfg)
	configPath := func() string {
		if cfg.configPath != "" {
			return cfg.configPath
		}
		return getenv("RECLUSTER_CONFIG")
	}
	rest, dashdash, err := layer(fs, settings, args, getenv, configPath)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil, errHelpShown
	case err != nil:
		return nil, usagef("run: %s (see recluster help run)", flagError(err))
	case len(rest) == 0:
		return nil, usagef("run: no program given: recluster run [FLAGS] -- PROGRAM [ARGS...]")
	case !dashdash:
		return nil, usagef("run: put -- before the program, as in recluster run [FLAGS] -- %s ...; it keeps the program's own flags apart from recluster's", rest[0])
	}
	cfg.program, cfg.args = rest[0], rest[1:]
	if cfg.program == "" {
		return nil, usagef("run: the program name is empty")
	}
	seen := map[string]bool{}
	for _, l := range cfg.listen {
		spec, _ := parseListen(l)
		key := spec.sock.Network + " " + spec.sock.Address
		if seen[key] {
			return nil, usagef("run: --listen %s is given twice", spec.sock.Address)
		}
		seen[key] = true
	}
	return cfg, nil
}

// flagError rewords the flag package's messages, which write every flag
// with one dash, with the two dashes of the long form.
func flagError(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag -" + name
	}
	return longFlag.ReplaceAllString(msg, "$1--$2")
}

var longFlag = regexp.MustCompile(`(^|\s)-([a-zA-Z][a-zA-Z0-9-]+)`)

// options builds the library's Options from cfg.
func (cfg *runConfig) options(log *slog.Logger) (string, recluster.Options, []listenSpec, error) {
	program := cfg.program
	if !strings.Contains(program, "/") {
		p, err := exec.LookPath(program)
		if err != nil {
			return "", recluster.Options{}, nil, usagef("run: program %q is not found in $PATH; give its path, such as ./%s", program, program)
		}
		program = p
	}
	o := recluster.Options{
		Workers:           cfg.workers,
		ReadyWhen:         recluster.ReadyWhen(cfg.readyWhen),
		Args:              cfg.args,
		Env:               cfg.env,
		Dir:               cfg.dir,
		Logger:            log,
		DisableRespawnLog: true, // the respawn-scheduled event is logged instead
		StopSignal:        signalNames[strings.TrimPrefix(strings.ToUpper(cfg.stopSignal), "SIG")],
		OutputFormat:      cfg.outputFormat(),
		ReusePort:         cfg.reusePort,
		Sticky:            cfg.sticky,
		DisableHandoff:    cfg.noHandoff,
		User:              cfg.user,
		Group:             cfg.group,
		HeartbeatTimeout:  cfg.heartbeatTimeout,
		MaxRSS:            cfg.maxRSS,
		MaxAge:            cfg.maxAge,
		Notify:            runtime.GOOS == "linux",
		ReapOrphans:       os.Getpid() == 1,
	}
	if cfg.timeoutSet {
		o.Timeout = cfg.timeout
		if o.Timeout == 0 {
			o.Timeout = -1 // the library's "kill at once"
		}
	}
	// Zero is the library's default for these: --respawn and
	// --ready-timeout cannot be 0, and --backoff 0 disables the backoff,
	// as no --backoff does.
	o.Respawn, o.Backoff, o.ReadyTimeout = cfg.respawn, cfg.backoff, cfg.readyTimeout
	if cfg.minUptimeSet {
		o.MinUptime = cfg.minUptime
		if o.MinUptime == 0 {
			o.MinUptime = -1 // the library's "at once"
		}
	}
	if respawn := cmp.Or(o.Respawn, time.Second); o.Backoff > 0 && o.Backoff < respawn {
		return "", o, nil, usagef("run: --backoff %v is below --respawn %v; the backoff caps the respawn gap, so make it at least --respawn, or 0 to disable it", o.Backoff, respawn)
	}
	var specs []listenSpec
	for _, l := range cfg.listen {
		spec, err := parseListen(l)
		if err != nil {
			return "", o, nil, usagef("run: --listen %v", err)
		}
		specs = append(specs, spec)
	}
	return program, o, specs, nil
}

// outputFormats are the values of --output.
var outputFormats = []string{string(recluster.OutputLabelled), string(recluster.OutputPlain), string(recluster.OutputJSON)}

// outputFormat is --output, or what --prefix stands for when --output is
// not given.
func (cfg *runConfig) outputFormat() recluster.OutputFormat {
	switch {
	case cfg.output != "":
		return recluster.OutputFormat(cfg.output)
	case cfg.prefix:
		return recluster.OutputLabelled
	}
	return recluster.OutputPlain
}

// withoutEventLines drops the records that repeat a lifecycle event.
type withoutEventLines struct{ slog.Handler }

func (h withoutEventLines) Handle(ctx context.Context, r slog.Record) error {
	repeat := false
	r.Attrs(func(a slog.Attr) bool {
		repeat = a.Key == "event"
		return !repeat
	})
	if repeat {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h withoutEventLines) WithAttrs(attrs []slog.Attr) slog.Handler {
	return withoutEventLines{h.Handler.WithAttrs(attrs)}
}

func (h withoutEventLines) WithGroup(name string) slog.Handler {
	return withoutEventLines{h.Handler.WithGroup(name)}
}

// runCommand is recluster run.
func runCommand(args []string, stdout, stderr io.Writer) error {
	cfg, err := parseRun(args, os.Getenv)
	if errors.Is(err, errHelpShown) {
		fmt.Fprint(stdout, runUsage)
		return err
	}
	if err != nil {
		return err
	}
	tuneMasterRuntime(os.Getenv)
	var file *logFile
	if cfg.logFile != "" {
		if file, err = openLogFile(cfg.logFile); err != nil {
			return err
		}
		defer file.Close()
		stderr = file
	}
	logs := newMasterLog(cfg, stderr)
	defer logs.close()
	log := logs.master
	program, opts, specs, err := cfg.options(logs.library)
	if err != nil {
		return err
	}
	if file != nil {
		opts.Stdout, opts.Stderr = file, file
	}
	// What systemd gave the master is the master's: take it out of the
	// environment before any worker is spawned.
	notify := &sdNotifier{log: log.Warn}
	specs = matchInherited(specs, takeInherited(), log)
	for _, s := range specs {
		opts.Sockets = append(opts.Sockets, s.sock)
	}

	m := &master{log: log, notify: notify, stopReq: make(chan struct{}, 1), logFile: file}
	opts.OnEventSync = m.logEvent
	opts.OnEvent = m.onEvent
	var mx *metrics.Metrics
	if cfg.metricsAddr != "" {
		mx = metrics.New(metrics.Options{Program: program})
		opts.OnEventSync = func(e recluster.Event) { m.logEvent(e); mx.Observe(e) }
	}
	c := recluster.New(program, opts)
	m.c = c
	if err := c.Validate(); err != nil {
		return usageError{err.Error()}
	}
	// A master started by recluster upgrade takes over its predecessor's
	// sockets and workers.
	inh := recluster.Inherited()
	var metricsLn net.Listener
	if mx != nil {
		mx.Attach(c)
		if metricsLn, err = inheritedListener(inh, "metrics"); err == nil && metricsLn == nil {
			metricsLn, err = metrics.Listen(cfg.metricsAddr)
		}
		if err != nil {
			return err
		}
		defer metricsLn.Close()
		ctx, stopMetrics := context.WithCancel(context.Background())
		defer stopMetrics()
		go func() {
			if err := mx.Serve(ctx, metricsLn); err != nil {
				log.Error(err.Error())
			}
		}()
	}

	ln, err := controlListener(inh, cfg.controlPath)
	if err != nil {
		return err
	}
	srv := &control.Server{Cluster: c, Program: program, Logger: log, Stop: m.requestStop, Reopen: m.reopenLogFile, Upgrade: upgradeHook(m, metricsLn)}

	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR1)
	defer signal.Stop(signals)

	if err := c.Run(); err != nil {
		ln.Close()
		return err
	}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, net.ErrClosed) {
			log.Error("recluster: the control socket stopped serving", "error", err)
		}
	}()
	log.Info("recluster: master running", "pid", os.Getpid(), "control", cfg.controlPath)
	if inh != nil {
		m.log.Info("recluster: upgraded in place", "from", inh.PreviousVersion(), "to", c.Status().Version, "upgrades", inh.Upgrades())
		answerUpgrade(inh, c)
		if m.allActive() {
			st := c.Status()
			m.notify.started(firstReady(st.Slots, st.Generation))
		}
	}

	code := m.loop(signals)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	srv.Close(ctx)
	cancel()
	if code != exitOK {
		return exitError{errors.New("stopped in the middle of a reload, which did not finish"), code}
	}
	log.Info("recluster: master stopped")
	return nil
}
