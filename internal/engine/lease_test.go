package engine_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/journal"
)

// slowCA is the built-in CA behind a slow link: each Issue waits delay (or until its context
// ends, as a connector honouring cancellation does) before the real CA signs. It has no
// Recover, like EST, SCEP and step-ca: a call cut short cannot be looked up afterwards. It
// counts calls per process and the most that ever ran at once.
type slowCA struct {
	inner *local.Connector
	delay time.Duration

	mu          sync.Mutex
	calls       map[string]int
	running     map[string]int
	maxRunning  map[string]int
	started     chan string // one send per call, never blocking
	interrupted int
}

func newSlowCA(inner *local.Connector, delay time.Duration) *slowCA {
	return &slowCA{inner: inner, delay: delay, calls: map[string]int{}, running: map[string]int{},
		maxRunning: map[string]int{}, started: make(chan string, 100)}
}

func (s *slowCA) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	s.mu.Lock()
	s.calls[req.Key]++
	s.running[req.Key]++
	s.maxRunning[req.Key] = max(s.maxRunning[req.Key], s.running[req.Key])
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running[req.Key]--
		s.mu.Unlock()
	}()
	select {
	case s.started <- req.Key:
	default:
	}
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return s.inner.Issue(ctx, req)
	case <-ctx.Done():
		s.mu.Lock()
		s.interrupted++
		s.mu.Unlock()
		return nil, fmt.Errorf("slow CA: %w", ctx.Err())
	}
}

func (s *slowCA) stats(key string) (calls, maxRunning, running int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[key], s.maxRunning[key], s.running[key]
}

func (s *slowCA) interruptions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.interrupted
}

// recoverableSlowCA is slowCA for a CA that can say what it issued (the built-in CA's ledger).
type recoverableSlowCA struct{ *slowCA }

func (r recoverableSlowCA) Recover(ctx context.Context, key string) (*ca.Issued, error) {
	return r.inner.Recover(ctx, key)
}

// A CA call three times longer than the journal lease: the heartbeat keeps the lease, so every
// process is issued by one CA call, never two at once, and uploaded once. (Before heartbeats
// the engine re-leased its own record mid-call and asked the CA again.) The lease is short, but
// not so short that a loaded test machine stalls a heartbeat past it.
func TestSlowCAOutlivesLease(t *testing.T) {
	var slow *slowCA
	h := newHarness(t, harnessOptions{
		lease: 500 * time.Millisecond,
		extraCAs: func(builtin *local.Connector) map[string]ca.Connector {
			slow = newSlowCA(builtin, 1500*time.Millisecond)
			return map[string]ca.Connector{"slow": slow}
		},
	})
	var names []string
	for i := range 4 {
		names = append(names, h.start(emulator.ProcessSpec{CARef: "slow", KeyType: []string{"rsa", "ecdsa"}[i%2]}))
	}
	snaps := h.waitFinished(names, 60*time.Second)
	for _, name := range names {
		h.mustIssue(snaps[name]) // one signData, one certificate from the CA, chained, device key
		if calls, most, _ := slow.stats(name); calls != 1 || most != 1 {
			t.Errorf("%s: the CA was called %d times, at most %d at once; want once", name, calls, most)
		}
		if n := snaps[name].Calls["uploadCertificate"]; n != 1 {
			t.Errorf("%s: %d uploads, want 1", name, n)
		}
	}
	if n := count(h.metrics.LeasesLost.WithLabelValues("expired")) + count(h.metrics.LeasesLost.WithLabelValues("refused")); n != 0 {
		t.Errorf("%d leases lost with a working journal", n)
	}
	h.waitJournalIdle(5 * time.Second)
}

// stealingStore is the journal with one fault: armed for a record, the next renewal of its
// lease finds that another owner ("thief") took the record first, as a peer replica does once
// it believes the lease expired.
type stealingStore struct {
	journal.Store
	mu     sync.Mutex
	target string
	thief  chan *journal.Record // the thief's copy, once taken
}

func (s *stealingStore) arm(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.target = name
}

func (s *stealingStore) Renew(ctx context.Context, owner, name string, token int64, now time.Time, d time.Duration) error {
	s.mu.Lock()
	steal := name == s.target
	if steal {
		s.target = ""
	}
	s.mu.Unlock()
	if steal {
		// The thief's clock is past the lease; its own lease lasts the test.
		got, err := s.Store.Lease(ctx, "thief", now.Add(d), time.Hour, 100)
		if err != nil {
			return err
		}
		for _, r := range got {
			if r.Name == name {
				s.thief <- r
			}
		}
	}
	return s.Store.Renew(ctx, owner, name, token, now, d)
}

