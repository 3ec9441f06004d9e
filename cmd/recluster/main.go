// Command recluster runs any server program as a cluster of worker
// processes that share the master's listening sockets, replaces workers
// that die, and reloads them without dropping a connection.
//
//	recluster run [FLAGS] -- PROGRAM [ARGS...]
//	recluster reload [--no-wait]
//	recluster restart SLOT...
//	recluster status [--json]
//	recluster scale N|+N|-N
//	recluster stop
//	recluster logs [-f] [--slot N] [--lines N]
//	recluster upgrade
//	recluster version
//
// Run recluster help for the details.
//
// The master is package [github.com/recluster-go/recluster] driven by flags,
// signals and a control socket; its --metrics endpoints are package
// [github.com/recluster-go/recluster/metrics]. Workers written in Go use
// package [github.com/recluster-go/recluster/worker]; any other program
// takes its sockets the systemd way (LISTEN_FDS) and may say it is ready
// with sd_notify.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/recluster-go/recluster"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed at run time
	exitUsage   = 2 // the command line, environment or config file is wrong
)

// usageError is a mistake in what the user asked for (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const mainUsage = `Usage: recluster COMMAND [ARGS...]

Run a server program as a cluster of worker processes: the master binds the
listening sockets and passes them to every worker, replaces workers that die,
and reloads the program without dropping a connection. Programs that speak
the systemd protocols (socket activation, sd_notify) need no change.

Commands:
  run [FLAGS] -- PROGRAM [ARGS...]  start a master and its workers
  reload [--no-wait]                start a new generation of workers and wait
                                    until it serves (or the reload fails)
  restart SLOT...                   replace the workers of some slots, one at
                                    a time, each once its successor is ready
  status [--json]                   show each worker's slot, pid, generation,
                                    state, uptime, restarts, memory and CPU
  top                               a live view of the workers, with keys to
                                    reload, scale and restart
  scale N|+N|-N                     set the number of workers, or add or
                                    remove some
  stop                              stop the workers gracefully, then the master
  logs [-f] [--slot N] [--lines N]  print the workers' recent output, which the
                                    master keeps; -f follows new lines
  upgrade                           re-execute the master from its binary on
                                    disk, in place: same pid, same sockets,
                                    the workers keep running
  version                           print this binary's version
  completion bash|zsh|fish          print a shell completion script
  man                               print the manual page (roff)
  unit [--socket] [RUN FLAGS] -- PROGRAM
                                    print a systemd unit for that run command
  help [COMMAND]                    show the help of a command

reload, restart, status, top, scale, stop, logs and upgrade talk to a
running master through its control socket; give it with --control PATH or
RECLUSTER_CONTROL. The default is $XDG_RUNTIME_DIR/recluster.sock, or
recluster-UID/control.sock in $TMPDIR (/tmp) when XDG_RUNTIME_DIR is not set. Two clusters on one host need two
paths.

Exit status: 0 on success, 1 when the operation failed, 2 for a usage error.

Examples:
  recluster run -w 4 --listen 127.0.0.1:8080 -- ./server --verbose
  recluster reload
  recluster scale +2
  recluster status --json

Run 'recluster help run' for the flags of run.
`

// The master samples no heap profile: it serves none, and each sampled
// allocation site would hold a profiling bucket for the life of the
// process, a table that only grows, page by page, as a long-running master
// meets new call stacks. The runtime wants this set before the program
// allocates. The main goroutine stays on the main thread, which forks
// every worker and makes an upgrade's exec (see recluster.ServeMainThread).
func init() {
	runtime.MemProfileRate = 0
	runtime.LockOSThread()
}

func main() {
	code := exitFailure
	recluster.ServeMainThread(func() { code = realMain(os.Args[1:], os.Stdout, os.Stderr) })
	os.Exit(code)
}

// realMain runs the command line args and returns the exit status.
func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = runCommand(rest, stdout, stderr)
	case "reload":
		err = reloadCommand(rest, stdout, stderr)
	case "restart":
		err = restartCommand(rest, stdout, stderr)
	case "status":
		err = statusCommand(rest, stdout)
	case "scale":
		err = scaleCommand(rest, stdout)
	case "stop":
		err = stopCommand(rest, stdout)
	case "logs":
		err = logsCommand(rest, stdout, stderr)
	case "completion":
		err = completionCommand(rest, stdout)
	case "man":
		err = manCommand(rest, stdout)
	case "unit":
		err = unitCommand(rest, stdout)
	case "top":
		err = topCommand(rest, stdout)
	case "upgrade":
		err = upgradeCommand(rest, stdout, stderr)
	case "version", "--version", "-version":
		err = versionCommand(rest, stdout)
	case "help", "-h", "-help", "--help":
		err = helpCommand(rest, stdout)
	default:
		if strings.HasPrefix(cmd, "-") {
			err = usagef("%s is not a command; flags come after the command, as in recluster run %s ... (see recluster --help)", cmd, cmd)
		} else {
			err = usagef("unknown command %q; the commands are run, reload, restart, status, scale, stop, logs, top, upgrade, version, completion, man, unit and help (see recluster --help)", cmd)
		}
	}
	return report(err, stderr)
}

// report prints err as one line and returns the exit status for it.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errHelpShown) {
		return exitOK
	}
	msg := strings.TrimPrefix(err.Error(), "recluster: ")
	msg = strings.ReplaceAll(msg, "\n", " ")
	fmt.Fprintln(stderr, "recluster: "+msg)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

// exitError carries a specific exit status.
type exitError struct {
	err  error
	code int
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// errHelpShown ends a command after its help was printed on request.
var errHelpShown = errors.New("help shown")

var commandUsage = map[string]string{
	"run":        runUsage,
	"reload":     reloadUsage,
	"restart":    restartUsage,
	"completion": completionUsage,
	"man":        manUsage,
	"unit":       unitUsage,
	"top":        topUsage,
	"status":     statusUsage,
	"scale":      scaleUsage,
	"stop":       stopUsage,
	"logs":       logsUsage,
	"upgrade":    upgradeUsage,
	"version":    versionUsage,
}

func helpCommand(args []string, stdout io.Writer) error {
	switch len(args) {
	case 0:
		fmt.Fprint(stdout, mainUsage)
		return nil
	case 1:
		if text, ok := commandUsage[args[0]]; ok {
			fmt.Fprint(stdout, text)
			return nil
		}
		if args[0] == "help" {
			fmt.Fprint(stdout, mainUsage)
			return nil
		}
		return usagef("no help for %q: it is not a command; the commands are run, reload, restart, status, scale, stop, logs, top, upgrade, version, completion, man and unit", args[0])
	}
	return usagef("help takes one command name, not %d words", len(args))
}
