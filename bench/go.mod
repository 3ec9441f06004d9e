module github.com/recluster-go/recluster/bench

go 1.26.0

require (
	github.com/recluster-go/recluster v0.0.0
	golang.org/x/sys v0.49.0
)

replace github.com/recluster-go/recluster => ../
