package local

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// readCRL reads a published CRL as a relying party does: DER or PEM, signed by issuer, current.
func readCRL(t testing.TB, path string, issuer *x509.Certificate) *x509.RevocationList {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read CRL: %v", err)
	}
	if block, _ := pem.Decode(b); block != nil {
		if block.Type != "X509 CRL" {
			t.Fatalf("CRL PEM block %q", block.Type)
		}
		b = block.Bytes
	}
	rl, err := x509.ParseRevocationList(b)
	if err != nil {
		t.Fatalf("parse CRL: %v", err)
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		t.Fatalf("CRL signature does not verify with the CA certificate: %v", err)
	}
	if now := time.Now(); now.Before(rl.ThisUpdate) || !now.Before(rl.NextUpdate) {
		t.Fatalf("CRL valid %s to %s, not now", rl.ThisUpdate, rl.NextUpdate)
	}
	return rl
}

// crlStatus says whether serial is on the CRL at path, and why.
func crlStatus(t testing.TB, path string, issuer *x509.Certificate, serial *big.Int) (bool, ca.Reason) {
	t.Helper()
	for _, e := range readCRL(t, path, issuer).RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return true, ca.Reason(e.ReasonCode)
		}
	}
	return false, 0
}

func issueOne(t testing.TB, c *Connector, id string) *ca.Issued {
	t.Helper()
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), id)
	issued, err := c.Issue(context.Background(), req)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return issued
}

// TestCRLPublished: the CRL exists from startup, signed by the CA with its key identifier, for
// crlValidity, readable by the web server that publishes it; every certificate names where.
func TestCRLPublished(t *testing.T) {
	const cdp = "http://pki.example.com/corp.crl"
	f := newFixture(t, caSpec{}, ca.Settings{"crlFile": "corp.crl", "crlValidity": "48h", "crlDistributionPoints": []any{cdp}})
	path := filepath.Join(f.dir, "corp.crl")
	rl := readCRL(t, path, f.cert)
	if len(rl.RevokedCertificateEntries) != 0 || rl.Number.Int64() != 1 {
		t.Errorf("fresh CRL: %d entries, number %v; want none, 1", len(rl.RevokedCertificateEntries), rl.Number)
	}
	if got := rl.NextUpdate.Sub(rl.ThisUpdate); got != 48*time.Hour {
		t.Errorf("CRL validity %v, want 48h", got)
	}
	if len(rl.AuthorityKeyId) == 0 || string(rl.AuthorityKeyId) != string(f.conn.authKeyID) {
		t.Errorf("CRL authorityKeyIdentifier %x, want the CA's %x", rl.AuthorityKeyId, f.conn.authKeyID)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("CRL file mode %v (%v), want 0644: relying parties read it", fi.Mode().Perm(), err)
	}
	leaf := issueOne(t, f.conn, "CDP").Leaf
	if len(leaf.CRLDistributionPoints) != 1 || leaf.CRLDistributionPoints[0] != cdp {
		t.Errorf("leaf CRL distribution points %v, want [%s]", leaf.CRLDistributionPoints, cdp)
	}

	// A restart with nothing to change leaves the CRL as it is.
	before, _ := os.ReadFile(path)
	again, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "crlFile": "corp.crl", "crlValidity": "48h"}, ca.Env{BaseDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Close() })
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("a restart re-signed a CRL that was not due")
	}
}

