// Package journaltest is the conformance suite every journal.Store must pass.
//
// A backend's test calls Run with a constructor that returns a new, empty store, isolated from
// every other store the constructor returned (its own file, table or schema), and registers its
// own cleanup with t.Cleanup:
//
//	func TestConformance(t *testing.T) {
//		journaltest.Run(t, func(t *testing.T) journal.Store { … })
//	}
//
// A shared backend also passes Replicas, so the concurrency test leases through several Store
// values on one backend, as replicas do.
//
// The suite pins down what the engine relies on: records round-trip exactly (times to the
// nanosecond, compared with time.Time.Equal, since a store need not keep a time's Location),
// leases are exclusive until they expire, a record is never held by two owners at once, every
// write is fenced by the lease's token (a holder whose lease expired or was granted again, even
// to the same owner, writes nothing), and a closed store fails instead of panicking. It uses the clock values it passes in, never the wall
// clock, so a store must do the same.
package journaltest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Option adjusts the suite.
type Option func(*suite)

// Replicas makes the concurrency test use n Store values opened on one backend (as n replicas
// sharing a database would), instead of one Store used by many goroutines. open must return n
// stores on a new, empty backend that no other call shares.
func Replicas(open func(t *testing.T, n int) []journal.Store) Option {
	return func(s *suite) { s.replicas = open }
}

// Skip skips the named top-level subtest, reporting why: for a store with a known, reported gap,
// so the rest of the suite still guards it. Remove it with the gap.
func Skip(subtest, reason string) Option {
	return func(s *suite) { s.skip[subtest] = reason }
}

type suite struct {
	open     func(t *testing.T) journal.Store
	replicas func(t *testing.T, n int) []journal.Store
	skip     map[string]string
}

// T0 is the instant the suite's clock starts from. It carries nanoseconds and a non-UTC
// location, so a store that truncates times or compares them by their wall-clock fields fails.
var T0 = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*60*60))

// Run runs the conformance suite against stores made by open.
func Run(t *testing.T, open func(t *testing.T) journal.Store, opts ...Option) {
	s := &suite{open: open, skip: map[string]string{}}
	for _, o := range opts {
		o(s)
	}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"RoundTrip", s.roundTrip},
		{"Copies", s.copies},
		{"CopiesNested", s.copiesNested},
		{"CreateTwice", s.createTwice},
		{"GetUnknown", s.getUnknown},
		{"LeaseSelection", s.leaseSelection},
		{"LeaseLimit", s.leaseLimit},
		{"LeaseTakeover", s.leaseTakeover},
		{"LeaseSkipsHeld", s.leaseSkipsHeld},
		{"LeaseTokens", s.leaseTokens},
		{"StaleTokenRefused", s.staleTokenRefused},
		{"RenewAndRelease", s.renewAndRelease},
		{"Renew", s.renew},
		{"UpdateOwnership", s.updateOwnership},
		{"ConcurrentHolders", s.concurrentHolders},
		{"FencedAtOnce", s.fencedAtOnce},
		{"UpdateWrites", s.updateWrites},
		{"NextDue", s.nextDue},
		{"Unfinished", s.unfinished},
		{"Compact", s.compact},
		{"PingAndCount", s.pingAndCount},
		{"Finished", s.finished},
		{"AuditPending", s.auditPending},
		{"IssuedTo", s.issuedTo},
		{"RevocationPending", s.revocationPending},
		{"Concurrency", s.concurrency},
		{"Closed", s.closed},
	}
	known := map[string]bool{}
	for _, tt := range tests {
		known[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			if reason, ok := s.skip[tt.name]; ok {
				t.Skip(reason)
			}
			tt.run(t)
		})
	}
	for name := range s.skip {
		if !known[name] {
			t.Errorf("journaltest.Skip(%q): no such subtest", name)
		}
	}
}

const lease = 5 * time.Minute

// NewRecord returns an unfinished record named name, due at due, with no optional field set.
func NewRecord(name string, due time.Time) *journal.Record {
	return &journal.Record{
		Name: name, State: journal.StateClaimed,
		StepStarted: due, NextDue: due, Created: due, Updated: due,
	}
}

// FullRecord returns a record with every field set, nested ones included, with byte slices
// that are not valid UTF-8 and strings that need escaping.
func FullRecord(name string) *journal.Record {
	r := &journal.Record{
		Name: name,
		Process: &process.Process{
			Name: name, Customer: "C0abc", ID: "p-1", ProfileID: "wifi",
			StartTime:          T0.Add(-time.Hour),
			SPKI:               []byte{0x30, 0x82, 0x00, 0xff, 0xfe, 0x00},
			Device:             &process.Device{SerialNumber: "5CD1234", DirectoryID: "dev-dir"},
			User:               &process.User{Email: "ada@example.com", DirectoryID: "user-dir"},
			CAConnectionKind:   process.CAConnectionSCEP,
			CAConnectionRef:    "ca-ref",
			ProfileRef:         "profile-ref",
			SCEPProfile:        &process.SCEPProfile{CommonName: "ada", OrganizationalUnits: []string{"a", "b"}, SANs: []process.SAN{{Type: process.SANDNS, Value: "x.example"}}, KeyUsages: []string{process.KeyUsageSigning}},
			SignData:           []byte{1, 2, 3},
			SignatureAlgorithm: process.AlgorithmECDSASHA256,
			Signature:          []byte{4, 5, 6},
			IssuedCertificate:  "-----BEGIN CERTIFICATE-----\n…\n",
			FailureMessage:     "",
		},
		State:          journal.StateIssued,
		ProfileName:    "wifi",
		CAName:         "local",
		SignData:       []byte{0x30, 0x00, 0xff, 0x80, 0x00},
		Algorithm:      process.AlgorithmRSAPKCS1SHA256,
		Operation:      "operations/op-1",
		Signature:      []byte{0xde, 0xad, 0xbe, 0xef},
		CSR:            []byte{0x30, 0x01, 0x02},
		CATicket:       "ticket-7",
		CertificatePEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
		IssuedAt:       T0.Add(-time.Minute + time.Nanosecond),
		FailureMessage: "",
		Attempts:       3,
		StepStarted:    T0.Add(-time.Minute),
		NextDue:        T0.Add(time.Nanosecond),
		SignDeadline:   T0.Add(10 * time.Minute).In(time.UTC),
		LastError:      "quote \" backslash \\ nul \x00 tab \t newline \n emoji 🔐 <html>&amp;",
		Created:        T0.Add(-2 * time.Hour),
		Updated:        T0,

		SupersedePending: true,
		Revocations: []journal.Revocation{
			{Process: name + "-before", CAName: "local", Serial: "7f3a", CertificatePEM: "-----BEGIN CERTIFICATE-----\nMIIA\n-----END CERTIFICATE-----\n",
				Reason: "superseded", Due: T0.Add(24*time.Hour + time.Nanosecond), NextDue: T0.Add(25 * time.Hour), State: journal.RevocationPending,
				Attempts: 2, LastError: "ca \"down\""},
			{Process: name + "-long-before", CAName: "local", Serial: "01", Reason: "superseded", Due: T0, NextDue: T0,
				State: journal.RevocationRevoked, At: T0.Add(time.Second), AuditPending: true},
		},
	}
	r.Log(T0.Add(-2*time.Hour), "claimed")
	r.Log(T0.Add(-time.Minute+time.Microsecond+time.Nanosecond), "issued by \"local\"")
	return r
}

