package engine_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
	"github.com/certprov/certprov-adapter/internal/journal/postgres"
	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
	"github.com/certprov/certprov-adapter/internal/journal/sqlite"
	"github.com/certprov/certprov-adapter/internal/process"
)

var _ journal.Store = (*reopenable)(nil)

// clock is the engine's clock in these tests: the wall clock plus an offset the test moves, so
// that a grace period of hours passes at once.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

const revokeGrace = 6 * time.Hour

// hygieneProfiles: "device" revokes what it supersedes after revokeGrace; "user" does not.
func hygieneProfiles() map[string]config.Profile {
	dev := e2etest.Profile("{{.Device.SerialNumber}}", "", 30*time.Second)
	dev.RevokeSuperseded = config.RevokeSuperseded{Enabled: true, GracePeriod: revokeGrace, Reason: "superseded"}
	return map[string]config.Profile{"device": dev}
}

// issueFor runs one process to its end and returns its certificate.
func issueFor(t *testing.T, h *e2etest.Harness, spec emulator.ProcessSpec) (string, *x509.Certificate) {
	t.Helper()
	name := h.Start(spec)
	s := h.WaitFinished([]string{name}, 30*time.Second)[name]
	return name, h.MustIssue(s, nil)
}

// revoked reads the built-in CA's published CRL.
func revoked(t *testing.T, h *e2etest.Harness, serial *big.Int) (bool, ca.Reason) {
	t.Helper()
	ok, reason, err := h.Local.RevocationStatus(serial)
	if err != nil {
		t.Fatalf("CRL: %v", err)
	}
	return ok, reason
}

