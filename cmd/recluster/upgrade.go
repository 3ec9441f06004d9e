package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/internal/control"
	"github.com/recluster-go/recluster/internal/systemd"
)

const upgradeUsage = `Usage: recluster upgrade [--control PATH]

Replace the running master's program, in place, with the recluster binary
now at the path the master was started from (the file a deploy replaced):
the master re-executes itself with the same pid, keeps its listening
sockets, its control socket and its metrics listener, and adopts every
worker, which notices nothing. No worker is restarted (reload does that).

First the new binary runs a pre-flight check: it must read the running
master's state format and exit 0. If it fails, the upgrade is refused with
the new binary's own error, the old master goes on serving, and upgrade
exits with status 1. An upgrade is refused, too, while a reload (until the
generation it replaced has gone, and its --probation), a restart or a stop
is in progress, or while a worker is being started; retry once it has
ended. The workers' output keeps flowing: the relay's pipes, the lines it
had read and its history (recluster logs) travel to the new master.

The answer comes from the new master: its pid (the same) and its version.
Under systemd the master sends RELOADING=1 before and READY=1 after.

Flags:
` + controlFlagHelp

func upgradeCommand(args []string, stdout, stderr io.Writer) error {
	path, rest, err := clientFlags("upgrade", upgradeUsage, args, nil)
	if err != nil {
		return err
	}
	if err := noArgs("upgrade", rest); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := control.Do(ctx, path, control.Request{Cmd: control.CmdUpgrade},
		func(r control.Response) { fmt.Fprintln(stderr, "recluster: "+r.Progress) })
	if errors.Is(err, control.ErrClosed) {
		return errors.New("the master closed the connection during the upgrade: the new master did not answer; see its log and recluster status")
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, resp.Message)
	return nil
}

// upgradeHook is the control server's Upgrade for this master: the
// control listener, the client's connection and the metrics listener go
// across the exec.
func upgradeHook(m *master, metricsLn net.Listener) func(net.Listener, net.Conn, func(string)) error {
	return func(ln net.Listener, conn net.Conn, progress func(string)) error {
		files := map[string]syscall.Conn{}
		for name, c := range map[string]any{"control": ln, "client": conn, "metrics": metricsLn} {
			if sc, ok := c.(syscall.Conn); ok && c != nil {
				files[name] = sc
			}
		}
		progress("upgrade: checking the new binary, then handing the cluster over")
		m.log.Info("recluster: upgrade in place requested")
		m.notify.update(systemd.Reloading("upgrading the master in place"))
		err := m.c.Upgrade(context.Background(), recluster.UpgradeOptions{Files: files})
		m.notify.update(systemd.Ready("upgrade refused; the master goes on"))
		m.log.Error(err.Error())
		return err
	}
}

// inheritedListener returns the listener an upgrade handed over as name,
// or nil.
func inheritedListener(inh *recluster.Inheritance, name string) (net.Listener, error) {
	if inh == nil {
		return nil, nil
	}
	f := inh.File(name)
	if f == nil {
		return nil, nil
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the %s socket handed over by the upgrade: %w", name, err)
	}
	return ln, nil
}

// answerUpgrade sends the upgrade's final answer to the client that asked
// for it, from the new master.
func answerUpgrade(inh *recluster.Inheritance, c *recluster.Cluster) {
	f := inh.File("client")
	if f == nil {
		return
	}
	defer f.Close()
	conn, err := net.FileConn(f)
	if err != nil {
		return
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	st := c.Status()
	json.NewEncoder(conn).Encode(control.Response{OK: true, Message: fmt.Sprintf(
		"upgraded in place: master pid %d runs %s (was %s), %d workers kept", os.Getpid(), st.Version, inh.PreviousVersion(), len(st.Workers))})
}

// controlListener creates the control socket, or takes the one an upgrade
// handed over, which the new master removes when it stops.
func controlListener(inh *recluster.Inheritance, path string) (*net.UnixListener, error) {
	ln, err := inheritedListener(inh, "control")
	if err != nil || ln == nil {
		if err != nil {
			return nil, err
		}
		return control.Listen(path)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, errors.New("the control socket handed over by the upgrade is not a Unix socket")
	}
	ul.SetUnlinkOnClose(true)
	return ul, nil
}
