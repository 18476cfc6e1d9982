package sqlite

import (
	"fmt"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/privatefile"
)

// sidecars are the files SQLite and Open keep next to the journal.
var sidecars = []string{"-wal", "-shm", ".lock"}

// preparePrivate creates the journal's directory and an empty journal file with private modes,
// unless they exist. SQLite gives the -wal and -shm files it creates the journal file's mode, so
// those come out private too; lockFile creates the .lock file the same way.
func preparePrivate(path string) error {
	if err := privatefile.MkdirAll(filepath.Dir(path)); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return privatefile.Create(path)
}

// warnIfShared logs, at warn, the journal's directory and files that group or others may access.
func warnIfShared(path string, log *zap.Logger) {
	files := []string{path}
	for _, suffix := range sidecars {
		files = append(files, path+suffix)
	}
	privatefile.WarnIfShared(log, "journal", "e-mail addresses, serial numbers, CSRs and certificates", filepath.Dir(path), files...)
}
