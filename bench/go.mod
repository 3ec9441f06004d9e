module github.com/recluster-go/recluster/bench

go 1.26.0

require (
	github.com/recluster-go/recluster v0.0.0
	golang.org/x/sys v0.49.0
)

require golang.org/x/net v0.62.0 // indirect

replace github.com/recluster-go/recluster => ../
