package engine

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/errclass"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Timing of the scene's engine. The fake clock makes every deadline exact.
const (
	poll         = time.Second
	maxPoll      = time.Minute
	backoff      = time.Second
	maxBackoff   = 5 * time.Minute
	retryFor     = time.Hour
	lease        = 2 * time.Minute
	signDeadline = 30 * time.Minute
)

// scene is an engine on the fake API, the fake clock and a memory journal, with the built-in CA
// behind two connections: "builtin" as it is and "scripted" in front of it.
type scene struct {
	t        *testing.T
	clk      *clocktest.Clock
	api      *fakeAPI
	store    journal.Store
	e        *Engine
	local    *local.Connector
	scripted *scriptedCA
	roots    *x509.CertPool
}

func newScene(t *testing.T) *scene {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, err := local.CreateCA(dir, "ecdsa", "engine test CA", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := local.New(ca.Settings{"certificateFile": certFile, "keyFile": keyFile, "ledgerFile": filepath.Join(dir, "ledger.jsonl")}, ca.Env{Name: "builtin"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	tmpl, err := csr.Compile(csr.Spec{Subject: csr.Subject{CommonName: "{{.Device.SerialNumber}}"},
		KeyUsage: []string{"digitalSignature"}, ExtKeyUsage: []string{"clientAuth"}, TemplateName: "DeviceTemplate"})
	if err != nil {
		t.Fatal(err)
	}
	// Near the wall clock: the CA dates its certificates by it, and the engine checks them by
	// its own.
	x := &scene{t: t, clk: clocktest.New(time.Now().Truncate(time.Second)), api: newFakeAPI(), store: journal.NewMemory(),
		local: conn, scripted: &scriptedCA{inner: conn}, roots: x509.NewCertPool()}
	x.roots.AddCert(conn.Certificate())
	x.e, err = New(Options{
		InstanceID: "adapter-1", API: x.api, Store: x.store, Now: x.clk.Now, Registerer: prometheus.NewRegistry(),
		Profiles: map[string]*Profile{"device": {Template: tmpl, TemplateName: "DeviceTemplate", Validity: 24 * time.Hour, SignDeadline: signDeadline}},
		CAs: map[string]*CAConnection{
			"builtin":  {Connector: conn, Timeout: 10 * time.Second},
			"scripted": {Connector: x.scripted, Timeout: 10 * time.Second},
		},
		Workers: 1, PollInterval: poll, MaxPollInterval: maxPoll, LeaseDuration: lease,
		Retry: config.Retry{InitialBackoff: backoff, MaxBackoff: maxBackoff, MaxDuration: retryFor},
	})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// start has Google start a process for the device profile on caConn and the engine admit it.
func (x *scene) start(id, caConn string) string {
	x.t.Helper()
	name := x.api.add(x.t, id, "device", caConn)
	if err := x.e.Admit(context.Background(), name); err != nil {
		x.t.Fatalf("admit %s: %v", name, err)
	}
	return name
}

// run works every record due at the clock's time, as Run's workers would, until none is due; it
// returns name's record as journaled.
func (x *scene) run(name string) *journal.Record {
	x.t.Helper()
	ctx := context.Background()
	for range 100 {
		now := x.clk.Now()
		recs, err := x.store.Lease(ctx, x.e.owner, now, lease, 10)
		if err != nil {
			x.t.Fatal(err)
		}
		if len(recs) == 0 {
			return x.record(name)
		}
		for _, rec := range recs {
			x.e.work(ctx, ctx, rec, now, nil)
		}
	}
	x.t.Fatal("records still due after 100 rounds")
	return nil
}

func (x *scene) record(name string) *journal.Record {
	x.t.Helper()
	rec, err := x.store.Get(context.Background(), name)
	if err != nil {
		x.t.Fatal(err)
	}
	return rec
}

// untilDue advances the clock to name's next due time and runs it.
func (x *scene) untilDue(name string) *journal.Record {
	x.t.Helper()
	rec := x.record(name)
	if d := rec.NextDue.Sub(x.clk.Now()); d > 0 {
		x.clk.Advance(d)
	}
	return x.run(name)
}

// signed runs name up to its signData, has the device sign, and runs on.
func (x *scene) signed(name string) *journal.Record {
	x.t.Helper()
	if rec := x.run(name); rec.State != journal.StateSignRequested || !x.api.view(name).p.SignRequested() {
		x.t.Fatalf("%s: state %s (%s), want sign_requested", name, rec.State, rec.FailureMessage)
	}
	x.api.sign(x.t, name, false)
	return x.untilDue(name)
}

// ended checks that name ended in state with outcome, its failure message containing failure,
// and Google's view agreeing.
func (x *scene) ended(rec *journal.Record, state journal.State, outcome, failure string) {
	x.t.Helper()
	if rec.State != state || rec.Outcome != outcome || !strings.Contains(rec.FailureMessage, failure) {
		x.t.Fatalf("%s: state %s, outcome %q, failure %q; want %s, %q, a failure containing %q (last error %q)",
			rec.Name, rec.State, rec.Outcome, rec.FailureMessage, state, outcome, failure, rec.LastError)
	}
}

// issuedToDevice checks that Google holds a certificate for the device key from the built-in CA.
func (x *scene) issuedToDevice(name string) {
	x.t.Helper()
	g := x.api.view(name)
	certs, err := pemutil.ParseCertificates([]byte(g.p.IssuedCertificate))
	if err != nil {
		x.t.Fatalf("%s: Google holds no certificate: %v", name, err)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: x.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		x.t.Fatalf("%s: %v", name, err)
	}
	if string(certs[0].RawSubjectPublicKeyInfo) != string(g.p.SPKI) {
		x.t.Fatalf("%s: the certificate is not for the device key", name)
	}
}

// TestAdmitBranches: what Google answers when a notification is admitted decides whether there
// is a record, and an admission that may pass later says when to try again.
func TestAdmitBranches(t *testing.T) {
	tests := []struct {
		name      string
		prepare   func(x *scene, name string)
		recorded  bool
		retryFrom time.Duration // > 0: Admit fails, to be tried again no sooner
	}{
		{"claimed", func(*scene, string) {}, true, 0},
		{"gone", func(x *scene, name string) { x.api.mu.Lock(); delete(x.api.procs, name); x.api.mu.Unlock() }, false, 0},
		{"already ended", func(x *scene, name string) {
			x.api.edit(name, func(p *process.Process) { p.FailureMessage = "cancelled by the administrator" })
		}, false, 0},
		{"claimed by another instance", func(x *scene, name string) { x.api.procs[name].owner = "adapter-2" }, false, 0},
		{"get rate limited", func(x *scene, name string) {
			x.api.failNext("get", fault{err: httpError("get", name, http.StatusTooManyRequests, 30*time.Second)})
		}, false, 30 * time.Second},
		{"claim unavailable", func(x *scene, name string) {
			x.api.failNext("claim", fault{err: httpError("claim", name, http.StatusServiceUnavailable, 0)})
		}, false, backoff},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := newScene(t)
			name := x.api.add(t, "P1", "device", "builtin")
			tc.prepare(x, name)
			err := x.e.Admit(context.Background(), name)
			_, gerr := x.store.Get(context.Background(), name)
			if recorded := gerr == nil; recorded != tc.recorded {
				t.Fatalf("recorded %v (%v), want %v", recorded, gerr, tc.recorded)
			}
			if tc.retryFrom == 0 {
				if err != nil {
					t.Fatalf("Admit = %v, want nil: the notification needs no more work", err)
				}
				return
			}
			var ra interface{ RetryAfter() time.Duration }
			if !errors.As(err, &ra) || ra.RetryAfter() < tc.retryFrom {
				t.Fatalf("Admit = %v, want an error to retry no sooner than %s", err, tc.retryFrom)
			}
		})
	}
}

// TestGoogleRefusals: a call Google refuses, or whose answer is lost, is followed by a read of
// the process before anything is decided or sent again, so that signData, the upload and
// setFailure each arrive once, and the process ends as Google's view says.
func TestGoogleRefusals(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(x *scene, name string)
		// drive takes the process from admission to its end.
		drive            func(x *scene, name string) *journal.Record
		state            journal.State
		outcome, failure string
		signDataArrived  int
		issued           bool
	}{
		{"signData refused", func(x *scene, name string) {
			x.api.failNext("signData", fault{err: httpError("signData", name, http.StatusBadRequest, 0)})
		}, (*scene).runToEnd, journal.StateFailed, "failed", "Google refused asking the device to sign", 0, false},
		{"signData refused after it landed", func(x *scene, name string) {
			x.api.failNext("signData", fault{err: httpError("signData", name, http.StatusConflict, 0), landed: true})
		}, (*scene).signAndEnd, journal.StateUploaded, "issued", "", 1, true},
		{"signData lost before it arrived", func(x *scene, name string) {
			x.api.failNext("signData", fault{err: httpError("signData", name, http.StatusServiceUnavailable, 0)})
		}, func(x *scene, name string) *journal.Record {
			x.run(name)      // signData fails on the way
			x.untilDue(name) // the process shows it never arrived: this one is the first
			return x.signAndEnd(name)
		}, journal.StateUploaded, "issued", "", 1, true},
		{"signData answer lost after it arrived", func(x *scene, name string) {
			x.api.failNext("signData", fault{err: httpError("signData", name, http.StatusGatewayTimeout, 0), landed: true})
		}, (*scene).signAndEnd, journal.StateUploaded, "issued", "", 1, true},
		{"operation failed by Google", func(*scene, string) {}, func(x *scene, name string) *journal.Record {
			x.run(name)
			x.api.edit(name, func(p *process.Process) { p.FailureMessage = "the device reported an invalid signature" })
			return x.untilDue(name)
		}, journal.StateFailed, "failed_by_google", "", 1, false},
		{"poll refused", func(x *scene, name string) {
			x.api.failNext("operations.get", fault{err: httpError("operations.get", name, http.StatusForbidden, 0)})
		}, (*scene).runToEnd, journal.StateFailed, "failed", "waiting for the device signature failed", 1, false},
		{"upload refused after it landed", func(x *scene, name string) {
			x.api.failNext("uploadCertificate", fault{err: httpError("uploadCertificate", name, http.StatusBadRequest, 0), landed: true})
		}, (*scene).signAndEnd, journal.StateUploaded, "issued", "", 1, true},
		{"upload refused, the process failed meanwhile", func(x *scene, name string) {
			// The device gives up while the CA is issuing: the upload is refused, and the read
			// of the process says why.
			x.scripted.hook = func(*ca.Request) {
				x.api.edit(name, func(p *process.Process) { p.FailureMessage = "timed out on the device" })
			}
		}, (*scene).signAndEnd, journal.StateFailed, "failed_by_google", "", 1, false},
		{"upload refused outright", func(x *scene, name string) {
			x.api.failNext("uploadCertificate", fault{err: httpError("uploadCertificate", name, http.StatusForbidden, 0)})
		}, (*scene).signAndEnd, journal.StateFailed, "failed", "Google refused uploading the certificate", 1, false},
		{"setFailure refused", func(x *scene, name string) {
			x.api.failNext("signData", fault{err: httpError("signData", name, http.StatusBadRequest, 0)})
			x.api.failNext("setFailure", fault{err: httpError("setFailure", name, http.StatusForbidden, 0)})
		}, (*scene).runToEnd, journal.StateFailed, "failure_unreported", "Google refused asking the device to sign", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := newScene(t)
			name := x.start("P1", "scripted")
			tc.prepare(x, name)
			rec := tc.drive(x, name)
			x.ended(rec, tc.state, tc.outcome, tc.failure)
			g := x.api.view(name)
			if g.signed != tc.signDataArrived {
				t.Errorf("signData arrived %d times, want %d", g.signed, tc.signDataArrived)
			}
			if g.mutated > 1 {
				t.Errorf("%d uploads and setFailures arrived, want at most one", g.mutated)
			}
			if tc.issued {
				x.issuedToDevice(name)
			}
			if tc.state == journal.StateFailed && tc.outcome == "failed" && g.p.FailureMessage != rec.FailureMessage {
				t.Errorf("Google shows %q, the journal %q", g.p.FailureMessage, rec.FailureMessage)
			}
		})
	}
}

