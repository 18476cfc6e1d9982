package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/buildinfo"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestValidateReportsEveryProblemWithItsPath(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`instanceId: a1
customers: [C0abc]
pubsub: {project: p, subscription: s}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal: {type: memory}
engine: {pollInterval: soon}
profiles:
  Device-Wifi:
    subject: {commonNmae: "{{.Device.SerialNumber}}"}
  broken:
    subject: {commonName: "{{.Device.Nope}}"}
caConnections:
  corp: {type: nosuchtype}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd(t, "validate", "--config", bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"engine.pollInterval", "profiles.Device-Wifi.subject.commonNmae"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	// A config that loads but whose templates and CA types are wrong: reported by path too.
	semantic := filepath.Join(dir, "semantic.yaml")
	if err := os.WriteFile(semantic, []byte(`instanceId: a1
customers: [C0abc]
pubsub: {project: p, subscription: s}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal: {type: memory}
profiles:
  broken:
    subject: {commonName: "{{.Device.Nope}}"}
caConnections:
  corp: {type: nosuchtype}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCmd(t, "validate", "--config", semantic)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"profiles.broken", "Nope", "caConnections.corp", "nosuchtype"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestValidateAcceptsDemoConfigAndInitCA(t *testing.T) {
	dir := t.TempDir()
	code, out, stderr := runCmd(t, "init-ca", "--dir", filepath.Join(dir, "ca"), "--key-type", "rsa")
	if code != 0 {
		t.Fatalf("init-ca exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, "ca.crt") {
		t.Fatalf("init-ca output %q", out)
	}
	if code, _, stderr = runCmd(t, "init-ca", "--dir", filepath.Join(dir, "ca")); code == 0 {
		t.Fatalf("init-ca overwrote an existing CA: %s", stderr)
	}
	cfg := filepath.Join(dir, "adapter.yaml")
	if err := os.WriteFile(cfg, []byte(`instanceId: a1
customers: [C0abc]
pubsub: {project: p, subscription: s}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal: {type: sqlite, path: journal.db}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  builtin: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runCmd(t, "validate", "--config", cfg)
	if code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("validate exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
}

// A warning (a CA call that may outlast the journal lease) is printed with its path, and the
// configuration still validates.
func TestValidatePrintsWarnings(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCmd(t, "init-ca", "--dir", filepath.Join(dir, "ca")); code != 0 {
		t.Fatalf("init-ca: %s", stderr)
	}
	cfg := filepath.Join(dir, "adapter.yaml")
	if err := os.WriteFile(cfg, []byte(`instanceId: a1
customers: [C0abc]
pubsub: {project: p, subscription: s}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal: {type: memory, leaseDuration: 1m}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  builtin: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key, timeout: 90s}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCmd(t, "validate", "--config", cfg)
	if code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("validate exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	if n := strings.Count(stderr, "caConnections.builtin.timeout: warning: 1m30s is longer than journal.leaseDuration (1m0s)"); n != 1 {
		t.Fatalf("the warning is printed %d times, want once:\n%s", n, stderr)
	}
}

func TestUsageAndVersion(t *testing.T) {
	// The stamped build is checked on the real binary in deploy/test; here, the unstamped one.
	if code, out, _ := runCmd(t, "version"); code != 0 || out != "certprov-adapter "+buildinfo.Get().String()+"\n" {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, _, stderr := runCmd(t, "bogus"); code != 2 || !strings.Contains(stderr, "usage") {
		t.Fatalf("unknown command: %d %q", code, stderr)
	}
	if code, _, _ := runCmd(t); code != 2 {
		t.Fatalf("no command: exit %d", code)
	}
}

func TestValidateCheckConnections(t *testing.T) {
	dir := t.TempDir()
	for _, ca := range []struct{ dir, validity string }{{"good", "24h"}, {"expired", "1ns"}} {
		if code, _, stderr := runCmd(t, "init-ca", "--dir", filepath.Join(dir, ca.dir), "--validity", ca.validity); code != 0 {
			t.Fatalf("init-ca: %s", stderr)
		}
	}
	cfg := filepath.Join(dir, "adapter.yaml")
	if err := os.WriteFile(cfg, []byte(`instanceId: a1
customers: [C0abc]
pubsub: {project: p, subscription: s}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal: {type: memory}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  good: {type: local, certificateFile: good/ca.crt, keyFile: good/ca.key}
  stale: {type: local, certificateFile: expired/ca.crt, keyFile: expired/ca.key}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCmd(t, "validate", "--config", cfg); code != 0 {
		t.Fatalf("validate without checks: exit %d: %s", code, stderr)
	}
	code, out, stderr := runCmd(t, "validate", "--config", cfg, "--check-connections")
	if code != 1 || !strings.Contains(out, "caConnections.good: OK") || !strings.Contains(stderr, "caConnections.stale") || !strings.Contains(stderr, "expired") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
}

func TestValidateWarnsAboutALongGracePeriod(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCmd(t, "init-ca", "--dir", filepath.Join(dir, "ca")); code != 0 {
		t.Fatalf("init-ca: %s", stderr)
	}
	cfg := filepath.Join(dir, "adapter.yaml")
	if err := os.WriteFile(cfg, []byte(`instanceId: a1
customers: [C0abc]
shutdownGracePeriod: 45s
pubsub: {project: p, subscription: s}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal: {type: memory}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  builtin: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCmd(t, "validate", "--config", cfg)
	if code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("a long grace period is allowed: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	if !strings.Contains(stderr, "shutdownGracePeriod: warning:") || !strings.Contains(stderr, "terminationGracePeriodSeconds") {
		t.Fatalf("no warning on stderr:\n%s", stderr)
	}
}
