//go:build tools

// The binaries this module builds.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
