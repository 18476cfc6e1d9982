// Package testservers finds the real CA servers that integration tests run (scepserver,
// estserver, step-ca, …). deploy/local/servers/*.sh build them at pinned versions into one
// directory; .ci/run always does, a developer may.
package testservers

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Dir is where the server binaries live: $CERTPROV_TEST_BIN_DIR, or
// $HOME/.cache/certprov-test-bin.
func Dir() string {
	if d := os.Getenv("CERTPROV_TEST_BIN_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "certprov-test-bin")
	}
	return filepath.Join(home, ".cache", "certprov-test-bin")
}

// Binary returns the path of the named server binary. Without it the test is skipped on a
// developer machine, saying how to install it, and fails in CI (CI=true), where it must run.
func Binary(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join(Dir(), name)
	if _, err := exec.LookPath(path); err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed in %s; .ci/run must install it (deploy/local/servers)", name, Dir())
	}
	t.Skipf("%s is not installed in %s; install the test servers with: for s in deploy/local/servers/*.sh; do bash $s; done", name, Dir())
	return ""
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
