// Package privatefile creates files only the adapter's user may read, and warns about existing
// ones that others may: the journal and the local CA's ledger name every device and user served.
package privatefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"

	"go.uber.org/zap"
)

// Modes of what this package creates.
const (
	DirMode  fs.FileMode = 0o700
	FileMode fs.FileMode = 0o600
)

// MkdirAll creates dir with DirMode, whatever the umask, unless it exists; an existing directory
// is left alone (WarnIfShared reports it).
func MkdirAll(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, DirMode); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return nil
}

// Create creates path empty with FileMode, whatever the umask; an existing file is left alone.
func Create(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, FileMode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Chmod(FileMode); err != nil {
		_ = f.Close()
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// WarnIfShared logs, at warn, dir and each of files that group or others may access, saying
// that it holds what. It changes nothing: the operator may have meant it (a backup group, a
// mounted volume) and must decide. Files that do not exist (yet) expose nothing and are skipped.
func WarnIfShared(log *zap.Logger, what, holds string, dir string, files ...string) {
	if runtime.GOOS == "windows" {
		return // modes there do not describe who may read a file
	}
	check := func(p string, want fs.FileMode, kind string) {
		info, err := os.Stat(p)
		if err != nil {
			return
		}
		if mode := info.Mode().Perm(); mode&0o077 != 0 {
			log.Warn(what+" "+kind+" is accessible to group or others; it holds "+holds,
				zap.String("path", p), zap.String("mode", fmt.Sprintf("%04o", mode)), zap.String("want", fmt.Sprintf("%04o", want)))
		}
	}
	check(dir, DirMode, "directory")
	for _, f := range files {
		check(f, FileMode, "file")
	}
}
