package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/sqlite"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

// revokeFixture is a configuration with a built-in CA that publishes a CRL, a journal holding
// one uploaded process and one without a certificate, and certificates issued outside the
// journal.
type revokeFixture struct {
	dir, cfg, crl string
	caCert        *x509.Certificate
	journaled     *x509.Certificate // the certificate of process procID
	other         *x509.Certificate // issued by the CA, in its ledger, not in the journal
}

const (
	procID     = "REVOKE00000000000000000000000001"
	pendingID  = "REVOKE00000000000000000000000002"
	corpLocal  = "corp: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key, ledgerFile: ledger.jsonl, crlFile: ca.crl}"
	revokeBase = "profiles: {d: {subject: {commonName: x}}}\naudit: {path: audit.jsonl}\n"
)

func newRevokeFixture(t *testing.T, conns ...string) *revokeFixture {
	t.Helper()
	dir := t.TempDir()
	f := &revokeFixture{dir: dir, crl: filepath.Join(dir, "ca.crl")}
	if _, _, err := local.CreateCA(filepath.Join(dir, "ca"), "ecdsa", "revoke test CA", 0); err != nil {
		t.Fatal(err)
	}
	if len(conns) == 0 {
		conns = []string{corpLocal}
	}
	f.cfg = writeFile(t, filepath.Join(dir, "adapter.yaml"),
		strings.Replace(base, "journal: {type: memory}", "journal: {type: sqlite, path: journal.db}", 1)+revokeBase+
			"caConnections:\n  "+strings.Join(conns, "\n  ")+"\n")

	// The CA issues as the daemon would, recording in its ledger.
	conn, err := local.New(ca.Settings{"certificateFile": "ca/ca.crt", "keyFile": "ca/ca.key", "ledgerFile": "ledger.jsonl", "crlFile": "ca.crl"},
		ca.Env{Name: "corp", BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	f.caCert = conn.Certificate()
	issue := func(id string) *x509.Certificate {
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), id)
		issued, err := conn.Issue(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return issued.Leaf
	}
	f.journaled, f.other = issue(procID), issue("OUTSIDE")
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}

	store, err := sqlite.Open(context.Background(), filepath.Join(dir, "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	now := time.Now()
	for _, r := range []*journal.Record{
		{Name: process.Name("C0abc", procID), Process: &process.Process{ID: procID, Customer: "C0abc"}, State: journal.StateUploaded,
			CAName: "corp", CertificatePEM: string(pemutil.Encode(f.journaled)), Created: now, FinishedAt: now, Outcome: "issued"},
		{Name: process.Name("C0abc", pendingID), Process: &process.Process{ID: pendingID, Customer: "C0abc"}, State: journal.StateSignRequested,
			CAName: "corp", Created: now, NextDue: now},
	} {
		if _, err := store.Create(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// onCRL reads the published CRL as a relying party would and says whether serial is on it.
func (f *revokeFixture) onCRL(t *testing.T, serial *big.Int) (bool, ca.Reason) {
	t.Helper()
	b, err := os.ReadFile(f.crl)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(f.caCert); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return true, ca.Reason(e.ReasonCode)
		}
	}
	return false, 0
}

// colons writes a serial as openssl does: 7f:3a:….
func colons(n *big.Int) string {
	h := n.Text(16)
	if len(h)%2 == 1 {
		h = "0" + h
	}
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, strings.ToUpper(h[i:i+2]))
	}
	return strings.Join(parts, ":")
}

func TestRevoke(t *testing.T) {
	f := newRevokeFixture(t)

	code, out, stderr := runCLI(t, "revoke", "--config", f.cfg, "--process", procID, "--reason", "key-compromise")
	if code != ExitOK || !strings.Contains(out, "revoked serial "+f.journaled.SerialNumber.Text(16)) || !strings.Contains(out, "caConnections.corp, reason keyCompromise") {
		t.Fatalf("revoke --process: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	if ok, reason := f.onCRL(t, f.journaled.SerialNumber); !ok || reason != ca.ReasonKeyCompromise {
		t.Fatalf("after revoke --process the CRL says revoked=%v reason=%v", ok, reason)
	}
	// Again: revoked already, still a success, and the first reason stays.
	if code, out, stderr := runCLI(t, "revoke", "--config", f.cfg, "--process", process.Name("C0abc", procID), "--reason", "superseded"); code != ExitOK {
		t.Fatalf("revoke again: exit %d\n%s%s", code, out, stderr)
	}
	if _, reason := f.onCRL(t, f.journaled.SerialNumber); reason != ca.ReasonKeyCompromise {
		t.Errorf("a second revocation changed the reason to %v", reason)
	}

	// By serial, as openssl prints it: the CA finds the certificate in its ledger; a single CA
	// connection needs no --ca.
	code, out, stderr = runCLI(t, "revoke", "--config", f.cfg, "--serial", colons(f.other.SerialNumber), "--reason", "superseded")
	if code != ExitOK {
		t.Fatalf("revoke --serial: exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	if ok, reason := f.onCRL(t, f.other.SerialNumber); !ok || reason != ca.ReasonSuperseded {
		t.Fatalf("after revoke --serial the CRL says revoked=%v reason=%v", ok, reason)
	}
	// A refused one: the attempt is audited too.
	if code, _, _ := runCLI(t, "revoke", "--config", f.cfg, "--serial", "4242", "--reason", "superseded"); code != ExitFailure {
		t.Fatalf("unknown serial: exit %d", code)
	}

	// The audit trail has one event per attempt, with the certificate when it was known.
	b, err := os.ReadFile(filepath.Join(f.dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var events []audit.Event
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var ev audit.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		events = append(events, ev)
	}
	type seen struct{ outcome, reason, serial string }
	want := []seen{
		{"revoked", "keyCompromise", f.journaled.SerialNumber.Text(16)},
		{"revoked", "superseded", f.journaled.SerialNumber.Text(16)},
		{"revoked", "superseded", f.other.SerialNumber.Text(16)},
		{"failed", "superseded", "4242"},
	}
	if len(events) != len(want) {
		t.Fatalf("%d audit events, want %d: %s", len(events), len(want), b)
	}
	for i, ev := range events {
		serial := ""
		if ev.Certificate != nil {
			serial = ev.Certificate.Serial
		}
		if ev.Kind != audit.KindRevocation || ev.CAConnection != "corp" || ev.InstanceID != "a1" ||
			ev.Outcome != want[i].outcome || ev.Reason != want[i].reason || !strings.Contains(ev.ID, "/"+want[i].serial+"/") {
			t.Errorf("event %d: %+v, want %+v", i, ev, want[i])
		}
		if i == 0 && (serial != f.journaled.SerialNumber.Text(16) || ev.Certificate.Subject != f.journaled.Subject.String()) {
			t.Errorf("event 0 certificate %+v, want the journal's", ev.Certificate)
		}
		if i == 3 && (ev.Certificate != nil || !strings.Contains(ev.Failure, "issued no certificate")) {
			t.Errorf("refused event: certificate %+v, failure %q", ev.Certificate, ev.Failure)
		}
	}
}

func TestRevokeCertificateFile(t *testing.T) {
	f := newRevokeFixture(t, corpLocal, "scep: {type: scep, url: 'http://127.0.0.1:1/scep', signerKeyFile: signer.key, signerCertFile: signer.crt}")
	pemPath := writeFile(t, filepath.Join(f.dir, "leaf.pem"), string(pemutil.Encode(f.other)))
	if code, out, stderr := runCLI(t, "revoke", "--config", f.cfg, "--certificate", pemPath, "--ca", "corp", "--reason", "cessationOfOperation"); code != ExitOK {
		t.Fatalf("revoke --certificate: exit %d\n%s%s", code, out, stderr)
	}
	if ok, reason := f.onCRL(t, f.other.SerialNumber); !ok || reason != ca.ReasonCessationOfOperation {
		t.Fatalf("CRL: revoked=%v reason=%v", ok, reason)
	}
	// A connection whose CA cannot revoke says so, and nothing changes.
	code, _, stderr := runCLI(t, "revoke", "--config", f.cfg, "--certificate", pemPath, "--ca", "scep", "--reason", "superseded")
	if code != ExitFailure || !strings.Contains(stderr, "caConnections.scep (type scep) cannot revoke") {
		t.Errorf("scep: exit %d: %s", code, stderr)
	}
}

func TestRevokeRefusals(t *testing.T) {
	f := newRevokeFixture(t, corpLocal, "other: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}")
	stranger := catest.NewRoot(t, "stranger").Sign(t, &x509.Certificate{SerialNumber: f.other.SerialNumber}, f.other.PublicKey)
	strangerPEM := writeFile(t, filepath.Join(f.dir, "stranger.pem"), string(pemutil.Encode(stranger)))
	before, _ := os.ReadFile(f.crl)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--process", procID}, ExitUsage, "--reason is required"},
		{[]string{"--process", procID, "--reason", "compromised"}, ExitUsage, `unknown revocation reason "compromised"`},
		{[]string{"--reason", "superseded"}, ExitUsage, "at least one of the flags"},
		{[]string{"--process", procID, "--serial", "01", "--reason", "superseded"}, ExitUsage, "none of the others can be"},
		{[]string{"--serial", "xyz", "--ca", "corp", "--reason", "superseded"}, ExitUsage, `"xyz" is not a hexadecimal serial number`},
		{[]string{"--serial", "0", "--ca", "corp", "--reason", "superseded"}, ExitUsage, "positive"},
		{[]string{"--serial", "01", "--reason", "superseded"}, ExitUsage, "--ca is required: the configuration has 2 CA connections (corp, other)"},
		{[]string{"--serial", "4242", "--ca", "corp", "--reason", "superseded"}, ExitFailure, "this CA issued no certificate with that serial"},
		{[]string{"--serial", "01", "--ca", "nobody", "--reason", "superseded"}, ExitFailure, `no CA connection "nobody"`},
		{[]string{"--process", "NOSUCHPROCESS", "--reason", "superseded"}, ExitFailure, `no process "NOSUCHPROCESS"`},
		{[]string{"--process", pendingID, "--reason", "superseded"}, ExitFailure, "has no certificate (state sign_requested)"},
		{[]string{"--process", procID, "--ca", "other", "--reason", "superseded"}, ExitFailure, "was issued through caConnections.corp, not other"},
		{[]string{"--process", procID, "--ca", "other", "--reason", "superseded"}, ExitFailure, "was issued through caConnections.corp, not other"},
		{[]string{"--certificate", strangerPEM, "--ca", "corp", "--reason", "keyCompromise"}, ExitFailure, "was not issued by this CA"},
		{[]string{"--certificate", filepath.Join(f.dir, "missing.pem"), "--ca", "corp", "--reason", "keyCompromise"}, ExitFailure, "missing.pem"},
		// The same CA without crlFile cannot revoke: it would publish nothing.
		{[]string{"--serial", "01", "--ca", "other", "--reason", "superseded"}, ExitFailure, "set crlFile to revoke"},
	} {
		code, out, stderr := runCLI(t, append([]string{"revoke", "--config", f.cfg}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("revoke %v: exit %d (want %d)\nstdout %s\nstderr %s\nwant %q", tc.args, code, tc.code, out, stderr, tc.want)
		}
	}
	if after, _ := os.ReadFile(f.crl); string(after) != string(before) {
		t.Error("a refused revocation changed the CRL")
	}
}
