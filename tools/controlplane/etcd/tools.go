//go:build tools

// The binaries this module builds.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