// runToEnd runs name, moving the clock to each next due time, until it ended.
func (x *scene) runToEnd(name string) *journal.Record {
	x.t.Helper()
	rec := x.run(name)
	for i := 0; !rec.State.Final(); i++ {
		if i == 200 {
			x.t.Fatalf("%s: still %s after 200 steps", name, rec.State)
		}
		rec = x.untilDue(name)
	}
	return rec
}

// signAndEnd runs name to its signData, has the device sign, and runs it to its end.
func (x *scene) signAndEnd(name string) *journal.Record {
	x.t.Helper()
	x.signed(name)
	return x.runToEnd(name)
}

// TestRetryExhaustion: transient failures are retried with backoff (no sooner than the server's
// Retry-After, no later than the maximum backoff) until the step has failed for
// engine.retry.maxDuration, and the process then fails with a message that says what kept
// failing; a failure that cannot be reported ends as failure_unreported.
func TestRetryExhaustion(t *testing.T) {
	tests := []struct {
		name   string
		caConn string
		fail   func(x *scene, name string) // scripts the failures of a whole hour
		// first is the least delay before the first retry.
		first            time.Duration
		state            journal.State
		outcome, failure string
	}{
		{"upload", "builtin", func(x *scene, name string) {
			for range 200 {
				x.api.failNext("uploadCertificate", fault{err: httpError("uploadCertificate", name, http.StatusTooManyRequests, 2*time.Minute)})
			}
		}, 2 * time.Minute, journal.StateFailed, "failed", "uploading the certificate kept failing for 1h0m0s"},
		{"CA", "scripted", func(x *scene, name string) {
			for range 200 {
				x.scripted.errs = append(x.scripted.errs, ca.Retryable(errors.New("HSM busy"), 90*time.Second))
			}
		}, 90 * time.Second, journal.StateFailed, "failed", "the CA kept failing for 1h0m0s: HSM busy"},
		{"setFailure", "scripted", func(x *scene, name string) {
			x.scripted.errs = append(x.scripted.errs, ca.Permanentf("subject not allowed"))
			for range 200 {
				x.api.failNext("setFailure", fault{err: httpError("setFailure", name, http.StatusBadGateway, 0)})
			}
		}, backoff, journal.StateFailed, "failure_unreported", "the CA refused the request: subject not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := newScene(t)
			name := x.start("P1", tc.caConn)
			tc.fail(x, name)
			rec := x.signed(name) // up to the first failure
			if rec.Attempts != 1 {
				t.Fatalf("state %s, attempts %d: want the first retry scheduled", rec.State, rec.Attempts)
			}
			started, failingStep := rec.StepStarted, rec.State
			if wait := rec.NextDue.Sub(x.clk.Now()); wait < tc.first || wait > maxBackoff {
				t.Fatalf("first retry in %s, want between %s and %s", wait, tc.first, maxBackoff)
			}
			var gaveUp time.Time
			for !rec.State.Final() {
				if x.clk.Now().Sub(started) > 3*retryFor {
					t.Fatalf("still %s after %s", rec.State, x.clk.Now().Sub(started))
				}
				rec = x.untilDue(name)
				if gaveUp.IsZero() && rec.State != failingStep {
					gaveUp = x.clk.Now()
				}
			}
			if d := gaveUp.Sub(started); d < retryFor {
				t.Fatalf("gave up on %s after %s, before the retry budget of %s", failingStep, d, retryFor)
			}
			x.ended(rec, tc.state, tc.outcome, tc.failure)
		})
	}
}