func (s *suite) roundTrip(t *testing.T) {
	final := NewRecord("customers/C0abc/certificateProvisioningProcesses/final", T0)
	final.State, final.NextDue, final.FinishedAt = journal.StateUploaded, time.Time{}, T0.Add(time.Second)
	tests := []struct {
		name string
		rec  *journal.Record
	}{
		{"full", FullRecord("customers/C0abc/certificateProvisioningProcesses/full")},
		{"minimal", NewRecord("customers/C0abc/certificateProvisioningProcesses/minimal", T0)},
		{"zero times", &journal.Record{Name: "zero", State: journal.StateClaimed}},
		{"final", final},
		{"unusual name", NewRecord("name with spaces, 'quotes', \"double\", ü and %_", T0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := s.open(t)
			ctx := context.Background()
			want := tt.rec.Clone()
			created, err := st.Create(ctx, tt.rec)
			if err != nil || !created {
				t.Fatalf("Create = %v, %v; want true, nil", created, err)
			}
			got, err := st.Get(ctx, tt.rec.Name)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			AssertEqual(t, got, want)
		})
	}
}

// copies: records passed in and returned are the caller's, not the store's.
func (s *suite) copies(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	in := FullRecord("copies")
	want := in.Clone()
	mustCreate(t, st, in)
	scribble(in)

	got := mustGet(t, st, "copies")
	AssertEqual(t, got, want)
	scribble(got)
	AssertEqual(t, mustGet(t, st, "copies"), want)

	leased, err := st.Lease(ctx, "w1", T0.Add(time.Hour), lease, 1)
	if err != nil || len(leased) != 1 {
		t.Fatalf("Lease = %d records, %v; want 1", len(leased), err)
	}
	scribble(leased[0])
	AssertEqual(t, mustGet(t, st, "copies"), want)

	upd := want.Clone()
	upd.Attempts = 4
	upd.LeaseToken = leased[0].LeaseToken
	if err := st.Update(ctx, "w1", upd, T0.Add(time.Hour), 0); err != nil {
		t.Fatalf("Update: %v", err)
	}
	wantUpd := upd.Clone()
	scribble(upd)
	AssertEqual(t, mustGet(t, st, "copies"), wantUpd)
}

// copiesNested: the Process inside a record is copied too, not shared with the store.
func (s *suite) copiesNested(t *testing.T) {
	st := s.open(t)
	in := FullRecord("nested")
	want := in.Clone()
	want.Process = FullRecord("nested").Process // Clone may share Process's insides
	mustCreate(t, st, in)
	scribbleProcess(in.Process)
	AssertEqual(t, mustGet(t, st, "nested"), want)
	scribbleProcess(mustGet(t, st, "nested").Process)
	AssertEqual(t, mustGet(t, st, "nested"), want)
}

func scribbleProcess(p *process.Process) {
	for _, b := range [][]byte{p.SPKI, p.SignData, p.Signature} {
		for i := range b {
			b[i] = 'X'
		}
	}
	p.Device.SerialNumber = "scribbled"
	p.User.Email = "scribbled"
	p.SCEPProfile.CommonName = "scribbled"
	p.SCEPProfile.OrganizationalUnits[0] = "scribbled"
	p.SCEPProfile.SANs[0].Value = "scribbled"
	p.SCEPProfile.KeyUsages[0] = "scribbled"
}

// scribble changes a record in place: the fields Record.Clone copies deeply, and scalars.
func scribble(r *journal.Record) {
	r.State = journal.StateFailing
	r.Attempts = 99
	r.NextDue = r.NextDue.Add(time.Hour)
	for _, b := range [][]byte{r.SignData, r.Signature, r.CSR} {
		for i := range b {
			b[i] = 'X'
		}
	}
	for i := range r.History {
		r.History[i].Note = "scribbled"
	}
}

func (s *suite) createTwice(t *testing.T) {
	st := s.open(t)
	first := NewRecord("twice", T0)
	first.ProfileName = "first"
	mustCreate(t, st, first)
	second := NewRecord("twice", T0.Add(-time.Hour))
	second.ProfileName = "second"
	created, err := st.Create(context.Background(), second)
	if err != nil || created {
		t.Fatalf("second Create = %v, %v; want false, nil", created, err)
	}
	AssertEqual(t, mustGet(t, st, "twice"), first)
}

func (s *suite) getUnknown(t *testing.T) {
	st := s.open(t)
	mustCreate(t, st, NewRecord("known", T0))
	if _, err := st.Get(context.Background(), "unknown"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Get(unknown) error = %v, want ErrNotFound", err)
	}
}

func (s *suite) leaseSelection(t *testing.T) {
	st := s.open(t)
	recs := map[string]*journal.Record{
		"due-3":  NewRecord("due-3", T0.Add(-3*time.Minute)),
		"due-1":  NewRecord("due-1", T0.Add(-time.Minute)),
		"due-0":  NewRecord("due-0", T0), // due exactly now
		"due-2":  NewRecord("due-2", T0.Add(-2*time.Minute)),
		"future": NewRecord("future", T0.Add(time.Nanosecond)),
		"final":  NewRecord("final", T0.Add(-time.Hour)),
		"held":   NewRecord("held", T0.Add(-2*time.Hour)),
	}
	recs["final"].State, recs["final"].FinishedAt = journal.StateFailed, T0
	for _, name := range slices.Sorted(maps.Keys(recs)) {
		mustCreate(t, st, recs[name])
	}
	// "held" is the oldest due: it is the only one a lease at T0-1h can take, and its lease
	// outlasts T0.
	held := mustLease(t, st, "other", T0.Add(-time.Hour), 2*time.Hour, 10)
	assertNames(t, "Lease at T0-1h", held, "held")

	got := mustLease(t, st, "w1", T0, lease, 10)
	assertNames(t, "Lease at T0", got, "due-3", "due-2", "due-1", "due-0")
	for _, r := range got {
		AssertEqual(t, r, recs[r.Name])
	}
	assertNames(t, "Lease again at T0", mustLease(t, st, "w2", T0, lease, 10))
}

func (s *suite) leaseLimit(t *testing.T) {
	st := s.open(t)
	for i := range 5 {
		mustCreate(t, st, NewRecord(fmt.Sprintf("r%d", i), T0.Add(-time.Duration(i)*time.Second)))
	}
	assertNames(t, "Lease limit 0", mustLease(t, st, "w1", T0, lease, 0))
	assertNames(t, "Lease limit 2", mustLease(t, st, "w1", T0, lease, 2), "r4", "r3")
	assertNames(t, "Lease limit 1", mustLease(t, st, "w2", T0, lease, 1), "r2")
	assertNames(t, "Lease limit 10", mustLease(t, st, "w3", T0, lease, 10), "r1", "r0")
}

// leaseTakeover: a replica that dies leaves a lease that expires; another owner takes the record
// over, and the first owner's late write is refused.
func (s *suite) leaseTakeover(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	mustCreate(t, st, NewRecord("r", T0))
	a := mustLease(t, st, "dead", T0, lease, 1)
	assertNames(t, "dead's Lease", a, "r")

	assertNames(t, "Lease before expiry", mustLease(t, st, "live", T0.Add(lease-time.Nanosecond), lease, 1))
	b := mustLease(t, st, "live", T0.Add(lease), lease, 1)
	assertNames(t, "Lease at expiry", b, "r")

	late := a[0].Clone()
	late.LastError = "late write"
	if err := st.Update(ctx, "dead", late, T0.Add(lease), lease); !errors.Is(err, journal.ErrLeaseLost) {
		t.Fatalf("Update by the expired owner: error = %v, want ErrLeaseLost", err)
	}
	if got := mustGet(t, st, "r"); got.LastError != "" {
		t.Fatalf("the refused Update was written: LastError = %q", got.LastError)
	}
	live := b[0].Clone()
	live.Attempts = 1
	if err := st.Update(ctx, "live", live, T0.Add(lease), 0); err != nil {
		t.Fatalf("Update by the new owner: %v", err)
	}
	AssertEqual(t, mustGet(t, st, "r"), live)
}

