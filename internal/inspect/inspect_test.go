package inspect

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

func record(now time.Time) *journal.Record {
	r := &journal.Record{
		Name:    process.Name("C0x", "ABCDEF0123456789ABCDEF0123456789"),
		Process: &process.Process{ID: "ABCDEF0123456789ABCDEF0123456789"},
		State:   journal.StateClaimed, ProfileName: "device", CAName: "builtin",
		Created: now.Add(-90 * time.Second), NextDue: now.Add(30 * time.Second),
	}
	r.Log(now.Add(-90*time.Second), "claimed as a1")
	r.State, r.Operation, r.Attempts, r.LastError = journal.StateSignRequested, "op/1", 3, "HTTP 503:\nbackend unavailable"
	r.Log(now.Add(-80*time.Second), "operation op/1")
	return r
}

func TestListTableAndJSON(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	if err := List(&buf, []*journal.Record{record(now)}, now, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"ABCDEF0123456789ABCDEF0123456789", "sign_requested", "1m30s", "wait for the device signature", "30s", "HTTP 503: backend unavailable", "1 unfinished"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	buf.Reset()
	if err := List(&buf, []*journal.Record{record(now)}, now, true); err != nil {
		t.Fatal(err)
	}
	var rows []Summary
	if err := json.Unmarshal(buf.Bytes(), &rows); err != nil {
		t.Fatalf("JSON output does not parse: %v\n%s", err, buf.String())
	}
	if len(rows) != 1 || rows[0].State != journal.StateSignRequested || rows[0].Attempts != 3 || rows[0].DueIn != "30s" {
		t.Fatalf("rows %+v", rows)
	}
	buf.Reset()
	if err := List(&buf, nil, now, false); err != nil || !strings.Contains(buf.String(), "no unfinished") {
		t.Fatalf("empty list: %q, %v", buf.String(), err)
	}
}

func TestShowHistory(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	if err := Show(&buf, record(now), now, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"history:", "claimed as a1", "operation op/1", "profile:", "device", "due in:"} {
		if !strings.Contains(out, want) {
			t.Errorf("detail lacks %q:\n%s", want, out)
		}
	}
	buf.Reset()
	if err := Show(&buf, record(now), now, true); err != nil {
		t.Fatal(err)
	}
	var d Detail
	if err := json.Unmarshal(buf.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.History) != 2 || d.History[0].State != journal.StateClaimed || d.Operation != "op/1" {
		t.Fatalf("detail %+v", d)
	}
}

// certificate makes a self-signed certificate with names of every kind, and returns its PEM.
func certificate(t *testing.T) (*x509.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("urn:chromeos:device:dir-1")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0xc0ffee), Subject: pkix.Name{CommonName: "5CD1234"},
		NotBefore: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2027, 11, 1, 0, 0, 0, 0, time.UTC),
		DNSNames: []string{"dev.example.com"}, EmailAddresses: []string{"ada@example.com"}, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, string(pemutil.Encode(c))
}

func finished(now time.Time, id string, state journal.State, at time.Duration) *journal.Record {
	r := record(now)
	r.Name, r.Process.ID = process.Name("C0x", id), id
	r.State, r.FinishedAt, r.NextDue, r.Outcome = state, now.Add(-at), time.Time{}, map[journal.State]string{journal.StateUploaded: "issued", journal.StateFailed: "failed"}[state]
	if state == journal.StateFailed {
		r.FailureMessage = "the CA refused the request: template DeviceAuth is not allowed"
	}
	return r
}

