package engine_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/metrics"
)

// eventsByID indexes the audit events and fails on an id seen twice.
func eventsByID(t *testing.T, evs []audit.Event) map[string]audit.Event {
	t.Helper()
	out := map[string]audit.Event{}
	for _, ev := range evs {
		if _, dup := out[ev.ID]; dup {
			t.Errorf("audit event for %s written twice", ev.ID)
		}
		out[ev.ID] = ev
	}
	return out
}

// N processes, issued and failed, give N events, one each, whose certificate fields are those
// of the certificate the device received and whose key hash is the device key's.
func TestAuditEventPerProcess(t *testing.T) {
	h := newHarness(t, harnessOptions{extraCAs: func(*local.Connector) map[string]ca.Connector {
		return map[string]ca.Connector{"refusing": refusingCA{}}
	}})
	start := time.Now()
	var issued, failed []string
	for i := range 10 {
		issued = append(issued, h.start(emulator.ProcessSpec{Scope: []string{"device", "user"}[i%2], KeyType: []string{"rsa", "ecdsa"}[i/2%2]}))
	}
	failed = append(failed, h.start(emulator.ProcessSpec{ProfileRef: "no-such-profile"}), h.start(emulator.ProcessSpec{CARef: "refusing", Scope: "user"}))
	snaps := h.waitFinished(append(slices.Clone(issued), failed...), 60*time.Second)
	h.waitJournalIdle(10 * time.Second)
	events := h.AuditEvents()
	if len(events) != len(issued)+len(failed) {
		t.Fatalf("%d audit events for %d finished processes", len(events), len(issued)+len(failed))
	}
	byID := eventsByID(t, events)
	for _, name := range append(slices.Clone(issued), failed...) {
		s, ev := snaps[name], byID[name]
		if ev.ID != name {
			t.Fatalf("no audit event for %s", name)
		}
		sum := sha256.Sum256(s.SPKI)
		if ev.Kind != audit.KindProvisioning || ev.SchemaVersion != audit.SchemaVersion || ev.InstanceID != instanceID ||
			ev.Customer != testCustomer || ev.Scope != s.Scope || ev.SPKISHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: event %+v", name, ev)
		}
		if ev.Time.Before(start.Add(-time.Second)) || ev.Time.After(time.Now()) || ev.DurationMS < 0 || ev.Time.Location() != time.UTC {
			t.Errorf("%s: time %s duration %dms", name, ev.Time, ev.DurationMS)
		}
	}
	for _, name := range issued {
		s, ev := snaps[name], byID[name]
		leaf := h.mustIssue(s)
		c := ev.Certificate
		if ev.Outcome != "issued" || ev.Failure != "" || ev.CAConnection != "builtin" || ev.Profile != s.Scope || c == nil {
			t.Fatalf("%s: issued event %+v", name, ev)
		}
		if c.Serial != leaf.SerialNumber.Text(16) || c.Issuer != leaf.Issuer.String() || c.Subject != leaf.Subject.String() ||
			!c.NotAfter.Equal(leaf.NotAfter) || !c.NotBefore.Equal(leaf.NotBefore) || c.SPKISHA256 != ev.SPKISHA256 {
			t.Errorf("%s: certificate %+v, uploaded serial %s subject %s", name, c, leaf.SerialNumber.Text(16), leaf.Subject)
		}
		if s.Scope == "user" && (c.SANs == nil || !slices.Equal(c.SANs.Email, leaf.EmailAddresses)) {
			t.Errorf("%s: SANs %+v, certificate %v", name, c.SANs, leaf.EmailAddresses)
		}
	}
	for _, name := range failed {
		s, ev := snaps[name], byID[name]
		if ev.Outcome != "failed" || ev.Failure != s.FailureMessage || ev.Failure == "" || ev.Certificate != nil {
			t.Errorf("%s: failure event %+v, device shows %q", name, ev, s.FailureMessage)
		}
	}
	if ev := byID[failed[0]]; ev.Profile != "no-such-profile" {
		t.Errorf("the event names the profile Google asked for: %q", ev.Profile)
	}

	// Nothing secret or private to the protocol is in the trail: not the signed request, the
	// device's signature, the CSR, a private key.
	raw, err := os.ReadFile(h.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range issued {
		rec, err := h.store.Get(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if !rec.Done() || rec.AuditPending || !hasNote(rec, "audit event written") {
			t.Errorf("%s: journal after the audit: done %v, history %v", name, rec.Done(), rec.History)
		}
		for _, b := range [][]byte{rec.SignData, rec.Signature, rec.CSR} {
			if strings.Contains(string(raw), base64.StdEncoding.EncodeToString(b)) || strings.Contains(string(raw), hex.EncodeToString(b)) {
				t.Errorf("%s: the audit log carries protocol bytes", name)
			}
		}
	}
	if strings.Contains(string(raw), "PRIVATE KEY") || strings.Contains(string(raw), "BEGIN CERTIFICATE") {
		t.Error("the audit log carries PEM")
	}
}

func hasNote(rec *journal.Record, note string) bool {
	for _, e := range rec.History {
		if e.Note == note {
			return true
		}
	}
	return false
}

// crashingStore is the journal with one crash injected: the first write of a record that
// matches at lands (or not, per landed) and then the worker "dies": that write and every later
// write or renewal of the record by the same owner report an error and write nothing, so the
// record's lease stays until it expires (a failed write alone is retried by the engine).
type crashingStore struct {
	journal.Store
	at     func(*journal.Record) bool
	landed bool

	mu      sync.Mutex
	crashed map[string]bool
	dead    map[string]string // record → the owner that died holding it
}

var errCrash = errors.New("injected: the adapter died here")

// gone reports whether owner died holding the record named name.
func (s *crashingStore) gone(owner, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead[name] == owner
}

func (s *crashingStore) Renew(ctx context.Context, owner, name string, token int64, now time.Time, d time.Duration) error {
	if s.gone(owner, name) {
		return errCrash
	}
	return s.Store.Renew(ctx, owner, name, token, now, d)
}

func (s *crashingStore) Update(ctx context.Context, owner string, rec *journal.Record, now time.Time, renew time.Duration) error {
	if s.gone(owner, rec.Name) {
		return errCrash
	}
	s.mu.Lock()
	crash := s.at(rec) && !s.crashed[rec.Name]
	if crash {
		s.crashed[rec.Name] = true
		if s.dead == nil {
			s.dead = map[string]string{}
		}
		s.dead[rec.Name] = owner
	}
	s.mu.Unlock()
	if !crash {
		return s.Store.Update(ctx, owner, rec, now, renew)
	}
	if s.landed {
		if err := s.Store.Update(ctx, owner, rec, now, renew); err != nil {
			return err
		}
	}
	return errCrash
}

func (s *crashingStore) crashes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.crashed)
}