// TestPendingDeadline: a CA that accepts the request but has not issued is asked again on its
// own schedule, with its ticket, until it issues; one that stays pending past
// engine.retry.maxDuration fails the process.
func TestPendingDeadline(t *testing.T) {
	t.Run("issues later", func(t *testing.T) {
		x := newScene(t)
		name := x.start("P1", "scripted")
		x.scripted.errs = []error{&ca.PendingError{Ticket: "T-1", RetryAfter: 3 * time.Minute, Reason: "awaiting approval"},
			&ca.PendingError{Ticket: "T-2"}}
		rec := x.signed(name)
		if rec.State != journal.StateCAPending || rec.CATicket != "T-1" || rec.NextDue.Sub(x.clk.Now()) != 3*time.Minute {
			t.Fatalf("state %s, ticket %q, next in %s; want ca_pending, T-1, in the CA's 3m", rec.State, rec.CATicket, rec.NextDue.Sub(x.clk.Now()))
		}
		rec = x.untilDue(name)
		if rec.CATicket != "T-2" || rec.NextDue.Sub(x.clk.Now()) != maxPoll {
			t.Fatalf("ticket %q, next in %s; want T-2, and the longest poll interval without a hint", rec.CATicket, rec.NextDue.Sub(x.clk.Now()))
		}
		x.ended(x.runToEnd(name), journal.StateUploaded, "issued", "")
		reqs := x.scripted.requests()
		if len(reqs) != 3 || reqs[1].Ticket != "T-1" || reqs[2].Ticket != "T-2" {
			t.Fatalf("the CA was asked %d times, tickets %q, %q; want three, resuming T-1 then T-2", len(reqs), reqs[1].Ticket, reqs[2].Ticket)
		}
		x.issuedToDevice(name)
	})
	t.Run("never issues", func(t *testing.T) {
		x := newScene(t)
		name := x.start("P1", "scripted")
		for range 100 {
			x.scripted.errs = append(x.scripted.errs, &ca.PendingError{Ticket: "T", RetryAfter: 20 * time.Minute})
		}
		rec := x.signed(name)
		pendingSince := rec.StepStarted
		for rec.State == journal.StateCAPending {
			rec = x.untilDue(name)
		}
		if waited := x.clk.Now().Sub(pendingSince); waited < retryFor {
			t.Fatalf("gave up after %s pending, before %s", waited, retryFor)
		}
		x.ended(x.runToEnd(name), journal.StateFailed, "failed", "the CA did not issue the certificate within 1h0m0s")
	})
}