func (s *suite) renewAndRelease(t *testing.T) {
	ctx := context.Background()
	t.Run("renew", func(t *testing.T) {
		st := s.open(t)
		mustCreate(t, st, NewRecord("r", T0))
		got := mustLease(t, st, "w1", T0, lease, 1)
		assertNames(t, "Lease", got, "r")
		// Renewed at T0+lease/2 until T0+lease/2+2*lease.
		renewedAt, renewFor := T0.Add(lease/2), 2*lease
		if err := st.Update(ctx, "w1", got[0], renewedAt, renewFor); err != nil {
			t.Fatalf("Update with renew: %v", err)
		}
		assertNames(t, "Lease at the first expiry", mustLease(t, st, "w2", T0.Add(lease), lease, 1))
		assertNames(t, "Lease just before the renewed expiry", mustLease(t, st, "w2", renewedAt.Add(renewFor-time.Nanosecond), lease, 1))
		if err := st.Update(ctx, "w1", got[0], renewedAt.Add(renewFor-time.Nanosecond), lease); err != nil {
			t.Fatalf("second renew: %v", err)
		}
		assertNames(t, "Lease after the second renew", mustLease(t, st, "w2", renewedAt.Add(renewFor), lease, 1))
	})
	t.Run("release", func(t *testing.T) {
		st := s.open(t)
		mustCreate(t, st, NewRecord("r", T0))
		got := mustLease(t, st, "w1", T0, lease, 1)
		assertNames(t, "Lease", got, "r")
		if err := st.Update(ctx, "w1", got[0], T0, 0); err != nil {
			t.Fatalf("Update with release: %v", err)
		}
		assertNames(t, "Lease right after release", mustLease(t, st, "w2", T0, lease, 1), "r")
		if err := st.Update(ctx, "w1", got[0], T0, 0); !errors.Is(err, journal.ErrLeaseLost) {
			t.Fatalf("Update by the releasing owner after another leased: error = %v, want ErrLeaseLost", err)
		}
	})
}

func (s *suite) updateOwnership(t *testing.T) {
	ctx := context.Background()
	// Each setup returns the lease token w1's Update presents.
	created := func(t *testing.T, st journal.Store) int64 { mustCreate(t, st, NewRecord("r", T0)); return 0 }
	leased := func(owner string) func(t *testing.T, st journal.Store) int64 {
		return func(t *testing.T, st journal.Store) int64 {
			created(t, st)
			got := mustLease(t, st, owner, T0, lease, 1)
			assertNames(t, "Lease", got, "r")
			return got[0].LeaseToken
		}
	}
	tests := []struct {
		name   string
		setup  func(t *testing.T, st journal.Store) int64
		record string // the record to update
		now    time.Time
		want   error
	}{
		{"unknown record", created, "missing", T0, journal.ErrNotFound},
		{"never leased", created, "r", T0, journal.ErrLeaseLost},
		{"leased by another", leased("w2"), "r", T0, journal.ErrLeaseLost},
		{"released", func(t *testing.T, st journal.Store) int64 {
			token := leased("w1")(t, st)
			rel := NewRecord("r", T0)
			rel.LeaseToken = token
			if err := st.Update(ctx, "w1", rel, T0, 0); err != nil {
				t.Fatalf("release: %v", err)
			}
			return token
		}, "r", T0, journal.ErrLeaseLost},
		{"held", leased("w1"), "r", T0.Add(lease / 2), nil},
		{"held, no token", func(t *testing.T, st journal.Store) int64 { leased("w1")(t, st); return 0 }, "r", T0, journal.ErrLeaseLost},
		{"held, wrong token", func(t *testing.T, st journal.Store) int64 { return leased("w1")(t, st) + 1 }, "r", T0, journal.ErrLeaseLost},
		{"at expiry", leased("w1"), "r", T0.Add(lease), journal.ErrLeaseLost},
		// Expiry revokes: a holder that stalled past its lease must not write, whether or not
		// another owner took the record yet (it may be about to).
		{"expired, not taken over", leased("w1"), "r", T0.Add(2 * lease), journal.ErrLeaseLost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := s.open(t)
			token := tt.setup(t, st)
			rec := NewRecord(tt.record, T0)
			rec.Attempts = 7
			rec.LeaseToken = token
			err := st.Update(ctx, "w1", rec, tt.now, lease)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Update error = %v, want %v", err, tt.want)
			}
			if tt.want == nil {
				AssertEqual(t, mustGet(t, st, tt.record), rec)
			} else if got, err := st.Get(ctx, tt.record); err == nil && got.Attempts == 7 {
				t.Fatal("a refused Update was written")
			}
		})
	}
}

// leaseSkipsHeld: Lease never hands out a record under an unexpired lease, not even to the
// owner that holds it (a worker re-leasing its own record would run its step twice at once).
func (s *suite) leaseSkipsHeld(t *testing.T) {
	st := s.open(t)
	mustCreate(t, st, NewRecord("r", T0))
	first := mustLease(t, st, "w1", T0, lease, 1)
	assertNames(t, "Lease", first, "r")
	assertNames(t, "the holder's Lease while held", mustLease(t, st, "w1", T0.Add(lease-time.Nanosecond), lease, 1))
	assertNames(t, "another owner's Lease while held", mustLease(t, st, "w2", T0.Add(lease/2), lease, 1))
	again := mustLease(t, st, "w1", T0.Add(lease), lease, 1)
	assertNames(t, "the holder's Lease at expiry", again, "r")
	if again[0].LeaseToken == first[0].LeaseToken {
		t.Fatalf("a new grant kept the token %d of the expired one", first[0].LeaseToken)
	}
}

// leaseTokens: every grant carries a token no earlier grant of the record had, growing, whether
// the previous lease was released or expired; copies not handed out by Lease carry none.
func (s *suite) leaseTokens(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	mustCreate(t, st, NewRecord("r", T0))
	if got := mustGet(t, st, "r"); got.LeaseToken != 0 {
		t.Fatalf("Get after Create: LeaseToken %d, want 0", got.LeaseToken)
	}
	var last int64
	now := T0
	for i := range 4 {
		owner := fmt.Sprintf("w%d", i%2)
		got := mustLease(t, st, owner, now, lease, 1)
		assertNames(t, fmt.Sprintf("grant %d", i), got, "r")
		if got[0].LeaseToken <= last {
			t.Fatalf("grant %d: token %d after %d, want it to grow", i, got[0].LeaseToken, last)
		}
		last = got[0].LeaseToken
		if i%2 == 0 { // released, then granted again
			if err := st.Update(ctx, owner, got[0], now, 0); err != nil {
				t.Fatalf("release: %v", err)
			}
		} else { // expired, then granted again
			now = now.Add(lease)
		}
	}
	if got := mustGet(t, st, "r"); got.LeaseToken != 0 {
		t.Fatalf("Get of a leased record: LeaseToken %d, want 0", got.LeaseToken)
	}
	unfinished, err := st.Unfinished(ctx)
	if err != nil || len(unfinished) != 1 || unfinished[0].LeaseToken != 0 {
		t.Fatalf("Unfinished = %v, %v; want r without a LeaseToken", unfinished, err)
	}
}