// waitRevocations waits until the record of name is final, has decided what it supersedes
// (n revocations) and has its audit event written, and returns it.
func waitRevocations(t *testing.T, store journal.Store, name string, n int) *journal.Record {
	t.Helper()
	var rec *journal.Record
	e2etest.WaitFor(t, 20*time.Second, func() bool {
		r, err := store.Get(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		rec = r
		return r.State.Final() && !r.SupersedePending && len(r.Revocations) == n && !r.AuditPending
	})
	return rec
}

// TestRevokeSuperseded: a device renews; once the grace period has passed (on the engine's
// clock), the CA's CRL lists the old certificate as superseded, and neither the new one, another
// device's, nor a user's of a profile without the option; one audit event and one counted
// revocation say so, and the journal is idle afterwards.
func TestRevokeSuperseded(t *testing.T) {
	clk := &clock{}
	h := e2etest.New(t, e2etest.Options{BuiltinCRL: true, Now: clk.Now, Profiles: hygieneProfiles()})
	device := emulator.ProcessSpec{Serial: "5CD0001", DeviceDirectoryID: "dev-1"}
	user := emulator.ProcessSpec{Scope: "user", UserDirectoryID: "u-1", UserEmail: "ada@example.com", DeviceDirectoryID: "dev-1"}

	first, oldCert := issueFor(t, h, device)
	_, otherCert := issueFor(t, h, emulator.ProcessSpec{Serial: "5CD0002", DeviceDirectoryID: "dev-2"})
	_, userOld := issueFor(t, h, user)
	_, userNew := issueFor(t, h, user)
	second, newCert := issueFor(t, h, device)

	rec := waitRevocations(t, h.Store, second, 1)
	v := rec.Revocations[0]
	if v.Process != first || v.Serial != oldCert.SerialNumber.Text(16) || v.State != journal.RevocationPending ||
		v.CAName != e2etest.BuiltinCA || v.Reason != "superseded" {
		t.Fatalf("journaled revocation = %+v; want %s's serial %s pending at %s", v, first, oldCert.SerialNumber.Text(16), e2etest.BuiltinCA)
	}
	if want := rec.IssuedAt.Add(revokeGrace); !v.Due.Equal(want) {
		t.Fatalf("revocation due %s, want issuance + grace = %s", v.Due, want)
	}
	if got, _ := revoked(t, h, oldCert.SerialNumber); got {
		t.Fatal("the old certificate is revoked before the grace period ended")
	}

	clk.advance(revokeGrace - time.Minute)
	// Still within the grace period: nothing may happen, which the engine's own next due time
	// shows (it schedules the revocation for its due time, not before).
	if next, ok, err := h.Store.NextDue(context.Background()); err != nil || !ok || !next.Equal(v.Due) {
		t.Fatalf("NextDue = %s, %v, %v; want the revocation's due time %s", next, ok, err, v.Due)
	}
	if got, _ := revoked(t, h, oldCert.SerialNumber); got {
		t.Fatal("the old certificate is revoked before the grace period ended")
	}

	clk.advance(2 * time.Minute)
	e2etest.WaitFor(t, 20*time.Second, func() bool { ok, _ := revoked(t, h, oldCert.SerialNumber); return ok })
	h.WaitJournalIdle(10 * time.Second)
	if _, reason := revoked(t, h, oldCert.SerialNumber); reason != ca.ReasonSuperseded {
		t.Errorf("CRL reason %s, want superseded", reason)
	}
	for what, c := range map[string]*x509.Certificate{"the new certificate": newCert, "another device's": otherCert,
		"a user's old one (profile without the option)": userOld, "a user's new one": userNew} {
		if got, _ := revoked(t, h, c.SerialNumber); got {
			t.Errorf("%s (serial %s) was revoked", what, c.SerialNumber.Text(16))
		}
	}
	rec, err := h.Store.Get(context.Background(), second)
	if err != nil {
		t.Fatal(err)
	}
	if v := rec.Revocations[0]; v.State != journal.RevocationRevoked || v.AuditPending || v.Attempts != 0 {
		t.Errorf("journaled revocation after the grace period = %+v; want revoked, audited", v)
	}

	var events int
	for _, ev := range h.AuditEvents() {
		if ev.Kind != "revocation" {
			continue
		}
		events++
		if ev.SupersededBy != second || ev.Process != first || ev.Certificate == nil || ev.Certificate.Serial != oldCert.SerialNumber.Text(16) ||
			ev.Outcome != "revoked" || ev.Reason != "superseded" || ev.Customer != e2etest.Customer || ev.Scope != "device" {
			t.Errorf("revocation audit event = %+v", ev)
		}
	}
	if events != 1 {
		t.Errorf("%d revocation audit events, want 1", events)
	}
	if n := h.Metric("certprov_revocations_total", "ca_connection", e2etest.BuiltinCA, "result", "revoked"); n != 1 {
		t.Errorf("certprov_revocations_total{result=revoked} = %v, want 1", n)
	}
	if n := h.Metric("certprov_revocations_decided_total", "profile", "device"); n != 1 {
		t.Errorf("certprov_revocations_decided_total{profile=device} = %v, want 1", n)
	}
	if n := h.Metric("certprov_ca_requests_total", "operation", "revoke", "outcome", "ok"); n != 1 {
		t.Errorf("certprov_ca_requests_total{operation=revoke,outcome=ok} = %v, want 1", n)
	}
}

// uploadGate holds uploadCertificate calls at the emulator's door: every one while hold is "*",
// those of the process named hold otherwise, until release is closed.
type uploadGate struct {
	mu      sync.Mutex
	hold    string
	release chan struct{}
}

func (g *uploadGate) set(hold string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = hold
}

func (g *uploadGate) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, ":uploadCertificate") {
			g.mu.Lock()
			hold, release := g.hold, g.release
			g.mu.Unlock()
			if hold == "*" || (hold != "" && strings.Contains(r.URL.Path, hold)) {
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// TestRevokeSupersededNeverNewer: a renewal never revokes a certificate issued after its own,
// even when it is the one to reach the decision last: the process issued first but uploaded
// last leaves the newer certificate alone, and the newer one revokes it.
func TestRevokeSupersededNeverNewer(t *testing.T) {
	clk := &clock{}
	gate := &uploadGate{hold: "*", release: make(chan struct{})}
	h := e2etest.New(t, e2etest.Options{BuiltinCRL: true, Now: clk.Now, Profiles: hygieneProfiles(), REST: gate.wrap})
	device := emulator.ProcessSpec{Serial: "5CD0001", DeviceDirectoryID: "dev-1"}
	older := h.Start(device)
	e2etest.WaitFor(t, 20*time.Second, func() bool {
		r, err := h.Store.Get(context.Background(), older)
		return err == nil && r.State == journal.StateIssued
	})
	_, id, _ := process.ParseName(older)
	gate.set(id) // from now on only the older process's upload waits
	newer, newCert := issueFor(t, h, device)
	if r, err := h.Store.Get(context.Background(), older); err != nil || r.State.Final() {
		t.Fatalf("the older process ended before the newer one: %+v, %v", r, err)
	}
	close(gate.release)
	s := h.WaitFinished([]string{older}, 30*time.Second)[older]
	oldCert := h.MustIssue(s, nil)

	if rec := waitRevocations(t, h.Store, older, 0); len(rec.Revocations) != 0 {
		t.Fatalf("the older process decided to revoke %+v", rec.Revocations)
	}
	rec := waitRevocations(t, h.Store, newer, 1)
	if rec.Revocations[0].Process != older {
		t.Fatalf("the newer process revokes %s, want %s", rec.Revocations[0].Process, older)
	}
	clk.advance(revokeGrace + time.Second)
	e2etest.WaitFor(t, 20*time.Second, func() bool { ok, _ := revoked(t, h, oldCert.SerialNumber); return ok })
	h.WaitJournalIdle(10 * time.Second)
	if got, _ := revoked(t, h, newCert.SerialNumber); got {
		t.Fatal("the newer certificate was revoked")
	}
}

// reopenable is a SQLite journal that a test closes and opens again on the same file, as a
// restarted adapter does: the leases, which live in the process, are gone; the file stays.
type reopenable struct {
	mu   sync.Mutex
	path string
	s    *sqlite.Store
}

func (r *reopenable) reopen(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.Open(context.Background(), r.path)
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
}

func (r *reopenable) cur() *sqlite.Store {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s
}

func (r *reopenable) Create(ctx context.Context, rec *journal.Record) (bool, error) {
	return r.cur().Create(ctx, rec)
}
func (r *reopenable) Get(ctx context.Context, name string) (*journal.Record, error) {
	return r.cur().Get(ctx, name)
}
func (r *reopenable) Lease(ctx context.Context, owner string, now time.Time, d time.Duration, limit int) ([]*journal.Record, error) {
	return r.cur().Lease(ctx, owner, now, d, limit)
}
func (r *reopenable) Update(ctx context.Context, owner string, rec *journal.Record, now time.Time, renew time.Duration) error {
	return r.cur().Update(ctx, owner, rec, now, renew)
}
func (r *reopenable) Renew(ctx context.Context, owner, name string, token int64, now time.Time, d time.Duration) error {
	return r.cur().Renew(ctx, owner, name, token, now, d)
}
func (r *reopenable) NextDue(ctx context.Context) (time.Time, bool, error) {
	return r.cur().NextDue(ctx)
}
func (r *reopenable) Unfinished(ctx context.Context) ([]*journal.Record, error) {
	return r.cur().Unfinished(ctx)
}
func (r *reopenable) Finished(ctx context.Context, state journal.State, limit int) ([]*journal.Record, error) {
	return r.cur().Finished(ctx, state, limit)
}
func (r *reopenable) IssuedTo(ctx context.Context, identity string) ([]*journal.Record, error) {
	return r.cur().IssuedTo(ctx, identity)
}
func (r *reopenable) Compact(ctx context.Context, before time.Time) (int, error) {
	return r.cur().Compact(ctx, before)
}
func (r *reopenable) Close() error { return r.cur().Close() }

// TestRevokeSupersededAcrossRestart: the revocation is decided, the adapter stops before the
// grace period ends and starts again on the same SQLite journal, and the revocation still
// happens once the grace period has passed. Then the worst moment: the CA revokes, and the
// journal write that says so fails, so that the adapter restarts not knowing; the certificate
// is revoked again (idempotent at the CA: its CRL lists it once) and the audit trail has one
// event per revocation.
func TestRevokeSupersededAcrossRestart(t *testing.T) {
	clk := &clock{}
	path := filepath.Join(t.TempDir(), "journal.db")
	j := &reopenable{path: path}
	var faulty *journaltest.Faulty
	h := e2etest.New(t, e2etest.Options{BuiltinCRL: true, Now: clk.Now, Profiles: hygieneProfiles(), ShutdownGracePeriod: time.Second,
		Journal: func(t testing.TB) journal.Store {
			s, err := sqlite.Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			j.s = s
			t.Cleanup(func() { _ = j.Close() })
			return j
		},
		Store: func(s journal.Store) journal.Store { faulty = journaltest.NewFaulty(s); return faulty },
	})
	device := emulator.ProcessSpec{Serial: "5CD0001", DeviceDirectoryID: "dev-1"}
	_, firstCert := issueFor(t, h, device)
	second, secondCert := issueFor(t, h, device)
	waitRevocations(t, h.Store, second, 1)

	restart := func() {
		t.Helper()
		if err := h.StopEngine(); err != nil {
			t.Fatal(err)
		}
		j.reopen(t)
		h.RestartEngine()
	}
	restart()
	clk.advance(revokeGrace + time.Second)
	e2etest.WaitFor(t, 20*time.Second, func() bool { ok, _ := revoked(t, h, firstCert.SerialNumber); return ok })
	h.WaitJournalIdle(10 * time.Second)

	// The third certificate supersedes the second; the CA's answer is not journaled.
	third, thirdCert := issueFor(t, h, device)
	rec := waitRevocations(t, h.Store, third, 1)
	if rec.Revocations[0].Process != second {
		t.Fatalf("the third process revokes %s, want %s (the first is revoked already)", rec.Revocations[0].Process, second)
	}
	faulty.FailWrites(-1, journaltest.ErrDiskFull, journaltest.OpUpdate)
	clk.advance(revokeGrace + time.Second)
	e2etest.WaitFor(t, 20*time.Second, func() bool { ok, _ := revoked(t, h, secondCert.SerialNumber); return ok })
	// The revocation was asked of the CA, and nothing of it reached the journal.
	if got, err := h.Store.Get(context.Background(), third); err != nil || got.Revocations[0].State != journal.RevocationPending {
		t.Fatalf("journal after the unjournaled revocation: %+v, %v; want it still pending", got, err)
	}
	if err := h.StopEngine(); err != nil {
		t.Fatal(err)
	}
	faulty.Heal()
	j.reopen(t)
	h.RestartEngine()
	h.WaitJournalIdle(20 * time.Second)
	got, err := h.Store.Get(context.Background(), third)
	if err != nil {
		t.Fatal(err)
	}
	if v := got.Revocations[0]; v.State != journal.RevocationRevoked {
		t.Fatalf("revocation after the restart = %+v; want revoked", v)
	}
	if n := h.Metric("certprov_ca_requests_total", "operation", "revoke", "outcome", "ok"); n != 3 {
		t.Errorf("the CA was asked to revoke %v times; want 3: the first certificate once, the second twice (the journal lost the first answer)", n)
	}
	if got, _ := revoked(t, h, thirdCert.SerialNumber); got {
		t.Fatal("the newest certificate was revoked")
	}
	perSerial := map[string]int{}
	for _, ev := range h.AuditEvents() {
		if ev.Kind == "revocation" && ev.Certificate != nil {
			perSerial[ev.Certificate.Serial]++
		}
	}
	for _, c := range []*x509.Certificate{firstCert, secondCert} {
		if n := perSerial[c.SerialNumber.Text(16)]; n != 1 {
			t.Errorf("%d audit events for the revocation of serial %s, want 1", n, c.SerialNumber.Text(16))
		}
	}
}

// countingRevoker is the built-in CA, counting the revocation requests it receives per serial.
type countingRevoker struct {
	*local.Connector
	mu      sync.Mutex
	revokes map[string]int
}

func (c *countingRevoker) Revoke(ctx context.Context, req *ca.RevokeRequest) error {
	c.mu.Lock()
	c.revokes[req.Serial.Text(16)]++
	c.mu.Unlock()
	return c.Connector.Revoke(ctx, req)
}

func (c *countingRevoker) count(serial *big.Int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.revokes[serial.Text(16)]
}

// TestRevokeSupersededReplicasPostgres: two replicas share a PostgreSQL journal; when the grace
// period ends both look for due work, and the CA receives exactly one revocation request per
// superseded serial: the record's lease hands the revocation to one of them.
func TestRevokeSupersededReplicasPostgres(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.DSN(t), "revoke")
	open := func(t testing.TB) *postgres.Store {
		s, err := postgres.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	clk := &clock{}
	var counting *countingRevoker
	h := e2etest.New(t, e2etest.Options{BuiltinCRL: true, Now: clk.Now, Profiles: hygieneProfiles(),
		Journal: func(t testing.TB) journal.Store { return open(t) },
		CAs: func(h *e2etest.Harness) map[string]ca.Connector {
			counting = &countingRevoker{Connector: h.Local, revokes: map[string]int{}}
			return map[string]ca.Connector{e2etest.BuiltinCA: counting}
		},
	})
	h.StartReplica(open(t))

	const devices = 6
	var old, renewed []*x509.Certificate
	var superseding []string
	for i := range devices {
		spec := emulator.ProcessSpec{Serial: fmt.Sprintf("5CD%04d", i), DeviceDirectoryID: fmt.Sprintf("dev-%d", i)}
		_, c := issueFor(t, h, spec)
		old = append(old, c)
		name, c2 := issueFor(t, h, spec)
		renewed, superseding = append(renewed, c2), append(superseding, name)
	}
	for _, name := range superseding {
		waitRevocations(t, h.Store, name, 1)
	}
	clk.advance(revokeGrace + time.Second)
	for _, c := range old {
		e2etest.WaitFor(t, 20*time.Second, func() bool { ok, _ := revoked(t, h, c.SerialNumber); return ok })
	}
	h.WaitJournalIdle(10 * time.Second)
	for i := range devices {
		if n := counting.count(old[i].SerialNumber); n != 1 {
			t.Errorf("device %d: the CA received %d revocation requests for the superseded serial, want 1", i, n)
		}
		if n := counting.count(renewed[i].SerialNumber); n != 0 {
			t.Errorf("device %d: the CA received %d revocation requests for the new serial, want 0", i, n)
		}
	}
}

// TestRevokeSupersededTurnedOff: a reload that turns the option off before the grace period
// ends stops the revocation it decided: the old certificate stays off the CRL, and the journal
// and the audit trail record why.
func TestRevokeSupersededTurnedOff(t *testing.T) {
	clk := &clock{}
	h := e2etest.New(t, e2etest.Options{BuiltinCRL: true, Now: clk.Now, Profiles: hygieneProfiles()})
	device := emulator.ProcessSpec{Serial: "5CD0001", DeviceDirectoryID: "dev-1"}
	_, oldCert := issueFor(t, h, device)
	second, _ := issueFor(t, h, device)
	waitRevocations(t, h.Store, second, 1)

	tmpl, err := csr.Compile(e2etest.Profile("{{.Device.SerialNumber}}", "", 30*time.Second).Spec())
	if err != nil {
		t.Fatal(err)
	}
	<-h.Engine().Reconfigure(map[string]*engine.Profile{"device": {Template: tmpl, Validity: 24 * time.Hour, SignDeadline: 30 * time.Second}},
		map[string]*engine.CAConnection{e2etest.BuiltinCA: {Connector: h.Local, Timeout: 10 * time.Second}})
	clk.advance(revokeGrace + time.Second)
	h.WaitJournalIdle(20 * time.Second)
	if got, _ := revoked(t, h, oldCert.SerialNumber); got {
		t.Fatal("the old certificate was revoked after the option was turned off")
	}
	rec, err := h.Store.Get(context.Background(), second)
	if err != nil {
		t.Fatal(err)
	}
	if v := rec.Revocations[0]; v.State != journal.RevocationFailed || !strings.Contains(v.LastError, "profiles.device no longer revokes") {
		t.Fatalf("revocation after the option was turned off = %+v", v)
	}
	var outcomes []string
	for _, ev := range h.AuditEvents() {
		if ev.Kind == "revocation" {
			outcomes = append(outcomes, ev.Outcome+": "+ev.Failure)
		}
	}
	if len(outcomes) != 1 || !strings.HasPrefix(outcomes[0], "failed: not revoked") {
		t.Errorf("revocation audit events %q, want one failed", outcomes)
	}
}

// flakyRevoker is the built-in CA whose revocations fail: the first failures of them with a
// retryable error, and every one of the serials in refuse with a permanent one.
type flakyRevoker struct {
	*local.Connector
	mu       sync.Mutex
	failures int
	refuse   map[string]bool
	calls    map[string]int
}

func (f *flakyRevoker) Revoke(ctx context.Context, req *ca.RevokeRequest) error {
	f.mu.Lock()
	serial := req.Serial.Text(16)
	f.calls[serial]++
	refuse, fail := f.refuse[serial], f.failures > 0
	if fail && !refuse {
		f.failures--
	}
	f.mu.Unlock()
	switch {
	case refuse:
		return ca.Permanentf("the CA refuses to revoke %s", serial)
	case fail:
		return ca.Retryable(errors.New("CA unavailable"), 0)
	}
	return f.Connector.Revoke(ctx, req)
}

// TestRevokeSupersededRetriesAndFailures: a revocation the CA answers with retryable errors is
// tried again with backoff until it lands; one the CA refuses is recorded as failed, audited,
// counted and never asked again.
func TestRevokeSupersededRetriesAndFailures(t *testing.T) {
	clk := &clock{}
	var flaky *flakyRevoker
	h := e2etest.New(t, e2etest.Options{BuiltinCRL: true, Now: clk.Now, Profiles: hygieneProfiles(),
		CAs: func(h *e2etest.Harness) map[string]ca.Connector {
			flaky = &flakyRevoker{Connector: h.Local, refuse: map[string]bool{}, calls: map[string]int{}}
			return map[string]ca.Connector{e2etest.BuiltinCA: flaky}
		},
	})
	flakyDevice := emulator.ProcessSpec{Serial: "5CD0001", DeviceDirectoryID: "dev-1"}
	refusedDevice := emulator.ProcessSpec{Serial: "5CD0002", DeviceDirectoryID: "dev-2"}
	_, retried := issueFor(t, h, flakyDevice)
	_, refused := issueFor(t, h, refusedDevice)
	second, _ := issueFor(t, h, flakyDevice)
	secondRefused, _ := issueFor(t, h, refusedDevice)
	waitRevocations(t, h.Store, second, 1)
	waitRevocations(t, h.Store, secondRefused, 1)
	flaky.mu.Lock()
	flaky.failures, flaky.refuse[refused.SerialNumber.Text(16)] = 3, true
	flaky.mu.Unlock()

	clk.advance(revokeGrace + time.Second)
	e2etest.WaitFor(t, 30*time.Second, func() bool { ok, _ := revoked(t, h, retried.SerialNumber); return ok })
	h.WaitJournalIdle(20 * time.Second)
	if got, _ := revoked(t, h, refused.SerialNumber); got {
		t.Fatal("the serial the CA refused is on the CRL")
	}
	rec, err := h.Store.Get(context.Background(), secondRefused)
	if err != nil {
		t.Fatal(err)
	}
	if v := rec.Revocations[0]; v.State != journal.RevocationFailed || !strings.Contains(v.LastError, "the CA refuses") {
		t.Errorf("refused revocation = %+v; want failed with the CA's reason", v)
	}
	flaky.mu.Lock()
	retriedCalls, refusedCalls := flaky.calls[retried.SerialNumber.Text(16)], flaky.calls[refused.SerialNumber.Text(16)]
	flaky.mu.Unlock()
	if refusedCalls != 1 {
		t.Errorf("the CA was asked %d times to revoke the serial it refuses, want 1", refusedCalls)
	}
	retries := h.Metric("certprov_revocations_total", "result", "retry")
	if retriedCalls < 2 || retries != float64(retriedCalls-1) {
		t.Errorf("the retried serial: %d calls, %v counted retries; want every call but the last counted as a retry", retriedCalls, retries)
	}
	if n := h.Metric("certprov_revocations_total", "result", "failed"); n != 1 {
		t.Errorf("certprov_revocations_total{result=failed} = %v, want 1", n)
	}
	outcomes := map[string]string{}
	for _, ev := range h.AuditEvents() {
		if ev.Kind == "revocation" && ev.Certificate != nil {
			outcomes[ev.Certificate.Serial] += ev.Outcome
		}
	}
	if outcomes[retried.SerialNumber.Text(16)] != "revoked" || outcomes[refused.SerialNumber.Text(16)] != "failed" {
		t.Errorf("revocation audit outcomes %v", outcomes)
	}
}
