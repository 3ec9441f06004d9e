module github.com/recluster-go/recluster

go 1.26.0

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.49.0
)
