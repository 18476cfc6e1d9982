//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/certprov/certprov-adapter/internal/privatefile"
)

// lockFile takes an exclusive advisory lock on path, creating it, without waiting. The lock
// belongs to the open file description, so a second lockFile on the same path fails even in
// the same process; the kernel drops it when the process dies.
func lockFile(path string) (unlock func() error, err error) {
	if err := privatefile.Create(path); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is locked: another adapter process has this journal open", path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f.Close, nil
}