// A worker whose lease is taken mid-step (during its CA call) abandons the step: the CA never
// issues for it, nothing is uploaded, and its late writes do not land. Once the new holder lets
// go, the process is finished with one certificate.
func TestLeaseLostMidStep(t *testing.T) {
	var slow *slowCA
	steal := &stealingStore{thief: make(chan *journal.Record, 1)}
	h := newHarness(t, harnessOptions{
		lease: 500 * time.Millisecond,
		store: func(s journal.Store) journal.Store { steal.Store = s; return steal },
		extraCAs: func(builtin *local.Connector) map[string]ca.Connector {
			slow = newSlowCA(builtin, 3*time.Second)
			return map[string]ca.Connector{"slow": recoverableSlowCA{slow}}
		},
	})
	name := h.start(emulator.ProcessSpec{CARef: "slow"})
	select {
	case <-slow.started:
	case <-time.After(30 * time.Second):
		t.Fatal("the CA was never asked")
	}
	steal.arm(name)
	var taken *journal.Record
	select {
	case taken = <-steal.thief:
	case <-time.After(30 * time.Second):
		t.Fatal("the record was never taken")
	}
	// The heartbeat learns of the loss and the CA call is cancelled before the CA signs.
	waitFor(t, 10*time.Second, func() bool { _, _, running := slow.stats(name); return running == 0 })
	if got := count(h.metrics.LeasesLost.WithLabelValues("refused")); got != 1 {
		t.Fatalf("leases_lost_total{refused} = %d, want 1", got)
	}
	if slow.interruptions() != 1 || h.local.Issued(name) != 0 {
		t.Fatalf("the abandoned CA call went on: %d interrupted, CA issued %d", slow.interruptions(), h.local.Issued(name))
	}
	if s, _ := h.emu.Process(name); s.Finished() || s.Calls["uploadCertificate"] != 0 || s.Calls["setFailure"] != 0 {
		t.Fatalf("the first holder acted after losing its lease: state %s, calls %v", s.State, s.Calls)
	}
	got, err := h.store.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != taken.State || got.CAInFlight != taken.CAInFlight || !got.Updated.Equal(taken.Updated) || got.CertificatePEM != "" {
		t.Fatalf("the first holder wrote past the thief: %s in flight %v updated %v, thief took %s in flight %v updated %v",
			got.State, got.CAInFlight, got.Updated, taken.State, taken.CAInFlight, taken.Updated)
	}

	// The thief hands the record back; the engine recovers (the CA issued nothing) and issues.
	if err := h.store.Update(context.Background(), "thief", taken, time.Now(), 0); err != nil {
		t.Fatalf("the thief's release: %v", err)
	}
	s := h.waitFinished([]string{name}, 30*time.Second)[name]
	h.mustIssue(s) // one certificate from the CA
	if s.Calls["uploadCertificate"] != 1 {
		t.Fatalf("%d uploads, want 1", s.Calls["uploadCertificate"])
	}
	if _, most, _ := slow.stats(name); most != 1 {
		t.Fatalf("%d CA calls at once for one process", most)
	}
}

// waitCA waits until the slow CA is working on a request, and returns its key.
func waitCA(t *testing.T, slow *slowCA) string {
	t.Helper()
	select {
	case key := <-slow.started:
		return key
	case <-time.After(30 * time.Second):
		t.Fatal("the CA was never asked")
		return ""
	}
}

// assertReleased checks that another owner can lease name at once: the stopped engine released
// it instead of leaving it to expire. It hands the record back.
func (h *harness) assertReleased(name string) *journal.Record {
	h.t.Helper()
	ctx := context.Background()
	got, err := h.store.Lease(ctx, "peer", time.Now(), time.Minute, 10)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, r := range got {
		if r.Name == name {
			if err := h.store.Update(ctx, "peer", r, time.Now(), 0); err != nil {
				h.t.Fatal(err)
			}
			return r
		}
	}
	h.t.Fatalf("%s is still leased after the engine stopped", name)
	return nil
}

// assertNothingFailed checks that the stop decided no failure.
func (h *harness) assertNothingFailed(name string) {
	h.t.Helper()
	if n := h.Logs.FilterMessage("process will fail").Len(); n != 0 {
		h.t.Errorf("%d \"process will fail\" lines for work only interrupted by the stop", n)
	}
	if n := failuresDecided(h); n != 0 {
		h.t.Errorf("%d transitions to failing, want 0", n)
	}
	if s, _ := h.emu.Process(name); s.Finished() || s.Calls["setFailure"] != 0 {
		h.t.Errorf("the process was ended by the stop: state %s, calls %v", s.State, s.Calls)
	}
}

