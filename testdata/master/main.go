// Command master runs a cluster of the program given as its argument and
// prints "pid <n>" for each worker once all are active, for the tests of
// what happens when a master dies.
package main

import (
	"fmt"
	"os"

	"github.com/recluster-go/recluster"
)

func main() {
	active := make(chan recluster.Event, 16)
	c := recluster.New(os.Args[1], recluster.Options{
		Workers: 2,
		Args:    os.Args[2:],
		OnEvent: func(e recluster.Event) {
			if e.Kind == recluster.EventActive {
				active <- e
			}
		},
	})
	if err := c.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i := 0; i < 2; i++ {
		fmt.Printf("pid %d\n", (<-active).PID)
	}
	select {}
}