// TestSignDeadline: the operation is polled with a doubling interval, capped, and never past
// the profile's signDeadline; a device that has not signed by then fails the process, and the
// user is told how long it had.
func TestSignDeadline(t *testing.T) {
	x := newScene(t)
	name := x.start("P1", "builtin")
	rec := x.run(name)
	sent := x.clk.Now()
	var waits []time.Duration
	for rec.State == journal.StateSignRequested {
		before := x.clk.Now()
		rec = x.untilDue(name)
		waits = append(waits, x.clk.Now().Sub(before))
	}
	want := []time.Duration{poll, poll, 2 * poll, 4 * poll, 8 * poll, 16 * poll, 32 * poll, maxPoll}
	for i, w := range want {
		if waits[i] != w {
			t.Fatalf("poll waits %v, want them to start %v", waits, want)
		}
	}
	if last := x.clk.Now().Sub(sent); last <= signDeadline || last > signDeadline+maxPoll {
		t.Fatalf("failed %s after signData, want just after the deadline of %s", last, signDeadline)
	}
	x.ended(x.runToEnd(name), journal.StateFailed, "failed", "the device did not sign the certificate request within 30m0s")
	if got := testutil.ToFloat64(x.e.m.SignDeadlineExceeded); got != 1 {
		t.Errorf("sign deadlines exceeded: %v, want 1", got)
	}
	if x.api.view(name).signed != 1 {
		t.Error("signData was sent again while waiting")
	}
}