// A stop during a CA call of a connector that cannot recover: the call finishes within the
// grace period, its certificate is journaled, the lease is released, and Run returns; the next
// run uploads that certificate without asking the CA again.
func TestStopLetsCACallFinish(t *testing.T) {
	var slow *slowCA
	h := newHarness(t, harnessOptions{
		lease: time.Second,
		grace: 20 * time.Second,
		extraCAs: func(builtin *local.Connector) map[string]ca.Connector {
			slow = newSlowCA(builtin, 1500*time.Millisecond)
			return map[string]ca.Connector{"slow": slow}
		},
	})
	name := h.start(emulator.ProcessSpec{CARef: "slow", KeyType: "ecdsa"})
	waitCA(t, slow)
	if err := h.StopEngine(); err != nil { // returns only once the step finished and was journaled
		t.Fatalf("Run: %v", err)
	}

	rec := h.assertReleased(name)
	if rec.State != journal.StateIssued || rec.CAInFlight || rec.CertificatePEM == "" {
		t.Fatalf("record %s, CA in flight %v, certificate %d bytes; want the issued certificate journaled", rec.State, rec.CAInFlight, len(rec.CertificatePEM))
	}
	block, _ := pem.Decode([]byte(rec.CertificatePEM))
	if block == nil {
		t.Fatal("journaled certificate is not PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: h.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("journaled certificate does not chain to the CA: %v", err)
	}
	if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, rec.Process.SPKI) {
		t.Fatal("journaled certificate is not for the device key")
	}
	h.assertNothingFailed(name)
	if slow.interruptions() != 0 {
		t.Fatal("the stop cut the CA call")
	}

	h.RestartEngine()
	s := h.waitFinished([]string{name}, 30*time.Second)[name]
	if got := h.mustIssue(s); !got.Equal(leaf) { // the CA issued once
		t.Fatal("uploaded another certificate than the one journaled before the stop")
	}
	if calls, _, _ := slow.stats(name); calls != 1 {
		t.Fatalf("the CA was asked %d times", calls)
	}
}

// A grace period shorter than the CA call: the call is cancelled when it ends, the record
// stays as journaled (the CA request in flight), the lease is released, and nothing is failed
// by the stop itself.
func TestStopGraceShorterThanCACall(t *testing.T) {
	var slow *slowCA
	h := newHarness(t, harnessOptions{
		grace: 200 * time.Millisecond,
		extraCAs: func(builtin *local.Connector) map[string]ca.Connector {
			slow = newSlowCA(builtin, time.Minute)
			return map[string]ca.Connector{"slow": slow}
		},
	})
	name := h.start(emulator.ProcessSpec{CARef: "slow"})
	waitCA(t, slow)
	if err := h.StopEngine(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, _, running := slow.stats(name); running != 0 || slow.interruptions() != 1 {
		t.Fatalf("Run returned with the CA call running (%d) or not cut (%d interruptions)", running, slow.interruptions())
	}
	rec := h.assertReleased(name)
	if rec.State != journal.StateSigned || !rec.CAInFlight || rec.FailureMessage != "" || rec.CertificatePEM != "" {
		t.Fatalf("record %s, CA in flight %v, failure %q; want it as journaled before the CA call", rec.State, rec.CAInFlight, rec.FailureMessage)
	}
	h.assertNothingFailed(name)
	if h.local.Issued(name) != 0 {
		t.Fatal("the CA issued although the call was cut")
	}
	if got := count(h.metrics.ShutdownStepsCut); got != 1 {
		t.Fatalf("shutdown_steps_cut_total = %d, want 1", got)
	}
}

// hangingPolls makes operation polls hang, once armed, until the caller gives up, and says when
// the first one arrived: a poll in flight for as long as the test needs.
type hangingPolls struct {
	armed   atomic.Bool
	arrived chan struct{}
	once    sync.Once
}

func (p *hangingPolls) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.armed.Load() && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/operations/") {
			p.once.Do(func() { close(p.arrived) })
			<-r.Context().Done()
			return
		}
		next.ServeHTTP(w, r)
	})
}

// A stop that cuts a poll of the signing operation short decides nothing: a cancelled call is
// not a failure of the process.
func TestStopDuringPollDecidesNothing(t *testing.T) {
	polls := &hangingPolls{arrived: make(chan struct{})}
	h := newHarness(t, harnessOptions{grace: 100 * time.Millisecond, rest: polls.wrap})
	name := h.start(emulator.ProcessSpec{SignDelay: time.Hour})
	ctx := context.Background()
	waitFor(t, 20*time.Second, func() bool {
		rec, err := h.store.Get(ctx, name)
		return err == nil && rec.State == journal.StateSignRequested && rec.Operation != ""
	})
	polls.armed.Store(true)
	select {
	case <-polls.arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("no poll arrived")
	}
	if err := h.StopEngine(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	polls.armed.Store(false)
	if got := count(h.metrics.StepsInterrupted); got != 1 {
		t.Fatalf("steps_interrupted_total = %d, want the poll cut by the stop", got)
	}
	rec := h.assertReleased(name)
	if rec.State != journal.StateSignRequested || rec.FailureMessage != "" {
		t.Fatalf("record %s, failure %q; want it waiting for the signature", rec.State, rec.FailureMessage)
	}
	h.assertNothingFailed(name)
}