// A crash at either side of the audit write loses no event and doubles none: after the final
// state is journaled but before the event is written, the next holder writes it; after the
// event is written but before that is journaled, the next holder finds it in the file.
func TestAuditExactlyOnceAcrossCrashes(t *testing.T) {
	tests := []struct {
		name   string
		at     func(*journal.Record) bool
		landed bool
		note   string // in the record's history once done
	}{
		{"after the final state is journaled",
			func(r *journal.Record) bool { return r.State.Final() && r.AuditPending }, true, "audit event written"},
		{"after the event is written, before it is journaled",
			func(r *journal.Record) bool { return r.State.Final() && !r.AuditPending }, false, "audit event found written"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			crash := &crashingStore{at: tc.at, landed: tc.landed, crashed: map[string]bool{}}
			h := newHarness(t, harnessOptions{
				lease: time.Second,
				store: func(s journal.Store) journal.Store { crash.Store = s; return crash },
				extraCAs: func(*local.Connector) map[string]ca.Connector {
					return map[string]ca.Connector{"refusing": refusingCA{}}
				},
			})
			names := []string{h.start(emulator.ProcessSpec{}), h.start(emulator.ProcessSpec{KeyType: "ecdsa", Scope: "user"}),
				h.start(emulator.ProcessSpec{CARef: "refusing"})}
			snaps := h.waitFinished(names, 30*time.Second)
			waitFor(t, 10*time.Second, func() bool { return crash.crashes() == len(names) })
			// The adapter restarts: a new engine takes the records over once the dead one's
			// leases expire.
			if err := h.StopEngine(); err != nil {
				t.Fatal(err)
			}
			h.RestartEngine()
			h.waitJournalIdle(20 * time.Second)
			byID := eventsByID(t, h.AuditEvents())
			if len(byID) != len(names) {
				t.Fatalf("%d events for %d processes", len(byID), len(names))
			}
			for _, name := range names {
				ev := byID[name]
				switch want := snaps[name].State; {
				case want == emulator.StateIssued && (ev.Outcome != "issued" || ev.Certificate == nil):
					t.Errorf("%s: event %+v", name, ev)
				case want == emulator.StateFailed && (ev.Outcome != "failed" || ev.Failure != snaps[name].FailureMessage):
					t.Errorf("%s: event %+v", name, ev)
				}
				rec, err := h.store.Get(context.Background(), name)
				if err != nil {
					t.Fatal(err)
				}
				if !rec.Done() || !hasNote(rec, tc.note) {
					t.Errorf("%s: done %v, history %+v", name, rec.Done(), rec.History)
				}
			}
		})
	}
}

// faultyAuditor fails the first writes: with landed, the line reaches the file and then the
// write reports an error (as when fsync fails), without it nothing is written.
type faultyAuditor struct {
	engine.Auditor
	landed bool
	mu     sync.Mutex
	fails  int
}

func (a *faultyAuditor) Write(ev *audit.Event) error {
	a.mu.Lock()
	fail := a.fails > 0
	if fail {
		a.fails--
	}
	a.mu.Unlock()
	if !fail {
		return a.Auditor.Write(ev)
	}
	if a.landed {
		if err := a.Auditor.Write(ev); err != nil {
			return err
		}
	}
	return errors.New("injected: disk full")
}

// A failing audit sink is retried until the event is written, once.
func TestAuditWriteFailuresRetried(t *testing.T) {
	for _, landed := range []bool{false, true} {
		t.Run(map[bool]string{false: "nothing written", true: "written, then an error"}[landed], func(t *testing.T) {
			faulty := &faultyAuditor{landed: landed, fails: 3}
			h := newHarness(t, harnessOptions{Audit: func(l *audit.Log) engine.Auditor { faulty.Auditor = l; return faulty }})
			name := h.start(emulator.ProcessSpec{})
			h.mustIssue(h.waitFinished([]string{name}, 30*time.Second)[name])
			h.waitJournalIdle(20 * time.Second)
			events := h.AuditEvents()
			wantFails := int64(3)
			if landed {
				wantFails = 1 // the retry finds the line the failed write left, and writes no other
			}
			if len(events) != 1 || events[0].ID != name || events[0].Outcome != "issued" {
				t.Fatalf("events %+v", events)
			}
			if got := count(metrics.NewAudit(h.Registry).WriteErrors.WithLabelValues(metrics.AuditProvisioning)); int64(got) != wantFails {
				t.Fatalf("audit_write_errors_total{event=provisioning} = %d, want %d", got, wantFails)
			}
		})
	}
}