// TestLongWaitPolls: a device that has not signed within engine.longWaitAfter is polled every
// longWaitPollInterval from then on (the defaults: 10 minutes, then every 5), at most 12 times
// an hour, and is still noticed when it signs, with signData sent once.
func TestLongWaitPolls(t *testing.T) {
	x := newScene(t)
	name := x.start("P1", "builtin")
	if rec := x.run(name); rec.State != journal.StateSignRequested {
		t.Fatalf("state %s after admission, want signData sent", rec.State)
	}
	sent := x.clk.Now()
	var polls []time.Duration // since signData
	for x.clk.Now().Sub(sent) < 25*time.Minute {
		rec := x.untilDue(name)
		if rec.State != journal.StateSignRequested {
			t.Fatalf("state %s after %s: want still waiting", rec.State, x.clk.Now().Sub(sent))
		}
		polls = append(polls, x.clk.Now().Sub(sent))
	}
	var early, late int
	for i, p := range polls {
		if p <= config.DefaultLongWaitAfter {
			early++
			continue
		}
		late++
		if gap := p - polls[i-1]; gap != config.DefaultLongWaitPollInterval && polls[i-1] >= config.DefaultLongWaitAfter {
			t.Errorf("poll at %s came %s after the previous, want every %s past %s", p, gap, config.DefaultLongWaitPollInterval, config.DefaultLongWaitAfter)
		}
	}
	// Up to 10 minutes the doubling schedule capped at a minute: 1, 2, 4, …, 32 s, then each
	// minute; past 10 minutes one poll every 5 minutes: 12 an hour.
	if early < 10 || late < 2 || late > 4 {
		t.Errorf("polls at %v: %d up to %s and %d after, want the minute schedule first and then every %s",
			polls, early, config.DefaultLongWaitAfter, late, config.DefaultLongWaitPollInterval)
	}
	x.api.sign(t, name, false)
	x.ended(x.runToEnd(name), journal.StateUploaded, "issued", "")
	x.issuedToDevice(name)
	if x.api.view(name).signed != 1 {
		t.Error("signData was sent again while waiting")
	}
}

