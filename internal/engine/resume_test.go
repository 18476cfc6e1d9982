package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/journal"
)

// These tests stand for a restart: the journal holds what a previous run recorded, Google holds
// what really happened, and the engine must reconcile the two without repeating a side effect.

// scene claims a process and has its device sign, as a previous run would have, and returns the
// record that run would have journaled in StateSignRequested.
func (h *harness) scene(spec emulator.ProcessSpec, sign bool) *journal.Record {
	h.t.Helper()
	ctx := context.Background()
	spec.NoPublish = true // the previous run already took the notification
	name := h.start(spec)
	p, err := h.api.Get(ctx, name)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.api.Claim(ctx, name, instanceID); err != nil {
		h.t.Fatal(err)
	}
	tmpl, err := csr.Compile(testProfile("{{.Device.SerialNumber}}", "", time.Minute).Spec())
	if err != nil {
		h.t.Fatal(err)
	}
	req, err := tmpl.Render(p)
	if err != nil {
		h.t.Fatal(err)
	}
	cri, err := csr.BuildCRI(req, p.SPKI)
	if err != nil {
		h.t.Fatal(err)
	}
	alg, _ := csr.AlgorithmFor(p.SPKI)
	now := time.Now()
	rec := &journal.Record{
		Name: name, Process: p, State: journal.StateSignRequested, ProfileName: "device", CAName: spec.CARef,
		SignData: cri, Algorithm: alg, StepStarted: now, NextDue: now, SignDeadline: now.Add(time.Minute), Created: now,
	}
	if sign {
		if _, err := h.api.SignData(ctx, name, cri, alg); err != nil {
			h.t.Fatal(err)
		}
		waitFor(h.t, 10*time.Second, func() bool {
			got, err := h.api.Get(ctx, name)
			return err == nil && len(got.Signature) > 0
		})
	}
	return rec
}

func (h *harness) seed(rec *journal.Record) {
	h.t.Helper()
	if created, err := h.store.Create(context.Background(), rec); err != nil || !created {
		h.t.Fatalf("seed %s: %v %v", rec.Name, created, err)
	}
}

func TestResumeNeverResendsSignData(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	// The previous run sent signData but died before recording the operation name.
	rec := h.scene(emulator.ProcessSpec{CARef: "builtin", KeyType: "ecdsa"}, true)
	h.seed(rec)
	s := h.waitFinished([]string{rec.Name}, 20*time.Second)[rec.Name]
	h.mustIssue(s) // asserts signData exactly once and one issuance
}

func TestResumeSendsSignDataGoogleNeverReceived(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	// The previous run journaled the intent, then died before the request left.
	rec := h.scene(emulator.ProcessSpec{CARef: "builtin"}, false)
	h.seed(rec)
	h.mustIssue(h.waitFinished([]string{rec.Name}, 20*time.Second)[rec.Name])
}

func TestResumeUploadsJournaledCertificate(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rec := h.scene(emulator.ProcessSpec{CARef: "builtin"}, true)
	p, err := h.api.Get(context.Background(), rec.Name)
	if err != nil {
		t.Fatal(err)
	}
	der, err := csr.Assemble(rec.SignData, rec.Algorithm, p.Signature)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := csr.Verify(der, p.SPKI)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := h.local.Issue(context.Background(), &ca.Request{Key: rec.Name, CSR: parsed, CSRDER: der, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The previous run stored the certificate and died before uploading it.
	rec.State, rec.Signature, rec.CSR = journal.StateIssued, p.Signature, der
	rec.CertificatePEM = string(pemCert(issued.Leaf))
	h.seed(rec)
	s := h.waitFinished([]string{rec.Name}, 20*time.Second)[rec.Name]
	leaf := h.mustIssue(s) // one issuance: the CA was not asked again
	if !leaf.Equal(issued.Leaf) {
		t.Fatal("uploaded a different certificate than the journaled one")
	}
}

func TestResumeRecoversInterruptedCACall(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rec := h.scene(emulator.ProcessSpec{CARef: "builtin"}, true)
	p, _ := h.api.Get(context.Background(), rec.Name)
	der, _ := csr.Assemble(rec.SignData, rec.Algorithm, p.Signature)
	parsed, err := csr.Verify(der, p.SPKI)
	if err != nil {
		t.Fatal(err)
	}
	// The CA issued, but the previous run died before recording the answer.
	issued, err := h.local.Issue(context.Background(), &ca.Request{Key: rec.Name, CSR: parsed, CSRDER: der, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rec.State, rec.Signature, rec.CSR, rec.CAInFlight = journal.StateSigned, p.Signature, der, true
	h.seed(rec)
	s := h.waitFinished([]string{rec.Name}, 20*time.Second)[rec.Name]
	if leaf := h.mustIssue(s); !leaf.Equal(issued.Leaf) {
		t.Fatal("the interrupted request was issued again instead of recovered")
	}
	if count(h.cam.Recovered.WithLabelValues("builtin")) != 1 {
		t.Fatal("recovery not counted")
	}
}

func TestResumeInterruptedCACallWithoutRecovery(t *testing.T) {
	h := newHarness(t, harnessOptions{extraCAs: func(builtin *local.Connector) map[string]ca.Connector {
		return map[string]ca.Connector{"opaque": opaqueCA{builtin}}
	}})
	rec := h.scene(emulator.ProcessSpec{CARef: "opaque"}, true)
	p, _ := h.api.Get(context.Background(), rec.Name)
	rec.State, rec.Signature, rec.CAInFlight = journal.StateSigned, p.Signature, true
	h.seed(rec)
	s := h.waitFinished([]string{rec.Name}, 20*time.Second)[rec.Name]
	if s.State != "failed" || !strings.Contains(s.FailureMessage, "avoid issuing two certificates") {
		t.Fatalf("state %s message %q", s.State, s.FailureMessage)
	}
	if n := h.local.Issued(rec.Name); n != 0 {
		t.Fatalf("CA asked %d times", n)
	}
}

// opaqueCA hides the local CA's ability to recover, like a CA with no lookup by request.
type opaqueCA struct{ inner ca.Connector }

func (o opaqueCA) Issue(ctx context.Context, r *ca.Request) (*ca.Issued, error) {
	return o.inner.Issue(ctx, r)
}

func TestResumeClosesProcessesEndedAtGoogle(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rec := h.scene(emulator.ProcessSpec{CARef: "builtin"}, false)
	// Someone else (an admin, a previous run's lost response) ended it meanwhile.
	if err := h.api.SetFailure(context.Background(), rec.Name, "ended elsewhere"); err != nil {
		t.Fatal(err)
	}
	h.seed(rec)
	h.waitJournalIdle(20 * time.Second)
	got, err := h.store.Get(context.Background(), rec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != journal.StateFailed || got.FinishedAt.IsZero() {
		t.Fatalf("record %s finished %v", got.State, got.FinishedAt)
	}
	s, _ := h.emu.Process(rec.Name)
	if s.SignDataCount != 0 || s.FailureMessage != "ended elsewhere" {
		t.Fatalf("ended process touched: signData %d, message %q", s.SignDataCount, s.FailureMessage)
	}
	if len(got.History) == 0 {
		t.Fatal("no history recorded")
	}
}
