//go:build !unix

package sqlite

import (
	"fmt"
	"os"
)

// lockFile creates path exclusively, failing if it exists. Unlike the Unix lock, a lock file
// left by a process that died must be removed by hand.
func lockFile(path string) (unlock func() error, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s (remove it if no adapter process runs): %w", path, err)
	}
	return func() error {
		_ = f.Close()
		return os.Remove(path)
	}, nil
}