// TestBadSignature: a signature that does not verify against the device key fails the process
// before any CA sees the request.
func TestBadSignature(t *testing.T) {
	x := newScene(t)
	name := x.start("P1", "scripted")
	x.run(name)
	x.api.sign(t, name, true)
	x.ended(x.runToEnd(name), journal.StateFailed, "failed", "the device signature does not verify against the device key")
	if n := len(x.scripted.requests()); n != 0 {
		t.Fatalf("the CA was asked %d times", n)
	}
	if got := testutil.ToFloat64(x.e.m.BadSignatures); got != 1 {
		t.Errorf("bad signatures: %v, want 1", got)
	}
}

// TestLeaseLoss: a worker whose lease ran out and was granted to another acts on nothing: its
// signData is not sent, its CA call's outcome is not written over the new holder's, and the CA
// issues once, the new holder recovering the certificate of the call it found in flight.
func TestLeaseLoss(t *testing.T) {
	t.Run("before signData", func(t *testing.T) {
		x := newScene(t)
		name := x.start("P1", "builtin")
		ctx := context.Background()
		recs, err := x.store.Lease(ctx, x.e.owner, x.clk.Now(), lease, 1)
		if err != nil || len(recs) != 1 {
			t.Fatalf("lease: %v, %d records", err, len(recs))
		}
		stale := recs[0]
		x.clk.Advance(lease + time.Second)
		if other, err := x.store.Lease(ctx, "adapter-1/other", x.clk.Now(), lease, 1); err != nil || len(other) != 1 {
			t.Fatalf("the other worker's lease: %v", err)
		}
		// The stalled worker still believes its lease fresh; the journal knows better.
		x.e.work(ctx, ctx, stale, x.clk.Now(), nil)
		if n := x.api.count("signData"); n != 0 {
			t.Fatalf("signData sent %d times under a lost lease", n)
		}
		if rec := x.record(name); rec.State != journal.StateClaimed {
			t.Fatalf("state %s, want the record as the new holder has it (claimed)", rec.State)
		}
		if got := testutil.ToFloat64(x.e.m.StepsAbandoned.WithLabelValues("lease_lost")); got != 1 {
			t.Errorf("steps abandoned for a lost lease: %v, want 1", got)
		}
	})
	t.Run("during the CA call", func(t *testing.T) {
		x := newScene(t)
		name := x.start("P1", "builtin")
		x.run(name)
		x.api.sign(t, name, false)
		x.clk.Advance(poll)
		ctx := context.Background()
		// The first holder's CA call outlasts its lease: another worker of the same instance
		// leases the record meanwhile.
		x.e.Reconfigure(x.e.o.Profiles, map[string]*CAConnection{"builtin": {Timeout: 10 * time.Second, Connector: &hookCA{Connector: x.local, hook: func() {
			x.clk.Advance(lease + time.Second)
			if other, err := x.store.Lease(ctx, "adapter-1/other", x.clk.Now(), lease, 1); err != nil || len(other) != 1 {
				t.Errorf("the other worker's lease: %v, %d records", err, len(other))
			}
		}}}})
		x.run(name)
		rec := x.record(name)
		if rec.State != journal.StateSigned || !rec.CAInFlight {
			t.Fatalf("state %s, in flight %v: want the intent the first holder journaled, in flight", rec.State, rec.CAInFlight)
		}
		// The new holder's lease runs out too; the next lease finds the call in flight and asks
		// the CA what it issued instead of asking again.
		x.e.Reconfigure(x.e.o.Profiles, x.e.o.CAs)
		x.clk.Advance(lease + time.Second)
		x.ended(x.runToEnd(name), journal.StateUploaded, "issued", "")
		if n := x.local.Issued(name); n != 1 {
			t.Fatalf("the CA issued %d certificates", n)
		}
		x.issuedToDevice(name)
	})
}