func TestShowCertificate(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	leaf, pemText := certificate(t)
	r := finished(now, "ABCDEF0123456789ABCDEF0123456789", journal.StateUploaded, time.Minute)
	r.CertificatePEM = pemText
	var buf bytes.Buffer
	if err := Show(&buf, r, now, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	spki := audit.SPKISHA256(leaf.RawSubjectPublicKeyInfo)
	for _, want := range []string{"CN=5CD1234", "c0ffee", "dns: dev.example.com; email: ada@example.com; uri: urn:chromeos:device:dir-1",
		"2026-11-01T00:00:00Z", "2027-11-01T00:00:00Z", spki, "outcome:", "issued", "finished:"} {
		if !strings.Contains(out, want) {
			t.Errorf("detail lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "BEGIN CERTIFICATE") || strings.Contains(out, "due in") {
		t.Errorf("without --pem, no PEM; finished, no due time:\n%s", out)
	}
	buf.Reset()
	if err := Show(&buf, r, now, false, WithPEM()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(buf.String(), pemText) {
		t.Errorf("--pem output does not end with the PEM:\n%s", buf.String())
	}
	buf.Reset()
	if err := Show(&buf, r, now, true, WithPEM()); err != nil {
		t.Fatal(err)
	}
	var d Detail
	if err := json.Unmarshal(buf.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if d.Certificate == nil || d.Certificate.Serial != "c0ffee" || d.Certificate.SPKISHA256 != spki || d.CertificatePEM != pemText ||
		d.Serial != "c0ffee" || d.Outcome != "issued" || !d.FinishedAt.Equal(r.FinishedAt) {
		t.Fatalf("detail %+v", d)
	}
}

func TestRunFilters(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	st := journal.NewMemory()
	_, pemText := certificate(t)
	up := finished(now, "UP000000000000000000000000000001", journal.StateUploaded, time.Minute)
	up.CertificatePEM = pemText
	older := finished(now, "UP000000000000000000000000000002", journal.StateUploaded, time.Hour)
	fail := finished(now, "FA000000000000000000000000000001", journal.StateFailed, 2*time.Minute)
	pending := finished(now, "PE000000000000000000000000000001", journal.StateUploaded, time.Second)
	pending.AuditPending = true
	for _, r := range []*journal.Record{record(now), up, older, fail, pending} {
		if _, err := st.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	run := func(f Filter, asJSON bool) string {
		t.Helper()
		var buf bytes.Buffer
		if err := Run(ctx, &buf, st, f, now, asJSON); err != nil {
			t.Fatalf("Run(%+v): %v", f, err)
		}
		return buf.String()
	}
	ids := func(out string) []string {
		t.Helper()
		var rows []Summary
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var got []string
		for _, r := range rows {
			got = append(got, r.ProcessID[:4])
		}
		return got
	}
	for _, tc := range []struct {
		f    Filter
		want []string
	}{
		{Filter{}, []string{"ABCD", "PE00"}}, // the audit-pending record is not done yet
		{Filter{All: true}, []string{"ABCD", "PE00", "UP00", "FA00", "UP00"}},
		{Filter{All: true, Limit: 1}, []string{"ABCD", "PE00", "UP00"}},
		{Filter{State: journal.StateUploaded}, []string{"UP00", "UP00"}},
		{Filter{State: journal.StateFailed}, []string{"FA00"}},
		{Filter{State: journal.StateSignRequested}, []string{"ABCD"}},
		{Filter{State: journal.StateIssued}, nil},
	} {
		if got := ids(run(tc.f, true)); !slices.Equal(got, tc.want) {
			t.Errorf("Run(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	out := run(Filter{All: true}, false)
	for _, want := range []string{"2 unfinished", "write the audit event", "3 finished", "OUTCOME", "c0ffee", "template DeviceAuth is not allowed"} {
		if !strings.Contains(out, want) {
			t.Errorf("--all table lacks %q:\n%s", want, out)
		}
	}
	if err := Run(ctx, io.Discard, st, Filter{All: true, State: journal.StateFailed}, now, false); err == nil {
		t.Error("--all with --state accepted")
	}
	if _, err := ParseState("done"); err == nil || !strings.Contains(err.Error(), "uploaded") {
		t.Errorf("ParseState(done) = %v", err)
	}
	if st, err := ParseState("failed"); err != nil || st != journal.StateFailed {
		t.Errorf("ParseState(failed) = %v, %v", st, err)
	}
}

// TestFind: a full name is read as given; a bare id is found under whichever served customer
// holds it; an id no customer holds is an error naming it and the customers.
func TestFind(t *testing.T) {
	ctx := context.Background()
	s := journal.NewMemory()
	id := "ABCDEF0123456789ABCDEF0123456789"
	name := process.Name("C0second", id)
	if _, err := s.Create(ctx, &journal.Record{Name: name, Process: &process.Process{ID: id}, State: journal.StateClaimed}); err != nil {
		t.Fatal(err)
	}
	for _, arg := range []string{name, id} {
		rec, err := Find(ctx, s, []string{"C0first", "C0second"}, arg)
		if err != nil || rec.Name != name {
			t.Fatalf("Find(%q) = %v, %v; want %s", arg, rec, err, name)
		}
	}
	_, err := Find(ctx, s, []string{"C0first"}, id)
	if err == nil || !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), "C0first") {
		t.Fatalf("Find under the wrong customer = %v, want an error naming the id and the customers", err)
	}
	if _, err := Find(ctx, s, nil, process.Name("C0first", id)); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Find of an unknown full name = %v, want ErrNotFound", err)
	}
}

// TestNextStep: every state says what comes next, and a finished record that owes its audit
// event says that instead.
func TestNextStep(t *testing.T) {
	for _, st := range journal.States() {
		if got := StateNextStep(st); got == "unknown" || got == "" {
			t.Errorf("state %s: next step %q", st, got)
		}
	}
	rec := &journal.Record{State: journal.StateUploaded, AuditPending: true}
	if got := NextStep(rec); got != "write the audit event" {
		t.Errorf("pending audit: %q", got)
	}
	rec.AuditPending = false
	if got := NextStep(rec); got != "none (finished)" {
		t.Errorf("finished: %q", got)
	}
}

// TestShowRevocations: a process whose certificate superseded another shows that revocation,
// pending with its due time, then done; the superseded process shows who revokes it, found in
// the journal by identity; the next step names the serial; JSON carries both sides.
func TestShowRevocations(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	_, pemText := certificate(t)
	old := finished(now, "OLD00000000000000000000000000000", journal.StateUploaded, 48*time.Hour)
	renewed := finished(now, "NEW00000000000000000000000000000", journal.StateUploaded, time.Minute)
	for _, r := range []*journal.Record{old, renewed} {
		r.CertificatePEM, r.Process.Customer = pemText, "C0x"
		r.Process.Device = &process.Device{SerialNumber: "5CD1234", DirectoryID: "dev-1"}
	}
	renewed.Revocations = []journal.Revocation{{Process: old.Name, CAName: "builtin", Serial: "c0ffee", CertificatePEM: pemText,
		Reason: "superseded", Due: now.Add(3 * time.Hour), NextDue: now.Add(3 * time.Hour), State: journal.RevocationPending}}
	renewed.NextDue = now.Add(3 * time.Hour)
	store := journal.NewMemory()
	for _, r := range []*journal.Record{old, renewed} {
		if _, err := store.Create(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if got := NextStep(renewed); got != "revoke superseded serial c0ffee" {
		t.Errorf("NextStep = %q", got)
	}
	var buf bytes.Buffer
	if err := Show(&buf, renewed, now, false); err != nil {
		t.Fatal(err)
	}
	if want := "supersedes:           " + old.Name + ", serial c0ffee at builtin: revocation (superseded) pending, due in 3h0m0s"; !strings.Contains(buf.String(), want) {
		t.Errorf("detail lacks %q:\n%s", want, buf.String())
	}

	by, err := RevokedBy(context.Background(), store, old)
	if err != nil || len(by) != 1 || by[0].SupersededBy != renewed.Name {
		t.Fatalf("RevokedBy = %+v, %v; want the renewed process", by, err)
	}
	if by, err := RevokedBy(context.Background(), store, renewed); err != nil || len(by) != 0 {
		t.Fatalf("RevokedBy(the newest) = %+v, %v; want none", by, err)
	}
	renewed.Revocations[0].State, renewed.Revocations[0].At = journal.RevocationRevoked, now.Add(-time.Minute)
	by = []Revocation{revocationOf(renewed.Name, renewed.Revocations[0])}
	buf.Reset()
	if err := Show(&buf, old, now, false, WithRevokedBy(by)); err != nil {
		t.Fatal(err)
	}
	if want := "superseded by:        " + renewed.Name + ", serial c0ffee at builtin: revoked (superseded) at 2026-11-23T11:59:00Z"; !strings.Contains(buf.String(), want) {
		t.Errorf("detail lacks %q:\n%s", want, buf.String())
	}
	buf.Reset()
	if err := Show(&buf, renewed, now, true); err != nil {
		t.Fatal(err)
	}
	var d Detail
	if err := json.Unmarshal(buf.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Revocations) != 1 || d.Revocations[0].State != journal.RevocationRevoked || d.Revocations[0].Process != old.Name ||
		d.Revocations[0].SupersededBy != renewed.Name || strings.Contains(buf.String(), "BEGIN CERTIFICATE") {
		t.Errorf("JSON detail revocations %+v (the superseded PEM stays out)", d.Revocations)
	}
}

// TestRunListsSettledOnce: a process that ended and owes only a revocation is listed as
// unfinished by default (its next step is the revocation), with the finished ones by --state
// uploaded, and once with --all: among the finished, in the order of its finish.
func TestRunListsSettledOnce(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	store := journal.NewMemory()
	older := finished(now, "OLDER000000000000000000000000000", journal.StateUploaded, time.Hour)
	settled := finished(now, "SETTLED0000000000000000000000000", journal.StateUploaded, time.Minute)
	settled.Revocations = []journal.Revocation{{Process: older.Name, Serial: "2a", State: journal.RevocationPending, NextDue: now.Add(time.Hour)}}
	settled.NextDue = now.Add(time.Hour)
	for _, r := range []*journal.Record{older, settled} {
		if _, err := store.Create(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(f Filter) []string {
		t.Helper()
		var buf bytes.Buffer
		if err := Run(context.Background(), &buf, store, f, now, true); err != nil {
			t.Fatal(err)
		}
		var rows []Summary
		if err := json.Unmarshal(buf.Bytes(), &rows); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rows {
			out = append(out, r.ProcessID[:5]+":"+r.NextStep)
		}
		return out
	}
	for _, tt := range []struct {
		f    Filter
		want string
	}{
		{Filter{}, "SETTL:revoke superseded serial 2a"},
		{Filter{State: journal.StateUploaded}, "SETTL:revoke superseded serial 2a OLDER:none (finished)"},
		{Filter{All: true}, "SETTL:revoke superseded serial 2a OLDER:none (finished)"},
		{Filter{State: journal.StateUploaded, Limit: 1}, "SETTL:revoke superseded serial 2a"},
	} {
		if got := strings.Join(ids(tt.f), " "); got != tt.want {
			t.Errorf("Run(%+v) = %q, want %q", tt.f, got, tt.want)
		}
	}
}
