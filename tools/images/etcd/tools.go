//go:build tools

// The binary this module builds: scripts/build-control-plane.sh runs `go build`
// on this package for the etcd image.
package tools

import _ "go.etcd.io/etcd/server/v3"