// TestRevokeIsDurableAndShared: revocations survive a restart (the file is the record), and two
// connectors on one file (the daemon and `certprov-adapter revoke`) lose none of each other's.
func TestRevokeIsDurableAndShared(t *testing.T) {
	dir := t.TempDir()
	settings := ca.Settings{"ledgerFile": filepath.Join(dir, "ledger.jsonl"), "crlFile": filepath.Join(dir, "ca.crl")}
	f := newFixture(t, caSpec{}, settings)
	crlPath := filepath.Join(dir, "ca.crl")
	other, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "ledgerFile": settings["ledgerFile"], "crlFile": crlPath}, ca.Env{BaseDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	var leaves []*x509.Certificate
	for i := range 2 * n {
		leaves = append(leaves, issueOne(t, f.conn, fmt.Sprintf("SHARED%02d", i)).Leaf)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(leaves))
	for i, leaf := range leaves {
		conn := f.conn
		if i%2 == 1 {
			conn = other
		}
		wg.Go(func() {
			// By serial alone: the other connector finds it in the shared ledger.
			errs[i] = conn.Revoke(context.Background(), &ca.RevokeRequest{Serial: leaf.SerialNumber, Reason: ca.ReasonSuperseded})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("revoke %d: %v", i, err)
		}
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	rl := readCRL(t, crlPath, f.cert)
	if len(rl.RevokedCertificateEntries) != len(leaves) {
		t.Fatalf("CRL holds %d entries after %d revocations by two connectors", len(rl.RevokedCertificateEntries), len(leaves))
	}
	if want := int64(1 + len(leaves)); rl.Number.Int64() != want {
		t.Errorf("CRL number %v after %d revocations, want %d", rl.Number, len(leaves), want)
	}

	// Restart: the revocations are still published, and a new one adds to them.
	if err := f.conn.Close(); err != nil {
		t.Fatal(err)
	}
	restarted, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "ledgerFile": settings["ledgerFile"], "crlFile": crlPath}, ca.Env{BaseDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restarted.Close() })
	fresh := issueOne(t, restarted, "AFTERRESTART").Leaf
	if err := restarted.Revoke(context.Background(), &ca.RevokeRequest{Serial: fresh.SerialNumber, Certificate: fresh, Reason: ca.ReasonKeyCompromise}); err != nil {
		t.Fatal(err)
	}
	for _, leaf := range leaves {
		if ok, reason := crlStatus(t, crlPath, f.cert, leaf.SerialNumber); !ok || reason != ca.ReasonSuperseded {
			t.Errorf("serial %x after restart: revoked %v reason %v", leaf.SerialNumber, ok, reason)
		}
	}
	if ok, reason := crlStatus(t, crlPath, f.cert, fresh.SerialNumber); !ok || reason != ca.ReasonKeyCompromise {
		t.Errorf("new revocation: revoked %v reason %v", ok, reason)
	}
	// Revoking again keeps the first reason.
	if err := restarted.Revoke(context.Background(), &ca.RevokeRequest{Serial: fresh.SerialNumber, Reason: ca.ReasonUnspecified}); err != nil {
		t.Fatal(err)
	}
	if _, reason := crlStatus(t, crlPath, f.cert, fresh.SerialNumber); reason != ca.ReasonKeyCompromise {
		t.Errorf("a second revocation changed the reason to %v", reason)
	}
}

