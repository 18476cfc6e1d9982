package privatefile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Modes come out private under a umask that would make them world-readable, and what exists is
// left alone but reported.
func TestCreateAndWarn(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "a", "b")
	if err := MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "f")
	if err := Create(file); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: DirMode, file: FileMode} {
		if info, err := os.Stat(p); err != nil || info.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (%v), want %v", p, info.Mode().Perm(), err, want)
		}
	}
	core, logs := observer.New(zap.WarnLevel)
	WarnIfShared(zap.New(core), "thing", "secrets", dir, file, filepath.Join(dir, "absent"))
	if n := logs.Len(); n != 0 {
		t.Fatalf("%d warnings for private files", n)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Create(file); err != nil { // exists: left as it is
		t.Fatal(err)
	}
	WarnIfShared(zap.New(core), "thing", "secrets", dir, file)
	all := logs.All()
	if len(all) != 1 || all[0].ContextMap()["path"] != file || all[0].ContextMap()["mode"] != "0644" {
		t.Fatalf("warnings %v, want one for %s at 0644", all, file)
	}
}