// staleTokenRefused: a holder whose lease expired and was granted again, to the same owner,
// writes nothing and renews nothing: the token, not the owner's name, says who holds it.
func (s *suite) staleTokenRefused(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	mustCreate(t, st, NewRecord("r", T0))
	stale := mustLease(t, st, "w1", T0, lease, 1)
	assertNames(t, "first Lease", stale, "r")
	fresh := mustLease(t, st, "w1", T0.Add(lease), lease, 1)
	assertNames(t, "Lease at expiry, same owner", fresh, "r")

	now := T0.Add(lease + time.Second)
	late := stale[0].Clone()
	late.LastError = "stale write"
	if err := st.Update(ctx, "w1", late, now, lease); !errors.Is(err, journal.ErrLeaseLost) {
		t.Fatalf("Update with the stale token: error = %v, want ErrLeaseLost", err)
	}
	if err := st.Update(ctx, "w1", late, now, 0); !errors.Is(err, journal.ErrLeaseLost) {
		t.Fatalf("release with the stale token: error = %v, want ErrLeaseLost", err)
	}
	if err := st.Renew(ctx, "w1", "r", stale[0].LeaseToken, now, lease); !errors.Is(err, journal.ErrLeaseLost) {
		t.Fatalf("Renew with the stale token: error = %v, want ErrLeaseLost", err)
	}
	if got := mustGet(t, st, "r"); got.LastError != "" {
		t.Fatalf("the stale holder's write landed: LastError = %q", got.LastError)
	}
	// The refused calls changed nothing: the fresh grant still holds, until its own expiry.
	assertNames(t, "Lease while the fresh grant holds", mustLease(t, st, "w2", T0.Add(2*lease-time.Nanosecond), lease, 1))
	cur := fresh[0].Clone()
	cur.LastError = "fresh write"
	if err := st.Update(ctx, "w1", cur, now, lease); err != nil {
		t.Fatalf("Update with the fresh token: %v", err)
	}
	AssertEqual(t, mustGet(t, st, "r"), cur)
}

// renew: Renew extends a held lease without writing the record, and is fenced like Update.
func (s *suite) renew(t *testing.T) {
	ctx := context.Background()
	full := FullRecord("r")
	full.NextDue = T0
	setup := func(t *testing.T) (journal.Store, *journal.Record) {
		st := s.open(t)
		mustCreate(t, st, full.Clone())
		got := mustLease(t, st, "w1", T0, lease, 1)
		assertNames(t, "Lease", got, "r")
		return st, got[0]
	}
	t.Run("extends", func(t *testing.T) {
		st, held := setup(t)
		at := T0.Add(lease / 2)
		if err := st.Renew(ctx, "w1", "r", held.LeaseToken, at, lease); err != nil {
			t.Fatalf("Renew: %v", err)
		}
		assertNames(t, "Lease at the first expiry", mustLease(t, st, "w2", T0.Add(lease), lease, 1))
		assertNames(t, "Lease just before the renewed expiry", mustLease(t, st, "w2", at.Add(lease-time.Nanosecond), lease, 1))
		// Renewing again from within the renewed lease keeps it going; Update works under it.
		if err := st.Renew(ctx, "w1", "r", held.LeaseToken, at.Add(lease-time.Nanosecond), lease); err != nil {
			t.Fatalf("second Renew: %v", err)
		}
		AssertEqual(t, mustGet(t, st, "r"), full) // Renew writes no record
		upd := held.Clone()
		upd.Attempts = 11
		if err := st.Update(ctx, "w1", upd, at.Add(lease), 0); err != nil {
			t.Fatalf("Update after Renew: %v", err)
		}
		AssertEqual(t, mustGet(t, st, "r"), upd)
	})
	t.Run("after expiry", func(t *testing.T) {
		st, held := setup(t)
		if err := st.Renew(ctx, "w1", "r", held.LeaseToken, T0.Add(lease), lease); !errors.Is(err, journal.ErrLeaseLost) {
			t.Fatalf("Renew at expiry, not taken over: error = %v, want ErrLeaseLost", err)
		}
		assertNames(t, "Lease after the refused Renew", mustLease(t, st, "w2", T0.Add(lease), lease, 1), "r")
	})
	t.Run("refused", func(t *testing.T) {
		st, held := setup(t)
		mustCreate(t, st, NewRecord("q", T0.Add(time.Hour)))
		tests := []struct {
			name, owner, record string
			token               int64
			want                error
		}{
			{"unknown record", "w1", "missing", held.LeaseToken, journal.ErrNotFound},
			{"another owner", "w2", "r", held.LeaseToken, journal.ErrLeaseLost},
			{"wrong token", "w1", "r", held.LeaseToken + 1, journal.ErrLeaseLost},
			{"no token", "w1", "r", 0, journal.ErrLeaseLost},
			{"never leased", "w1", "q", held.LeaseToken, journal.ErrLeaseLost},
		}
		for _, tt := range tests {
			if err := st.Renew(ctx, tt.owner, tt.record, tt.token, T0.Add(time.Second), lease); !errors.Is(err, tt.want) {
				t.Errorf("%s: Renew error = %v, want %v", tt.name, err, tt.want)
			}
		}
		if err := st.Renew(ctx, "w1", "r", held.LeaseToken, T0.Add(time.Second), 0); err == nil {
			t.Error("Renew for 0 succeeded; it must refuse a duration that extends nothing")
		}
		// None of those touched the lease: it ends when it did.
		assertNames(t, "Lease before expiry", mustLease(t, st, "w2", T0.Add(lease-time.Nanosecond), lease, 1))
		assertNames(t, "Lease at expiry", mustLease(t, st, "w2", T0.Add(lease), lease, 1), "r")
	})
	t.Run("after release", func(t *testing.T) {
		st, held := setup(t)
		if err := st.Update(ctx, "w1", held, T0, 0); err != nil {
			t.Fatalf("release: %v", err)
		}
		if err := st.Renew(ctx, "w1", "r", held.LeaseToken, T0, lease); !errors.Is(err, journal.ErrLeaseLost) {
			t.Fatalf("Renew after release: error = %v, want ErrLeaseLost", err)
		}
		assertNames(t, "Lease after the refused Renew", mustLease(t, st, "w2", T0, lease, 1), "r")
	})
}

// concurrentHolders: of several holders that each got the record in turn (the same owner name
// every time, as one engine re-leasing its own record would) and now write at once, only the
// latest grant's write lands; every other one is refused and leaves no trace.
func (s *suite) concurrentHolders(t *testing.T) {
	const holders = 6
	var stores []journal.Store
	if s.replicas != nil {
		stores = s.replicas(t, 2)
	} else {
		stores = []journal.Store{s.open(t)}
	}
	ctx := context.Background()
	mustCreate(t, stores[0], NewRecord("r", T0))
	grants := make([]*journal.Record, holders)
	for i := range grants {
		got := mustLease(t, stores[i%len(stores)], "w1", T0.Add(time.Duration(i)*lease), lease, 1)
		assertNames(t, fmt.Sprintf("grant %d", i), got, "r")
		grants[i] = got[0]
	}
	now := T0.Add(time.Duration(holders-1)*lease + lease/2) // inside the last grant only
	errs := make([]error, holders)
	renewErrs := make([]error, holders)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, g := range grants {
		st := stores[i%len(stores)]
		wg.Go(func() {
			<-start
			rec := g.Clone()
			rec.LastError = fmt.Sprintf("written by grant %d", i)
			rec.Attempts = i
			renewErrs[i] = st.Renew(ctx, "w1", "r", g.LeaseToken, now, lease)
			errs[i] = st.Update(ctx, "w1", rec, now, lease)
		})
	}
	close(start)
	wg.Wait()
	for i := range grants {
		want := error(journal.ErrLeaseLost)
		if i == holders-1 {
			want = nil
		}
		if !errors.Is(errs[i], want) || (want == nil) != (errs[i] == nil) {
			t.Errorf("grant %d: Update error = %v, want %v", i, errs[i], want)
		}
		if !errors.Is(renewErrs[i], want) || (want == nil) != (renewErrs[i] == nil) {
			t.Errorf("grant %d: Renew error = %v, want %v", i, renewErrs[i], want)
		}
	}
	if got := mustGet(t, stores[0], "r"); got.Attempts != holders-1 || got.LastError != fmt.Sprintf("written by grant %d", holders-1) {
		t.Fatalf("stored record written by %q (attempts %d), want only the latest grant's write", got.LastError, got.Attempts)
	}
}

