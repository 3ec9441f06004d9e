package recluster_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/recluster-go/recluster"
)

// A master program: four workers of a server binary, reloaded on SIGHUP,
// stopped gracefully on SIGTERM.
func ExampleNew() {
	c := recluster.New("/usr/local/bin/my-server", recluster.Options{
		Workers: 4,
		Timeout: 30 * time.Second,
		Args:    []string{"-config", "/etc/my-server.conf"},
	})
	if err := c.Run(); err != nil {
		log.Fatal(err)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM)
	for sig := range signals {
		if sig == syscall.SIGHUP {
			if err := c.Reload(context.Background()); err != nil {
				log.Print(err) // the old generation keeps serving
			}
			continue
		}
		c.Terminate(context.Background())
		return
	}
}

// Self mode: one binary is both the master and its workers, so that
// `go run .` starts a whole cluster.
func ExampleNew_self() {
	if os.Getenv("WORKER_ID") != "" {
		// worker code: see package worker
		return
	}
	c := recluster.New(recluster.Self, recluster.Options{})
	if err := c.Run(); err != nil {
		log.Fatal(err)
	}
	<-c.Done()
}

// Observing the lifecycle, for logs or metrics.
func ExampleOptions_onEvent() {
	c := recluster.New("/usr/local/bin/my-server", recluster.Options{
		OnEvent: func(e recluster.Event) {
			if e.Kind == recluster.EventExited {
				log.Printf("worker %d (pid %d) exited with %d", e.Slot, e.PID, e.ExitCode)
			}
		},
	})
	_ = c
}

// A master that upgrades itself in place on SIGUSR1: after a deploy has
// replaced its binary, the same process (same pid) runs the new code, with
// the same sockets and workers. The main function runs through
// ServeMainThread, with the main goroutine locked to the main thread in
// an init function (runtime.LockOSThread), so that the workers are forked
// by the thread that later calls execve. In the new program, Run adopts the
// workers instead of starting new ones.
func ExampleCluster_Upgrade() {
	recluster.ServeMainThread(func() {
		c := recluster.New("/usr/local/bin/my-server", recluster.Options{Workers: 4})
		if err := c.Run(); err != nil {
			log.Fatal(err)
		}
		if inh := recluster.Inherited(); inh != nil {
			log.Printf("upgraded in place from %s", inh.PreviousVersion())
		}
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGUSR1)
		for range signals {
			// Returns only if the upgrade was refused or failed; the
			// cluster then goes on unchanged.
			log.Print(c.Upgrade(context.Background(), recluster.UpgradeOptions{}))
		}
	})
}
