package main

import (
	"fmt"
	"io"

	"github.com/recluster-go/recluster/internal/buildinfo"
)

const versionUsage = `Usage: recluster version

Print the version of this recluster binary: the version set at link time
(-ldflags "-X github.com/recluster-go/recluster/internal/buildinfo.Version=V"),
else the module version (go install ...@v1.2.3), with the VCS revision and
time recorded by the go command. recluster --version prints the same line.
The running master's version is in recluster status (it changes with
recluster upgrade).
`

func versionCommand(args []string, stdout io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(stdout, versionUsage)
		return nil
	}
	if err := noArgs("version", args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "recluster "+buildinfo.Read().String())
	return nil
}