// hookCA calls hook in the middle of every Issue, then issues.
type hookCA struct {
	ca.Connector
	hook func()
}

func (c *hookCA) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	c.hook()
	return c.Connector.Issue(ctx, req)
}

// TestResolvedOnce: the CA is asked with what the profile said when the request was built — the
// template name and validity journaled then — although the profiles changed since, and the new
// profile's templates (which cannot render this process) are never rendered for it.
func TestResolvedOnce(t *testing.T) {
	x := newScene(t)
	name := x.start("P1", "scripted")
	x.run(name)
	broken, err := csr.Compile(csr.Spec{Subject: csr.Subject{CommonName: "{{.User.Email}}"}})
	if err != nil {
		t.Fatal(err)
	}
	x.e.Reconfigure(map[string]*Profile{"device": {Template: broken, TemplateName: "Other", Validity: time.Hour, SignDeadline: time.Minute}}, x.e.o.CAs)
	x.api.sign(t, name, false)
	x.ended(x.runToEnd(name), journal.StateUploaded, "issued", "")
	reqs := x.scripted.requests()
	if len(reqs) != 1 || reqs[0].TemplateName != "DeviceTemplate" || reqs[0].Validity != 24*time.Hour || reqs[0].ProfileName != "device" {
		t.Fatalf("the CA was asked %+v, want once, with the journaled template name and validity", reqs)
	}
}

// TestSCEPProfileDefaults: a process with a scepProfile names no adapter profile, and asks for a
// profile's default validity under the template name it carries.
func TestSCEPProfileDefaults(t *testing.T) {
	x := newScene(t)
	name := x.api.add(t, "P1", "", "scripted")
	x.api.edit(name, func(p *process.Process) {
		p.CAConnectionKind = process.CAConnectionSCEP
		p.SCEPProfile = &process.SCEPProfile{CommonName: "scep-device", TemplateName: "NDESTemplate", KeyUsages: []string{process.KeyUsageSigning}}
	})
	if err := x.e.Admit(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	x.signed(name)
	x.ended(x.runToEnd(name), journal.StateUploaded, "issued", "")
	reqs := x.scripted.requests()
	if len(reqs) != 1 || reqs[0].Validity != config.DefaultValidity || reqs[0].TemplateName != "NDESTemplate" || reqs[0].ProfileName != "" {
		t.Fatalf("the CA was asked %+v, want the default validity and the SCEP template", reqs)
	}
}

// TestFailureMessageLength: a failure message longer than a device shows is cut within 500
// bytes on a character boundary, and that is what the device is told.
func TestFailureMessageLength(t *testing.T) {
	x := newScene(t)
	name := x.start("P1", "scripted")
	x.scripted.errs = []error{ca.Permanentf("%s", strings.Repeat("é", 400))}
	rec := x.signed(name)
	if rec.State != journal.StateFailed || x.api.view(name).p.FailureMessage != rec.FailureMessage || len(rec.FailureMessage) > maxMessageLen || !utf8.ValidString(rec.FailureMessage) ||
		!strings.HasSuffix(rec.FailureMessage, "é...") {
		t.Fatalf("failure message of %d bytes (valid UTF-8: %v): %q", len(rec.FailureMessage), utf8.ValidString(rec.FailureMessage), rec.FailureMessage)
	}
}

// TestRetryableContract: the engine reads the API's errors by class alone; one that states none
// counts as retryable.
func TestRetryableContract(t *testing.T) {
	for _, tc := range []struct {
		err   error
		again bool
		hint  time.Duration
	}{
		{httpError("get", "p", http.StatusServiceUnavailable, 7*time.Second), true, 7 * time.Second},
		{httpError("get", "p", http.StatusBadRequest, 0), false, 0},
		{errors.New("no class"), true, 0},
		{errclass.Mark(errors.New("caller gave up"), errclass.Permanent, 0), false, 0},
	} {
		if again, hint := retryable(tc.err); again != tc.again || hint != tc.hint {
			t.Errorf("retryable(%v) = %v, %s; want %v, %s", tc.err, again, hint, tc.again, tc.hint)
		}
	}
}
