//go:build unix

package sqlite_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
	"github.com/certprov/certprov-adapter/internal/journal/sqlite"
)

// withUmask runs f under umask mask (process-wide, so these tests do not run in parallel).
func withUmask(t *testing.T, mask int, f func()) {
	t.Helper()
	old := syscall.Umask(mask)
	defer syscall.Umask(old)
	f()
}

func perm(t *testing.T, path string) fs.FileMode {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	return info.Mode().Perm()
}

func openLogged(t *testing.T, path string) (*sqlite.Store, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.WarnLevel)
	s, err := sqlite.Open(context.Background(), path, sqlite.WithLogger(zap.New(core)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, logs
}

// A new journal is private whatever the umask: its directory 0700, the file and every sidecar
// 0600, and nothing is logged about it.
func TestCreatedPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "certprov")
	path := filepath.Join(dir, "journal.db")
	var logs *observer.ObservedLogs
	var s *sqlite.Store
	withUmask(t, 0, func() { s, logs = openLogged(t, path) }) // umask 0 would give 0755 and 0644
	create(t, s, journaltest.FullRecord("a"))                 // the WAL holds a write now

	if got := perm(t, dir); got != 0o700 {
		t.Errorf("directory mode %04o, want 0700", got)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm", path + ".lock"} {
		if got := perm(t, p); got != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", filepath.Base(p), got)
		}
	}
	if n := logs.Len(); n != 0 {
		t.Errorf("%d warnings about a private journal: %v", n, logs.All())
	}
}

// An existing journal that others may read is left as it is (the operator decides) and each
// open file or directory is named in a warning with its mode.
func TestWarnsWhenShared(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	path := filepath.Join(dir, "journal.db")
	s, _ := openLogged(t, path)
	create(t, s, journaltest.FullRecord("a"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]fs.FileMode{dir: 0o755, path: 0o644, path + ".lock": 0o640} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}

	s, logs := openLogged(t, path)
	mustGet(t, s, "a")
	want := map[string]string{dir: "0755", path: "0644", path + ".lock": "0640"}
	if _, err := os.Stat(path + "-wal"); err == nil {
		// SQLite gives a -wal it creates the journal file's mode: shared too, and said so.
		want[path+"-wal"] = "0644"
	}
	got := map[string]string{}
	for _, e := range logs.All() {
		f := e.ContextMap()
		got[fmt.Sprint(f["path"])] = fmt.Sprint(f["mode"])
	}
	for p, mode := range want {
		if got[p] != mode {
			t.Errorf("%s: warned with mode %q, want %q (warnings: %v)", p, got[p], mode, got)
		}
	}
	if perm(t, path) != 0o644 {
		t.Error("Open changed the mode of an existing journal")
	}
}
