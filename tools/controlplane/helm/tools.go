//go:build tools

// The binaries this module builds.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
