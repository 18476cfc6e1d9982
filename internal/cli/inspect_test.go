package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
	"github.com/certprov/certprov-adapter/internal/journal/sqlite"
	"github.com/certprov/certprov-adapter/internal/process"
)

// TestInspectTenants: with tenants, inspect reads each tenant's journal part under a heading
// naming it, --tenant one of them, and finds a process in whichever tenant's journal holds it.
func TestInspectTenants(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for _, tt := range []struct{ tenant, customer, id string }{{"acme", "C0acme01", "PROCA"}, {"beta", "C0beta01", "PROCB"}} {
		store, err := sqlite.Open(ctx, filepath.Join(dir, "journal."+tt.tenant+".db"))
		if err != nil {
			t.Fatal(err)
		}
		name := process.Name(tt.customer, tt.id)
		rec := journaltest.NewRecord(name, time.Now())
		rec.Process = &process.Process{Name: name, ID: tt.id, Customer: tt.customer}
		if _, err := store.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if err := store.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), `
instanceId: a1
journal: {type: sqlite, path: journal.db}
tenants:
  - name: acme
    customers: [C0acme01]
    pubsub: {project: p, subscription: a}
    profiles: {d: {subject: {commonName: x}}}
    caConnections: {c: {type: local}}
  - name: beta
    customers: [C0beta01]
    pubsub: {project: p, subscription: b}
    profiles: {d: {subject: {commonName: x}}}
    caConnections: {c: {type: local}}
`)
	code, out, stderr := runCLI(t, "inspect", "--config", cfg)
	ia, ib := strings.Index(out, "tenant acme:"), strings.Index(out, "tenant beta:")
	pa, pb := strings.Index(out, "PROCA"), strings.Index(out, "PROCB")
	if code != ExitOK || ia < 0 || ib < ia || pa < ia || pa > ib || pb < ib {
		t.Errorf("inspect: exit %d\n%s%s", code, out, stderr)
	}
	if code, out, _ := runCLI(t, "inspect", "--tenant", "beta", "--config", cfg); code != ExitOK || strings.Contains(out, "PROCA") || !strings.Contains(out, "PROCB") {
		t.Errorf("inspect --tenant beta: exit %d\n%s", code, out)
	}
	if code, out, stderr := runCLI(t, "inspect", "--config", cfg, "PROCB"); code != ExitOK || !strings.Contains(out, "Tenant:       beta") || !strings.Contains(out, process.Name("C0beta01", "PROCB")) {
		t.Errorf("inspect PROCB: exit %d\n%s%s", code, out, stderr)
	}
	if code, _, stderr := runCLI(t, "inspect", "--config", cfg, "NOPE"); code == ExitOK || !strings.Contains(stderr, "any tenant (acme, beta)") {
		t.Errorf("inspect NOPE: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "inspect", "--json", "--config", cfg); code == ExitOK || !strings.Contains(stderr, "--tenant") {
		t.Errorf("inspect --json: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "inspect", "--tenant", "gamma", "--config", cfg); code == ExitOK || !strings.Contains(stderr, "acme, beta") {
		t.Errorf("inspect --tenant gamma: exit %d\n%s", code, stderr)
	}
}
