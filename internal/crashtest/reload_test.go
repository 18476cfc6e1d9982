package crashtest

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// issuedBy provisions one device process and returns its certificate, once uploaded.
func (w *world) issuedBy(t *testing.T) *x509.Certificate {
	t.Helper()
	name, err := w.emu.StartProcess(context.Background(), emulator.ProcessSpec{Customer: customer, ProfileRef: "device", CARef: "builtin"})
	if err != nil {
		t.Fatal(err)
	}
	w.waitAll([]string{name}, 30*time.Second)
	s, _ := w.emu.Process(name)
	if s.State != emulator.StateIssued {
		t.Fatalf("%s: %s %q", name, s.State, s.FailureMessage)
	}
	certs, err := pemutil.ParseCertificates([]byte(s.CertificatePEM))
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func verifies(c *x509.Certificate, roots *x509.CertPool) bool {
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// TestSIGHUPReload sends SIGHUP to the adapter binary: a configuration whose CA key belongs to
// another CA is refused and the old CA goes on issuing; a good one switches the CA connection to
// the new CA and the log level to info, without a restart.
func TestSIGHUPReload(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the adapter binary")
	}
	w := newWorld(t)
	cfg := w.writeConfig("adapter", "reload-adapter", journalConfig{typ: "sqlite", path: filepath.Join(w.dir, "journal.db")})
	ca2Cert, ca2Key, err := local.CreateCA(filepath.Join(w.dir, "ca2"), "ecdsa", "reload test CA 2", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pemutil.ReadCertificates(ca2Cert)
	if err != nil {
		t.Fatal(err)
	}
	roots2 := x509.NewCertPool()
	roots2.AddCert(certs[0])
	original, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rewrite := func(cert, key, level string) {
		t.Helper()
		s := strings.Replace(string(original), "certificateFile: ca/ca.crt", "certificateFile: "+cert, 1)
		s = strings.Replace(s, "keyFile: ca/ca.key", "keyFile: "+key, 1)
		s = strings.Replace(s, "log: {level: warn", "log: {level: "+level, 1)
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	p := w.startAdapter(cfg)
	if c := w.issuedBy(t); !verifies(c, w.roots) {
		t.Fatal("the first certificate is not from the configured CA")
	}

	rewrite("ca/ca.crt", ca2Key, "info") // the key of another CA: refused
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "configuration reload refused; the running configuration stays", 10*time.Second)
	if !strings.Contains(p.output(), "does not match") && !strings.Contains(p.output(), "keyFile") {
		t.Errorf("the refusal does not say what is wrong:\n%s", p.output())
	}
	if c := w.issuedBy(t); !verifies(c, w.roots) || verifies(c, roots2) {
		t.Fatal("after a refused reload the certificate is not from the old CA")
	}

	rewrite(ca2Cert, ca2Key, "info")
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, `"msg":"configuration reloaded"`, 10*time.Second) // logged at info: the new level applies
	if c := w.issuedBy(t); !verifies(c, roots2) || verifies(c, w.roots) {
		t.Fatal("after the reload the certificate is not from the new CA")
	}
	if p.exited() {
		t.Fatal("the adapter exited on SIGHUP")
	}
	p.stop()
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after the reloads", code)
	}
}
