// Package relpath resolves the file paths an operator writes in the configuration, for every
// package that reads one (config, the CA connectors): one rule, written once.
package relpath

import "path/filepath"

// Resolve makes a relative path relative to base, the configuration file's directory, because the
// daemon's working directory (systemd, a container) is seldom the one the operator wrote the
// file in. Empty and absolute paths, and any path when base is empty, are returned unchanged.
func Resolve(base, p string) string {
	if p == "" || filepath.IsAbs(p) || base == "" {
		return p
	}
	return filepath.Join(base, p)
}
