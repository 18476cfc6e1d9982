package main

import (
	"context"
	"encoding/json"
	"fmt"
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
			rec.State, rec.FinishedAt = journal.StateUploaded, now
		}
		if _, err := store.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	return unfinished, finished
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