// fencedAtOnce: holders of many records write at once, each record by its latest grant and by
// a stale one, as the writes that one commit gathers may be: each write is fenced on its own,
// so exactly the latest grants' writes land, and the stale ones are refused without a trace.
func (s *suite) fencedAtOnce(t *testing.T) {
	const records = 40
	var stores []journal.Store
	if s.replicas != nil {
		stores = s.replicas(t, 2)
	} else {
		stores = []journal.Store{s.open(t)}
	}
	ctx := context.Background()
	for i := range records {
		mustCreate(t, stores[0], NewRecord(fmt.Sprintf("r%02d", i), T0))
	}
	stale := mustLease(t, stores[0], "w1", T0, lease, records)
	fresh := mustLease(t, stores[len(stores)-1], "w1", T0.Add(lease), lease, records)
	if len(stale) != records || len(fresh) != records {
		t.Fatalf("Lease = %d then %d records, want %d each", len(stale), len(fresh), records)
	}
	now := T0.Add(lease + lease/2)
	type write struct {
		rec   *journal.Record
		store journal.Store
		err   error
	}
	var writes []*write
	for i := range records {
		for j, g := range []*journal.Record{stale[i], fresh[i]} {
			rec := g.Clone()
			rec.LastError = []string{"stale", "fresh"}[j]
			writes = append(writes, &write{rec: rec, store: stores[(i+j)%len(stores)]})
		}
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range writes {
		wg.Go(func() {
			<-start
			w.err = w.store.Update(ctx, "w1", w.rec, now, lease)
		})
	}
	close(start)
	wg.Wait()
	for _, w := range writes {
		if want := w.rec.LastError == "fresh"; want != (w.err == nil) || (!want && !errors.Is(w.err, journal.ErrLeaseLost)) {
			t.Errorf("%s, %s grant: Update error = %v", w.rec.Name, w.rec.LastError, w.err)
		}
	}
	for i := range records {
		if got := mustGet(t, stores[0], fresh[i].Name); got.LastError != "fresh" {
			t.Errorf("%s holds the %q write, want only the latest grant's", got.Name, got.LastError)
		}
	}
}

// updateWrites: Update stores the record, and its NextDue and State steer later leases.
func (s *suite) updateWrites(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	mustCreate(t, st, NewRecord("r", T0))
	got := mustLease(t, st, "w1", T0, lease, 1)
	assertNames(t, "Lease", got, "r")

	rec := got[0]
	rec.State, rec.SignData, rec.Operation = journal.StateSignRequested, []byte{1, 2, 3}, "operations/1"
	rec.NextDue = T0.Add(time.Minute)
	rec.Log(T0, "sign requested")
	if err := st.Update(ctx, "w1", rec, T0, 0); err != nil {
		t.Fatalf("Update: %v", err)
	}
	AssertEqual(t, mustGet(t, st, "r"), rec)
	assertNames(t, "Lease before the new NextDue", mustLease(t, st, "w2", T0.Add(time.Minute-time.Nanosecond), lease, 1))
	got = mustLease(t, st, "w2", T0.Add(time.Minute), lease, 1)
	assertNames(t, "Lease at the new NextDue", got, "r")
	AssertEqual(t, got[0], rec)

	rec = got[0]
	rec.State, rec.FinishedAt, rec.NextDue = journal.StateUploaded, T0.Add(time.Minute), time.Time{}
	if err := st.Update(ctx, "w2", rec, T0.Add(time.Minute), 0); err != nil {
		t.Fatalf("Update to final: %v", err)
	}
	assertNames(t, "Lease of a final record", mustLease(t, st, "w3", T0.Add(time.Hour), lease, 1))
	AssertEqual(t, mustGet(t, st, "r"), rec)
}

func (s *suite) nextDue(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	assertNextDue(t, st, time.Time{}, false)

	final := NewRecord("final", T0.Add(-time.Hour))
	final.State, final.FinishedAt = journal.StateUploaded, T0
	mustCreate(t, st, final)
	assertNextDue(t, st, time.Time{}, false)

	mustCreate(t, st, NewRecord("held", T0.Add(-time.Minute)))
	held := mustLease(t, st, "w1", T0.Add(-time.Minute), lease, 1)
	assertNames(t, "Lease", held, "held")
	assertNextDue(t, st, time.Time{}, false)

	later, sooner := T0.Add(time.Hour+time.Nanosecond), T0.Add(time.Second+time.Nanosecond)
	mustCreate(t, st, NewRecord("later", later))
	mustCreate(t, st, NewRecord("sooner", sooner))
	assertNextDue(t, st, sooner, true)

	if err := st.Update(ctx, "w1", held[0], T0, 0); err != nil {
		t.Fatalf("release: %v", err)
	}
	assertNextDue(t, st, T0.Add(-time.Minute), true)
}

func (s *suite) unfinished(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	if got, err := st.Unfinished(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Unfinished on an empty store = %d records, %v", len(got), err)
	}
	// Byte order, not a locale's collation: "B" < "a" < "a-1" < "a_1" < "b".
	for _, name := range []string{"b", "a_1", "B", "a", "a-1"} {
		mustCreate(t, st, NewRecord(name, T0))
	}
	for _, name := range []string{"0-final", "c-final"} {
		r := NewRecord(name, T0)
		r.State, r.FinishedAt = journal.StateFailed, T0
		mustCreate(t, st, r)
	}
	mustLease(t, st, "w1", T0, lease, 2) // leased records are still unfinished
	got, err := st.Unfinished(ctx)
	if err != nil {
		t.Fatalf("Unfinished: %v", err)
	}
	assertNames(t, "Unfinished", got, "B", "a", "a-1", "a_1", "b")
	for _, r := range got {
		AssertEqual(t, r, NewRecord(r.Name, T0))
	}
}

// pingAndCount: a store that can be pinged answers on an open store, and leaves the records as
// they were; a store that counts counts every record by its state, finished ones included.
func (s *suite) pingAndCount(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	pinger, canPing := st.(journal.Pinger)
	counter, canCount := st.(journal.Counter)
	if !canPing && !canCount {
		t.Skip("the store implements neither journal.Pinger nor journal.Counter")
	}
	if canCount {
		if got, err := counter.Count(ctx); err != nil || len(got) != 0 {
			t.Fatalf("Count of an empty store = %v, %v; want nothing", got, err)
		}
	}
	recs := []*journal.Record{NewRecord("a", T0), NewRecord("b", T0), NewRecord("c", T0)}
	recs[1].State = journal.StateCAPending
	recs[2].State, recs[2].FinishedAt, recs[2].NextDue = journal.StateUploaded, T0, time.Time{}
	for _, r := range recs {
		mustCreate(t, st, r)
	}
	if canPing {
		for range 3 {
			if err := pinger.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		}
		for _, r := range recs {
			if got := mustGet(t, st, r.Name); got.State != r.State {
				t.Errorf("%s after Ping: state %s, want %s", r.Name, got.State, r.State)
			}
		}
	}
	if canCount {
		want := map[journal.State]int{journal.StateClaimed: 1, journal.StateCAPending: 1, journal.StateUploaded: 1}
		if got, err := counter.Count(ctx); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Count = %v, %v; want %v", got, err, want)
		}
	}
}