// TestCRLSignedAgainWhenDue: the CRL is re-signed, with the same entries and the next number,
// once half its validity has passed, and not before; Ping reports a CRL that expired.
func TestCRLSignedAgainWhenDue(t *testing.T) {
	f := newFixture(t, caSpec{}, ca.Settings{"crlFile": "ca.crl", "crlValidity": "24h"})
	path := filepath.Join(f.dir, "ca.crl")
	leaf := issueOne(t, f.conn, "DUE").Leaf
	if err := f.conn.Revoke(context.Background(), &ca.RevokeRequest{Serial: leaf.SerialNumber, Reason: ca.ReasonCessationOfOperation}); err != nil {
		t.Fatal(err)
	}
	first := readCRL(t, path, f.cert)

	next, err := f.conn.crl.refresh(time.Now().Add(11 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got := readCRL(t, path, f.cert); got.Number.Cmp(first.Number) != 0 {
		t.Errorf("re-signed at 11h of 24h: number %v, was %v", got.Number, first.Number)
	}
	if want := first.ThisUpdate.Add(12 * time.Hour); !next.Equal(want) {
		t.Errorf("next refresh due %s, want %s", next, want)
	}

	later := time.Now().Add(13 * time.Hour)
	next, err = f.conn.crl.refresh(later)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	second, err := x509.ParseRevocationList(b)
	if err != nil || second.CheckSignatureFrom(f.cert) != nil {
		t.Fatalf("re-signed CRL: %v", err)
	}
	if second.Number.Int64() != first.Number.Int64()+1 || len(second.RevokedCertificateEntries) != 1 ||
		second.RevokedCertificateEntries[0].SerialNumber.Cmp(leaf.SerialNumber) != 0 ||
		second.RevokedCertificateEntries[0].ReasonCode != int(ca.ReasonCessationOfOperation) ||
		!second.RevokedCertificateEntries[0].RevocationTime.Equal(first.RevokedCertificateEntries[0].RevocationTime) {
		t.Errorf("re-signed CRL: number %v, entries %+v; want number %v and the one entry unchanged", second.Number, second.RevokedCertificateEntries, first.Number.Int64()+1)
	}
	if !second.ThisUpdate.After(first.ThisUpdate) || !next.After(later) {
		t.Errorf("re-signed CRL thisUpdate %s (was %s), next due %s", second.ThisUpdate, first.ThisUpdate, next)
	}

	if err := f.conn.Ping(context.Background()); err != nil {
		t.Fatalf("Ping with a current CRL: %v", err)
	}
	f.conn.now = func() time.Time { return second.NextUpdate.Add(time.Minute) }
	err = f.conn.Ping(context.Background())
	if err == nil || ca.IsPermanent(err) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Ping with an expired CRL: %v; want a retryable error saying it expired", err)
	}
}

// TestCRLSettings: CRL settings are checked offline with the key at fault, and files that
// cannot be this CA's CRL stop the connector at startup without being overwritten.
func TestCRLSettings(t *testing.T) {
	base := func(extra ca.Settings) ca.Settings {
		s := ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key"}
		for k, v := range extra {
			s[k] = v
		}
		return s
	}
	for _, tc := range []struct {
		extra ca.Settings
		want  string
	}{
		{ca.Settings{"crlFile": "x.crl", "crlFormat": "p7"}, `crlFormat: "p7": want der or pem`},
		{ca.Settings{"crlFile": "x.crl", "crlValidity": "1h"}, "crlValidity: 1h0m0s: must be at least 2h"},
		{ca.Settings{"crlDistributionPoints": []any{"http://pki.example.com/x.crl"}}, "crlDistributionPoints: needs crlFile"},
		{ca.Settings{"crlFile": "x.crl", "crlDistributionPoints": []any{"file:///srv/x.crl"}}, "crlDistributionPoints[0]"},
		{ca.Settings{"crlFile": "x.crl", "crlDistributionPoints": []any{"http://user:pw@pki.example.com/x.crl"}}, "no credentials"},
	} {
		err := Check(base(tc.extra))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%v) = %v, want %q", tc.extra, err, tc.want)
		}
		var se *ca.SettingError
		if !errors.As(err, &se) {
			t.Errorf("Check(%v): %v is not a *ca.SettingError", tc.extra, err)
		}
	}

	f := newFixture(t, caSpec{}, nil)
	otherCA := newFixture(t, caSpec{}, ca.Settings{"crlFile": "other.crl"})
	foreign, _ := os.ReadFile(filepath.Join(otherCA.dir, "other.crl"))
	for name, content := range map[string][]byte{
		"another CA's CRL": foreign,
		"not a CRL":        []byte("hello\n"),
		"a certificate":    pemutil.Encode(f.cert),
	} {
		path := filepath.Join(f.dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := New(base(ca.Settings{"crlFile": path}), ca.Env{BaseDir: f.dir})
		var se *ca.SettingError
		if !errors.As(err, &se) || se.Key != "crlFile" {
			t.Errorf("%s: New = %v, want a problem at crlFile", name, err)
		}
		if after, _ := os.ReadFile(path); string(after) != string(content) {
			t.Errorf("%s: the file was overwritten", name)
		}
	}

	noCRLSign := newFixture(t, caSpec{keyUsage: x509.KeyUsageCertSign}, nil)
	_, err := New(base(ca.Settings{"crlFile": "ca.crl"}), ca.Env{BaseDir: noCRLSign.dir})
	if err == nil || !strings.Contains(err.Error(), "may not sign CRLs") {
		t.Errorf("issuer without cRLSign: %v", err)
	}
}

