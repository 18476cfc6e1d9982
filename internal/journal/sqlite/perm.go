package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"go.uber.org/zap"
)

// Modes of what Open creates. The journal holds e-mail addresses, serial numbers, CSRs and
// certificates, so nobody but the adapter's user may read it.
const (
	dirMode  fs.FileMode = 0o700
	fileMode fs.FileMode = 0o600
)

// sidecars are the files SQLite and Open keep next to the journal.
var sidecars = []string{"-wal", "-shm", ".lock"}

// preparePrivate creates the journal's directory and an empty journal file with private modes
// (set with chmod, so the umask does not matter), unless they exist. SQLite gives the -wal and
// -shm files it creates the journal file's mode, so those come out private too; lockFile
// creates the .lock file the same way.
func preparePrivate(path string) error {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, dirMode); err != nil {
			return fmt.Errorf("create journal directory: %w", err)
		}
		if err := os.Chmod(dir, dirMode); err != nil {
			return fmt.Errorf("create journal directory: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("journal directory: %w", err)
	}
	return createPrivateFile(path)
}

// createPrivateFile creates path empty with fileMode, whatever the umask; an existing file is
// left alone.
func createPrivateFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Chmod(fileMode); err != nil {
		_ = f.Close()
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// warnIfShared logs, at warn, the journal's directory and files that group or others may
// access. It changes nothing: the operator may have meant it (a backup group), and must decide.
func warnIfShared(path string, log *zap.Logger) {
	if runtime.GOOS == "windows" {
		return // modes there do not describe who may read a file
	}
	check := func(p string, want fs.FileMode, what string) {
		info, err := os.Stat(p)
		if err != nil {
			return // a sidecar that does not exist (yet) exposes nothing
		}
		if mode := info.Mode().Perm(); mode&0o077 != 0 {
			log.Warn("journal "+what+" is accessible to group or others; it holds e-mail addresses, serial numbers, CSRs and certificates",
				zap.String("path", p), zap.String("mode", fmt.Sprintf("%04o", mode)), zap.String("want", fmt.Sprintf("%04o", want)))
		}
	}
	check(filepath.Dir(path), dirMode, "directory")
	check(path, fileMode, "file")
	for _, suffix := range sidecars {
		check(path+suffix, fileMode, "file")
	}
}
