package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/inspect"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/postgres"
	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
	"github.com/certprov/certprov-adapter/internal/journal/sqlite"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

const inspectCustomer = "C0insp"

// seedJournal writes one unfinished and one finished record, as a running adapter would.
func seedJournal(t *testing.T, store journal.Store) (unfinished, finished string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	unfinished = "AAAA0000BBBB1111CCCC2222DDDD3333"
	finished = "FFFF0000BBBB1111CCCC2222DDDD3333"
	for _, id := range []string{unfinished, finished} {
		rec := &journal.Record{
			Name: process.Name(inspectCustomer, id), Process: &process.Process{ID: id, Customer: inspectCustomer},
			State: journal.StateClaimed, ProfileName: "device", CAName: "builtin",
			Created: now.Add(-time.Minute), NextDue: now.Add(time.Hour), StepStarted: now,
		}
		rec.Log(now.Add(-time.Minute), "claimed as a1")
		rec.State, rec.LastError = journal.StateSignRequested, "HTTP 503: try later"
		rec.Log(now.Add(-50*time.Second), "operation op-1")
		if id == finished {
			rec.State, rec.FinishedAt, rec.Outcome, rec.CertificatePEM = journal.StateUploaded, now, "issued", testCertificatePEM(t)
		}
		if _, err := store.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	failed := process.Name(inspectCustomer, failedID)
	rec := &journal.Record{
		Name: failed, Process: &process.Process{ID: failedID, Customer: inspectCustomer},
		State: journal.StateFailed, Outcome: "failed", FailureMessage: "the CA refused the request: not allowed",
		Created: now.Add(-time.Hour), FinishedAt: now.Add(-time.Minute),
	}
	if _, err := store.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	return unfinished, finished
}

const failedID = "EEEE0000BBBB1111CCCC2222DDDD3333"

// testCertificatePEM is a self-signed certificate with serial 0xc0ffee and CN inspect-me.
func testCertificatePEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0xc0ffee), Subject: pkix.Name{CommonName: "inspect-me"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), EmailAddresses: []string{"ada@example.com"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pemutil.EncodeCertificateDER(der))
}

func inspectConfig(t *testing.T, journalYAML string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "adapter.yaml")
	cfg := fmt.Sprintf(`instanceId: a1
customers: [%s]
pubsub: {project: p, subscription: s}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal:
%s
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  builtin: {type: local, certificateFile: ca.crt, keyFile: ca.key}
`, inspectCustomer, journalYAML)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func checkInspect(t *testing.T, cfg, unfinished, finished string) {
	t.Helper()
	code, out, stderr := runCmd(t, "inspect", "--config", cfg)
	if code != 0 {
		t.Fatalf("inspect exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, unfinished) || strings.Contains(out, finished) || !strings.Contains(out, "wait for the device signature") ||
		!strings.Contains(out, "HTTP 503: try later") || !strings.Contains(out, "1 unfinished") {
		t.Fatalf("list output:\n%s", out)
	}
	code, out, stderr = runCmd(t, "inspect", "--config", cfg, "--json")
	var rows []inspect.Summary
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0].ProcessID != unfinished {
		t.Fatalf("--json exit %d rows %+v\n%s%s", code, rows, out, stderr)
	}
	// One process by id, finished ones included: history for audit.
	code, out, stderr = runCmd(t, "inspect", "--config", cfg, finished)
	if code != 0 || !strings.Contains(out, "claimed as a1") || !strings.Contains(out, "operation op-1") || !strings.Contains(out, "uploaded") {
		t.Fatalf("show exit %d:\n%s%s", code, out, stderr)
	}
	code, out, _ = runCmd(t, "inspect", "--config", cfg, "--json", process.Name(inspectCustomer, unfinished))
	var d inspect.Detail
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil || len(d.History) != 2 {
		t.Fatalf("show --json exit %d: %s", code, out)
	}
	if code, _, stderr = runCmd(t, "inspect", "--config", cfg, "NOSUCHPROCESS"); code != 1 || !strings.Contains(stderr, "no process") {
		t.Fatalf("unknown process: exit %d %s", code, stderr)
	}

	// Finished processes: listed with --all (newest first) or by state, each with its certificate.
	code, out, stderr = runCmd(t, "inspect", "--config", cfg, "--all")
	if code != 0 || !strings.Contains(out, unfinished) || !strings.Contains(out, finished) || !strings.Contains(out, failedID) ||
		!strings.Contains(out, "c0ffee") || !strings.Contains(out, "2 finished") || strings.Index(out, finished) > strings.Index(out, failedID) {
		t.Fatalf("--all exit %d:\n%s%s", code, out, stderr)
	}
	code, out, stderr = runCmd(t, "inspect", "--config", cfg, "--state", "failed", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0].ProcessID != failedID || rows[0].Outcome != "failed" {
		t.Fatalf("--state failed exit %d rows %+v\n%s%s", code, rows, out, stderr)
	}
	code, out, _ = runCmd(t, "inspect", "--config", cfg, "--state", "uploaded", "--limit", "1")
	if code != 0 || !strings.Contains(out, finished) || strings.Contains(out, failedID) || strings.Contains(out, unfinished) {
		t.Fatalf("--state uploaded exit %d:\n%s", code, out)
	}
	code, out, stderr = runCmd(t, "inspect", "--config", cfg, "--pem", finished)
	if code != 0 || !strings.Contains(out, "CN=inspect-me") || !strings.Contains(out, "c0ffee") || !strings.Contains(out, "email: ada@example.com") ||
		!strings.Contains(out, "SPKI SHA-256") || !strings.Contains(out, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("show --pem exit %d:\n%s%s", code, out, stderr)
	}
	if code, _, stderr = runCmd(t, "inspect", "--config", cfg, "--state", "done"); code != 2 || !strings.Contains(stderr, "unknown state") {
		t.Fatalf("--state done: exit %d %s", code, stderr)
	}
}

func TestInspectSQLiteWhileAdapterRuns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "journal.db")
	// The "running adapter" keeps the journal open for writing throughout.
	live, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	unfinished, finished := seedJournal(t, live)
	checkInspect(t, inspectConfig(t, "  type: sqlite\n  path: "+path), unfinished, finished)
}

func TestInspectPostgres(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.DSN(t), "inspect")
	live, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	unfinished, finished := seedJournal(t, live)
	checkInspect(t, inspectConfig(t, fmt.Sprintf("  type: postgres\n  dsn: %q", dsn)), unfinished, finished)
}

func TestInspectMemoryJournalRefused(t *testing.T) {
	code, _, stderr := runCmd(t, "inspect", "--config", inspectConfig(t, "  type: memory"))
	if code != 1 || !strings.Contains(stderr, "memory journal") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}