func (s *suite) compact(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	finished := func(name string, at time.Time) *journal.Record {
		r := NewRecord(name, T0.Add(-24*time.Hour))
		r.State, r.FinishedAt, r.NextDue = journal.StateUploaded, at, time.Time{}
		return r
	}
	for _, r := range []*journal.Record{
		finished("old", T0.Add(-2*time.Hour)),
		finished("older", T0.Add(-48*time.Hour)),
		finished("no-finish-time", time.Time{}), // counts as long ago
		finished("at-cutoff", T0),
		finished("recent", T0.Add(time.Nanosecond)),
		NewRecord("unfinished-old", T0.Add(-72*time.Hour)),
	} {
		mustCreate(t, st, r)
	}
	n, err := st.Compact(ctx, T0)
	if err != nil || n != 3 {
		t.Fatalf("Compact = %d, %v; want 3, nil", n, err)
	}
	for _, name := range []string{"old", "older", "no-finish-time"} {
		if _, err := st.Get(ctx, name); !errors.Is(err, journal.ErrNotFound) {
			t.Errorf("Get(%s) after Compact: error = %v, want ErrNotFound", name, err)
		}
	}
	for _, name := range []string{"at-cutoff", "recent", "unfinished-old"} {
		mustGet(t, st, name)
	}
	if n, err := st.Compact(ctx, T0); err != nil || n != 0 {
		t.Fatalf("second Compact = %d, %v; want 0, nil", n, err)
	}
}

// finished: done records, newest first, by state, bounded; never an unfinished record or one
// whose audit event is pending.
func (s *suite) finished(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	if got, err := st.Finished(ctx, "", 10); err != nil || len(got) != 0 {
		t.Fatalf("Finished on an empty store = %d records, %v", len(got), err)
	}
	ended := func(name string, state journal.State, at time.Time) *journal.Record {
		r := NewRecord(name, T0.Add(-time.Hour))
		r.State, r.FinishedAt, r.NextDue, r.Outcome = state, at, time.Time{}, "outcome of "+name
		return r
	}
	recs := []*journal.Record{
		ended("up-old", journal.StateUploaded, T0.Add(-time.Hour)),
		ended("up-new", journal.StateUploaded, T0.Add(time.Nanosecond)),
		// Same instant: by name, byte order ("B" < "a").
		ended("a-tie", journal.StateFailed, T0),
		ended("B-tie", journal.StateUploaded, T0),
		ended("failed-old", journal.StateFailed, T0.Add(-48*time.Hour)),
		NewRecord("unfinished", T0),
	}
	pending := ended("audit-pending", journal.StateUploaded, T0.Add(time.Hour))
	pending.AuditPending = true
	recs = append(recs, pending)
	for _, r := range recs {
		mustCreate(t, st, r)
	}
	list := func(state journal.State, limit int) []*journal.Record {
		t.Helper()
		got, err := st.Finished(ctx, state, limit)
		if err != nil {
			t.Fatalf("Finished(%q, %d): %v", state, limit, err)
		}
		return got
	}
	got := list("", 10)
	assertNames(t, `Finished("", 10)`, got, "up-new", "B-tie", "a-tie", "up-old", "failed-old")
	for _, r := range got {
		for _, w := range recs {
			if w.Name == r.Name {
				AssertEqual(t, r, w)
			}
		}
	}
	assertNames(t, `Finished("", 2)`, list("", 2), "up-new", "B-tie")
	assertNames(t, `Finished(uploaded, 10)`, list(journal.StateUploaded, 10), "up-new", "B-tie", "up-old")
	assertNames(t, `Finished(failed, 1)`, list(journal.StateFailed, 1), "a-tie")
	assertNames(t, `Finished(claimed, 10)`, list(journal.StateClaimed, 10))
	assertNames(t, `Finished("", 0)`, list("", 0))
}

// auditPending: a record in a final state whose audit event is pending is not done: it is
// leased (at once, after a crash too), scheduled and listed as unfinished, and neither compacted
// nor listed as finished, until a write clears AuditPending.
func (s *suite) auditPending(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	rec := NewRecord("r", T0)
	mustCreate(t, st, rec)
	held := mustLease(t, st, "w1", T0, lease, 1)
	assertNames(t, "Lease", held, "r")
	rec = held[0]
	rec.State, rec.FinishedAt, rec.NextDue, rec.Outcome, rec.AuditPending = journal.StateUploaded, T0, T0, "issued", true
	// The final state is journaled, then the holder dies before writing the audit event.
	if err := st.Update(ctx, "w1", rec, T0, lease); err != nil {
		t.Fatalf("Update to final, audit pending: %v", err)
	}
	AssertEqual(t, mustGet(t, st, "r"), rec)
	assertNames(t, "Lease while held", mustLease(t, st, "w2", T0.Add(time.Second), lease, 1))
	got, err := st.Unfinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assertNames(t, "Unfinished", got, "r")
	if n, err := st.Compact(ctx, T0.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("Compact = %d, %v; want 0: the audit event is pending", n, err)
	}
	if got, err := st.Finished(ctx, "", 10); err != nil || len(got) != 0 {
		t.Fatalf("Finished = %d records, %v; want none while the audit event is pending", len(got), err)
	}

	// The lease expires: another owner takes the record over to write the event.
	taken := mustLease(t, st, "w2", T0.Add(lease), lease, 1)
	assertNames(t, "Lease after expiry", taken, "r")
	AssertEqual(t, taken[0], rec)
	taken[0].AuditPending = false
	if err := st.Update(ctx, "w2", taken[0], T0.Add(lease), 0); err != nil {
		t.Fatalf("Update clearing AuditPending: %v", err)
	}
	assertNames(t, "Lease of a done record", mustLease(t, st, "w3", T0.Add(2*lease), lease, 1))
	assertNextDue(t, st, time.Time{}, false)
	if got, err := st.Unfinished(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Unfinished = %d records, %v; want none", len(got), err)
	}
	assertNames(t, "Finished", mustFinished(t, st), "r")
	if n, err := st.Compact(ctx, T0.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("Compact = %d, %v; want 1", n, err)
	}
}

// issuedRecord is a record of identity (customer, profile, device directory id) in state,
// holding a certificate when withCert.
func issuedRecord(name, customer, profile, device string, state journal.State, withCert bool) *journal.Record {
	r := NewRecord(name, T0)
	r.State, r.ProfileName = state, profile
	r.Process = &process.Process{Name: name, Customer: customer, Device: &process.Device{SerialNumber: "S", DirectoryID: device}}
	if withCert {
		r.CertificatePEM, r.IssuedAt = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", T0
	}
	if state.Final() {
		r.FinishedAt, r.NextDue = T0, time.Time{}
	}
	return r
}