// TestRevokeRefusals: without crlFile, for a serial nobody recorded, or for a certificate with
// another serial, revocation fails permanently and the CRL is unchanged.
func TestRevokeRefusals(t *testing.T) {
	plain := newFixture(t, caSpec{}, nil)
	leaf := issueOne(t, plain.conn, "NOCRL").Leaf
	err := plain.conn.Revoke(context.Background(), &ca.RevokeRequest{Serial: leaf.SerialNumber, Certificate: leaf})
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "set crlFile") {
		t.Errorf("revoke without crlFile: %v", err)
	}

	f := newFixture(t, caSpec{}, ca.Settings{"crlFile": "ca.crl"})
	path := filepath.Join(f.dir, "ca.crl")
	mine := issueOne(t, f.conn, "MINE").Leaf
	before, _ := os.ReadFile(path)
	for name, req := range map[string]*ca.RevokeRequest{
		"no serial":             {},
		"certificate mismatch":  {Serial: big.NewInt(42), Certificate: mine},
		"another CA's leaf":     {Serial: leaf.SerialNumber, Certificate: leaf},
		"unknown serial":        {Serial: big.NewInt(4242)},
		"another CA's serial":   {Serial: leaf.SerialNumber},
		"zero serial, with one": {Serial: big.NewInt(0)},
	} {
		err := f.conn.Revoke(context.Background(), req)
		if !ca.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent error", name, err)
		}
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("a refused revocation changed the CRL")
	}
	// Without a ledger a restart forgets serials: the message says what to do instead.
	restarted, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "crlFile": "ca.crl"}, ca.Env{BaseDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restarted.Close() })
	err = restarted.Revoke(context.Background(), &ca.RevokeRequest{Serial: mine.SerialNumber})
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "give the certificate") {
		t.Errorf("serial alone after a restart without ledger: %v", err)
	}
	if err := restarted.Revoke(context.Background(), &ca.RevokeRequest{Serial: mine.SerialNumber, Certificate: mine}); err != nil {
		t.Errorf("with the certificate after a restart: %v", err)
	}
}

// TestRevokeWriteFailure: when the CRL cannot be written, Revoke fails as retryable, the
// published CRL is the previous one, whole, and a retry once the fault is gone revokes.
func TestRevokeWriteFailure(t *testing.T) {
	f := newFixture(t, caSpec{}, ca.Settings{"crlFile": "ca.crl"})
	path := filepath.Join(f.dir, "ca.crl")
	leaf := issueOne(t, f.conn, "WRITEFAIL").Leaf
	before, _ := os.ReadFile(path)
	// The fault: a directory stands where the CRL was, so it can be neither read nor replaced
	// (permission bits would not stop root, which the tests may run as).
	if err := os.Rename(path, path+".saved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	err := f.conn.Revoke(context.Background(), &ca.RevokeRequest{Serial: leaf.SerialNumber, Certificate: leaf, Reason: ca.ReasonKeyCompromise})
	if err == nil || ca.IsPermanent(err) {
		t.Fatalf("Revoke with an unwritable CRL: %v; want a retryable error", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".saved", path); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("the failed revocation changed the CRL")
	}
	if err := f.conn.Revoke(context.Background(), &ca.RevokeRequest{Serial: leaf.SerialNumber, Certificate: leaf, Reason: ca.ReasonKeyCompromise}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if ok, reason := crlStatus(t, path, f.cert, leaf.SerialNumber); !ok || reason != ca.ReasonKeyCompromise {
		t.Errorf("after the retry: revoked %v reason %v", ok, reason)
	}
}

// TestWriteAtomic: the file is replaced whole or not at all, and a failed replacement leaves no
// temporary file behind.
func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.crl")
	if err := writeAtomic(path, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(path, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "two" {
		t.Fatalf("content %q", b)
	}
	blocked := filepath.Join(dir, "blocked")
	if err := os.MkdirAll(filepath.Join(blocked, "child"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(blocked, []byte("three"), 0o644); err == nil {
		t.Fatal("replacing a non-empty directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
