module github.com/recluster-go/recluster/bench/compare/tableflip

go 1.26

require github.com/cloudflare/tableflip v1.2.3