// issuedTo: the records holding a certificate for one identity (customer, profile, scope and
// directory id), done or not, by name; never one without a certificate, of another identity,
// or one Compact deleted. A record that gets its certificate by an Update is found from then on.
func (s *suite) issuedTo(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	user := issuedRecord("user-scope", "C1", "wifi", "dev-1", journal.StateUploaded, true)
	user.Process.User = &process.User{Email: "ada@example.com", DirectoryID: "dev-1"}
	for _, r := range []*journal.Record{
		issuedRecord("b-uploaded", "C1", "wifi", "dev-1", journal.StateUploaded, true),
		issuedRecord("a-issued", "C1", "wifi", "dev-1", journal.StateIssued, true),
		issuedRecord("c-signed", "C1", "wifi", "dev-1", journal.StateSigned, false),
		issuedRecord("other-device", "C1", "wifi", "dev-2", journal.StateUploaded, true),
		issuedRecord("other-profile", "C1", "vpn", "dev-1", journal.StateUploaded, true),
		issuedRecord("other-customer", "C2", "wifi", "dev-1", journal.StateUploaded, true),
		issuedRecord("no-profile", "C1", "", "dev-1", journal.StateUploaded, true),
		user, // the same directory id, but a user's
	} {
		mustCreate(t, st, r)
	}
	identity := issuedRecord("x", "C1", "wifi", "dev-1", journal.StateUploaded, true).Identity()
	list := func() []*journal.Record {
		t.Helper()
		got, err := st.IssuedTo(ctx, identity)
		if err != nil {
			t.Fatalf("IssuedTo: %v", err)
		}
		return got
	}
	got := list()
	assertNames(t, "IssuedTo", got, "a-issued", "b-uploaded")
	AssertEqual(t, got[0], issuedRecord("a-issued", "C1", "wifi", "dev-1", journal.StateIssued, true))
	if got, err := st.IssuedTo(ctx, ""); err != nil || len(got) != 0 {
		t.Fatalf(`IssuedTo("") = %d records, %v; want none`, len(got), err)
	}
	if got, err := st.IssuedTo(ctx, user.Identity()); err != nil || len(got) != 1 || got[0].Name != "user-scope" {
		t.Fatalf("IssuedTo(the user's identity) = %d records, %v; want user-scope alone", len(got), err)
	}

	// c-signed gets its certificate.
	held := mustLease(t, st, "w1", T0, lease, 10)
	var signed *journal.Record
	for _, r := range held {
		if r.Name == "c-signed" {
			signed = r
		}
	}
	if signed == nil {
		t.Fatal("Lease did not hand out c-signed")
	}
	signed.State, signed.CertificatePEM, signed.IssuedAt = journal.StateIssued, "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n", T0.Add(time.Second)
	if err := st.Update(ctx, "w1", signed, T0, 0); err != nil {
		t.Fatalf("Update: %v", err)
	}
	assertNames(t, "IssuedTo after an Update with a certificate", list(), "a-issued", "b-uploaded", "c-signed")

	// b-uploaded is done, and compacted.
	if n, err := st.Compact(ctx, T0.Add(time.Hour)); err != nil || n < 1 {
		t.Fatalf("Compact = %d, %v; want b-uploaded among the deleted", n, err)
	}
	assertNames(t, "IssuedTo after Compact", list(), "a-issued", "c-signed")
}

// revocationPending: a record in a final state that owes a revocation of a certificate it
// superseded is not done: it is leased when its NextDue (the revocation's) comes, not before,
// scheduled, listed as unfinished and never compacted, until a write closes the revocation.
func (s *suite) revocationPending(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	grace := 24 * time.Hour
	rec := issuedRecord("new", "C1", "wifi", "dev-1", journal.StateUploaded, true)
	rec.Revocations = []journal.Revocation{{Process: "old", CAName: "local", Serial: "2a", Reason: "superseded",
		Due: T0.Add(grace), NextDue: T0.Add(grace), State: journal.RevocationPending}}
	rec.NextDue = T0.Add(grace)
	if rec.Done() {
		t.Fatal("a record with a pending revocation reports Done")
	}
	mustCreate(t, st, rec)
	assertNextDue(t, st, T0.Add(grace), true)
	assertNames(t, "Lease before the grace period ended", mustLease(t, st, "w1", T0.Add(grace-time.Nanosecond), lease, 10))
	if n, err := st.Compact(ctx, T0.Add(365*24*time.Hour)); err != nil || n != 0 {
		t.Fatalf("Compact = %d, %v; want 0: a revocation is pending", n, err)
	}
	if got, err := st.Unfinished(ctx); err != nil || len(got) != 1 {
		t.Fatalf("Unfinished = %d records, %v; want the record", len(got), err)
	}
	if got, err := st.Finished(ctx, "", 10); err != nil || len(got) != 0 {
		t.Fatalf("Finished = %d records, %v; want none while a revocation is pending", len(got), err)
	}
	held := mustLease(t, st, "w1", T0.Add(grace), lease, 10)
	assertNames(t, "Lease once the grace period ended", held, "new")
	AssertEqual(t, held[0], rec)

	// The CA confirmed; the audit event is written next (still open), then nothing is due.
	r := held[0]
	r.Revocations[0].State, r.Revocations[0].At, r.Revocations[0].AuditPending = journal.RevocationRevoked, T0.Add(grace), true
	if err := st.Update(ctx, "w1", r, T0.Add(grace), lease); err != nil {
		t.Fatalf("Update to revoked: %v", err)
	}
	if n, err := st.Compact(ctx, T0.Add(365*24*time.Hour)); err != nil || n != 0 {
		t.Fatalf("Compact = %d, %v; want 0: the revocation's audit event is pending", n, err)
	}
	r.Revocations[0].AuditPending = false
	if err := st.Update(ctx, "w1", r, T0.Add(grace), 0); err != nil {
		t.Fatalf("Update closing the revocation: %v", err)
	}
	assertNextDue(t, st, time.Time{}, false)
	assertNames(t, "Finished", mustFinished(t, st), "new")
	AssertEqual(t, mustGet(t, st, "new"), r)
	if n, err := st.Compact(ctx, T0.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("Compact = %d, %v; want 1", n, err)
	}
}

func mustFinished(t testing.TB, st journal.Store) []*journal.Record {
	t.Helper()
	got, err := st.Finished(context.Background(), "", 100)
	if err != nil {
		t.Fatalf("Finished: %v", err)
	}
	return got
}

