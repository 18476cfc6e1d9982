//go:build unix

package local

import (
	"errors"
	"os"
	"syscall"
)

// lockExclusive waits for an exclusive advisory lock on f, which the kernel releases when f is
// closed or the process dies. It orders the ledger appends of every process sharing the file.
func lockExclusive(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
