package recluster

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// osSystem is the system of a real cluster: processes, signals, /proc and
// the wall clock.
type osSystem struct {
	program string
	opts    Options
	reaper  *reaper
	relay   *outputRelay // nil: output passes straight through

	// Set by prepare, read-only afterwards.
	credential *syscall.Credential // whom the workers run as; nil: as the master
	runtimeDir string              // holds the notify sockets
	notifySeq  atomic.Int64
}

func newOSSystem(program string, opts Options, relay *outputRelay) *osSystem {
	return &osSystem{program: program, opts: opts, reaper: newReaper(opts.ReapOrphans), relay: relay}
}

func (o *osSystem) now() time.Time { return time.Now() }

func (o *osSystem) afterFunc(d time.Duration, f func()) timer { return time.AfterFunc(d, f) }

func (o *osSystem) prepare() error {
	cred, err := resolveCredential(o.opts.User, o.opts.Group)
	if err != nil {
		return err
	}
	o.credential = cred
	if o.opts.Notify {
		dir, err := os.MkdirTemp("", "recluster-")
		if err != nil {
			return fmt.Errorf("recluster: cannot make a directory for notify sockets: %w", err)
		}
		o.runtimeDir = dir
		if err := o.giveToWorkers(dir); err != nil {
			return err
		}
	}
	o.reaper.watch()
	return nil
}

func (o *osSystem) cleanup() {
	o.reaper.stop()
	if o.runtimeDir != "" {
		os.RemoveAll(o.runtimeDir)
	}
}

func (o *osSystem) usage(pids []int) []procFigures { return treeUsage(pids) }

func (o *osSystem) closeFD(fd int) { unix.Close(fd) }

// giveToWorkers hands a path the workers must reach (the notify sockets)
// to the account they run as.
func (o *osSystem) giveToWorkers(path string) error {
	if o.credential == nil {
		return nil
	}
	if err := os.Chown(path, int(o.credential.Uid), int(o.credential.Gid)); err != nil {
		return fmt.Errorf("recluster: %w", err)
	}
	return nil
}

func dupCloseOnExec(fd int) (int, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("duplicating descriptor %d: %w", fd, err)
	}
	return dup, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