// concurrency: workers lease and advance records in two steps, releasing in between so that a
// record usually changes hands. No record may be held by two owners at once, every step must
// see the previous step's write, and every record must end up processed exactly once.
func (s *suite) concurrency(t *testing.T) {
	const (
		records = 120
		workers = 8
	)
	var stores []journal.Store
	if s.replicas != nil {
		stores = s.replicas(t, 2)
	} else {
		stores = []journal.Store{s.open(t)}
	}
	ctx := context.Background()
	for i := range records {
		mustCreate(t, stores[0], NewRecord(fmt.Sprintf("c%03d", i), T0.Add(-time.Duration(i)*time.Millisecond)))
	}

	var (
		mu      sync.Mutex
		holder  = map[string]string{} // record → worker holding it, per the test's bookkeeping
		steps   = map[string][]string{}
		done    int
		idle    int // Lease calls that returned nothing, all workers together
		maxIdle = 200000
	)
	finished := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return done == records || idle > maxIdle || t.Failed()
	}
	var wg sync.WaitGroup
	for w := range workers {
		st := stores[w%len(stores)]
		owner := fmt.Sprintf("replica%d/worker%d", w%len(stores), w)
		wg.Go(func() {
			for !finished() {
				got, err := st.Lease(ctx, owner, T0, time.Hour, 1+w%3)
				if err != nil {
					t.Errorf("%s: Lease: %v", owner, err)
					return
				}
				if len(got) == 0 {
					mu.Lock()
					idle++
					mu.Unlock()
					runtime.Gosched()
					continue
				}
				for _, rec := range got {
					mu.Lock()
					if h, ok := holder[rec.Name]; ok {
						t.Errorf("%s leased %s, which %s holds", owner, rec.Name, h)
					}
					holder[rec.Name] = owner
					steps[rec.Name] = append(steps[rec.Name], string(rec.State))
					mu.Unlock()

					switch rec.State {
					case journal.StateClaimed:
						rec.State, rec.Attempts = journal.StateSigned, 1
					case journal.StateSigned:
						if rec.Attempts != 1 {
							t.Errorf("%s: %s leased with Attempts %d, want the previous step's 1", owner, rec.Name, rec.Attempts)
						}
						rec.State, rec.FinishedAt, rec.NextDue = journal.StateUploaded, T0, time.Time{}
					default:
						t.Errorf("%s: %s leased in state %s", owner, rec.Name, rec.State)
					}
					rec.Log(T0, owner)

					// Forget the holder before the write that releases the lease: after it,
					// another worker may rightly lease the record.
					mu.Lock()
					delete(holder, rec.Name)
					if rec.State.Final() {
						done++
					}
					mu.Unlock()
					if err := st.Update(ctx, owner, rec, T0, 0); err != nil {
						t.Errorf("%s: Update %s: %v", owner, rec.Name, err)
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if idle > maxIdle {
		t.Fatalf("gave up after %d empty leases with %d of %d records finished", idle, done, records)
	}
	for i := range records {
		name := fmt.Sprintf("c%03d", i)
		if got := steps[name]; !reflect.DeepEqual(got, []string{string(journal.StateClaimed), string(journal.StateSigned)}) {
			t.Errorf("%s was leased in states %v, want [claimed signed]", name, got)
		}
		if rec := mustGet(t, stores[len(stores)-1], name); rec.State != journal.StateUploaded || len(rec.History) != 2 {
			t.Errorf("%s ended in %s with %d history entries, want uploaded with 2", name, rec.State, len(rec.History))
		}
	}
	for _, st := range stores {
		if got, err := st.Unfinished(ctx); err != nil || len(got) != 0 {
			t.Errorf("Unfinished after the run = %d records, %v; want none", len(got), err)
		}
	}
}

// closed: every method of a closed store returns an error; none panics.
func (s *suite) closed(t *testing.T) {
	st := s.open(t)
	ctx := context.Background()
	// Every call below would succeed on an open store.
	mustCreate(t, st, NewRecord("r", T0))
	mustCreate(t, st, NewRecord("due", T0.Add(time.Second)))
	held := mustLease(t, st, "w1", T0, lease, 1)
	assertNames(t, "Lease", held, "r")
	rec := held[0]
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"Create", func() error { _, err := st.Create(ctx, NewRecord("new", T0)); return err }},
		{"Get", func() error { _, err := st.Get(ctx, "r"); return err }},
		{"Lease", func() error { _, err := st.Lease(ctx, "w1", T0.Add(time.Second), lease, 1); return err }},
		{"Update", func() error { return st.Update(ctx, "w1", rec, T0, 0) }},
		{"Renew", func() error { return st.Renew(ctx, "w1", "r", rec.LeaseToken, T0, lease) }},
		{"NextDue", func() error { _, _, err := st.NextDue(ctx); return err }},
		{"Unfinished", func() error { _, err := st.Unfinished(ctx); return err }},
		{"Finished", func() error { _, err := st.Finished(ctx, "", 10); return err }},
		{"Compact", func() error { _, err := st.Compact(ctx, T0); return err }},
	}
	if p, ok := st.(journal.Pinger); ok {
		calls = append(calls, struct {
			name string
			call func() error
		}{"Ping", func() error { return p.Ping(ctx) }})
	}
	if c, ok := st.(journal.Counter); ok {
		calls = append(calls, struct {
			name string
			call func() error
		}{"Count", func() error { _, err := c.Count(ctx); return err }})
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			if err := noPanic(t, c.call); err == nil {
				t.Errorf("%s on a closed store succeeded", c.name)
			}
		})
	}
	t.Run("Close again", func(t *testing.T) {
		_ = noPanic(t, st.Close) // an error is fine, a panic is not
	})
}

// noPanic calls f, failing t if it panics.
func noPanic(t *testing.T, f func() error) (err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("panic: %v\n%s", p, debug.Stack())
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

// AssertEqual fails t unless got and want are the same record. Times are compared with Equal,
// nil and empty slices are the same, and LeaseToken (which says how a copy was handed out, not
// what the record holds) is ignored.
func AssertEqual(t testing.TB, got, want *journal.Record) {
	t.Helper()
	g, w := normalize(got), normalize(want)
	if reflect.DeepEqual(g, w) {
		return
	}
	gj, _ := json.MarshalIndent(g, "", "  ")
	wj, _ := json.MarshalIndent(w, "", "  ")
	t.Fatalf("record %q differs\n got: %s\nwant: %s", want.Name, gj, wj)
}

func normalize(r *journal.Record) *journal.Record {
	if r == nil {
		return nil
	}
	c := r.Clone()
	c.LeaseToken = 0 // not part of the stored record; the tests that care check it themselves
	utc := func(t *time.Time) { *t = t.UTC() }
	for _, t := range []*time.Time{&c.StepStarted, &c.NextDue, &c.SignDeadline, &c.Created, &c.Updated, &c.FinishedAt, &c.IssuedAt} {
		utc(t)
	}
	for i := range c.Revocations {
		v := &c.Revocations[i]
		utc(&v.Due)
		utc(&v.NextDue)
		utc(&v.At)
	}
	for i := range c.History {
		utc(&c.History[i].At)
	}
	for _, b := range []*[]byte{&c.SignData, &c.Signature, &c.CSR} {
		if len(*b) == 0 {
			*b = nil
		}
	}
	if len(c.History) == 0 {
		c.History = nil
	}
	if c.Process != nil {
		p := *c.Process
		utc(&p.StartTime)
		for _, b := range []*[]byte{&p.SPKI, &p.SignData, &p.Signature} {
			if len(*b) == 0 {
				*b = nil
			} else {
				*b = append([]byte(nil), *b...)
			}
		}
		c.Process = &p
	}
	return c
}

func mustCreate(t testing.TB, st journal.Store, rec *journal.Record) {
	t.Helper()
	created, err := st.Create(context.Background(), rec)
	if err != nil || !created {
		t.Fatalf("Create(%s) = %v, %v; want true, nil", rec.Name, created, err)
	}
}

func mustGet(t testing.TB, st journal.Store, name string) *journal.Record {
	t.Helper()
	r, err := st.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return r
}

func mustLease(t testing.TB, st journal.Store, owner string, now time.Time, d time.Duration, limit int) []*journal.Record {
	t.Helper()
	got, err := st.Lease(context.Background(), owner, now, d, limit)
	if err != nil {
		t.Fatalf("Lease(%s): %v", owner, err)
	}
	if len(got) > max(limit, 0) {
		t.Fatalf("Lease(%s, limit %d) returned %d records", owner, limit, len(got))
	}
	return got
}

func assertNames(t testing.TB, what string, got []*journal.Record, want ...string) {
	t.Helper()
	names := make([]string, len(got))
	for i, r := range got {
		names[i] = r.Name
	}
	if len(names) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("%s = %q, want %q", what, names, want)
	}
}

func assertNextDue(t testing.TB, st journal.Store, want time.Time, wantOK bool) {
	t.Helper()
	got, ok, err := st.NextDue(context.Background())
	if err != nil {
		t.Fatalf("NextDue: %v", err)
	}
	if ok != wantOK || (ok && !got.Equal(want)) {
		t.Fatalf("NextDue = %v, %v; want %v, %v", got, ok, want, wantOK)
	}
}
