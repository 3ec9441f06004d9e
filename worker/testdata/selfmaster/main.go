// Command selfmaster is a master built on package recluster that is its
// own worker (recluster.Self) and so imports package worker, as
// examples/hello does. It tells systemd READY=1 once its worker is ready
// and STOPPING=1 on SIGTERM, with go-systemd as a program written for
// systemd would, and prints "notified true" when the READY=1 went out:
// the test that importing package worker leaves a master its
// NOTIFY_SOCKET.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/recluster-go/recluster"
	"github.com/recluster-go/recluster/worker"
)

func main() {
	if worker.IsWorker() {
		worker.Ready()
		<-worker.Disconnected()
		return
	}
	active := make(chan struct{}, 1)
	c := recluster.New(recluster.Self, recluster.Options{
		Workers:   1,
		ReadyWhen: recluster.Ready,
		OnEvent: func(e recluster.Event) {
			if e.Kind == recluster.EventActive {
				select {
				case active <- struct{}{}:
				default:
				}
			}
		},
	})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if err := c.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "selfmaster:", err)
		os.Exit(1)
	}
	<-active
	sent, err := daemon.SdNotify(false, daemon.SdNotifyReady)
	fmt.Printf("notified %v %v\n", sent, err)
	<-stop
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Terminate(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "selfmaster:", err)
		os.Exit(1)
	}
}
