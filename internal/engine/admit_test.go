package engine_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
	"github.com/certprov/certprov-adapter/internal/metrics"
)

// retryHint is what the intake reads from a failed admission.
type retryHint interface {
	error
	RetryAfter() time.Duration
}

// admitter is an engine that only admits (it never runs), on a journal that can fail, against
// the harness's emulator.
func (h *harness) admitter(retry config.Retry) (*engine.Engine, *journaltest.Faulty, *metrics.Engine) {
	h.t.Helper()
	store := journaltest.NewFaulty(journal.NewMemory())
	reg := prometheus.NewRegistry()
	eng, err := engine.New(engine.Options{InstanceID: instanceID, API: h.api, Store: store, Retry: retry, Registerer: reg})
	if err != nil {
		h.t.Fatal(err)
	}
	return eng, store, metrics.NewEngine(reg)
}

// While the journal cannot record a claim, the first admission reads and claims the process
// and the next ones only try to record it: Google already answered. Each failure asks for a
// longer wait before the next attempt, between its doubled floor and twice that, up to
// maxBackoff. Once the journal takes the record, the process is recorded as claimed, with the
// process as read. Failures count per process: another one starts from the initial backoff.
func TestAdmitBacksOffAndReusesItsClaim(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	name := h.start(emulator.ProcessSpec{NoPublish: true})
	const initial, ceiling = 100 * time.Millisecond, 2 * time.Second
	eng, store, m := h.admitter(config.Retry{InitialBackoff: initial, MaxBackoff: ceiling, MaxDuration: time.Minute})
	store.FailWrites(-1, journaltest.ErrDiskFull, journaltest.OpCreate)
	ctx := context.Background()
	for i := range 8 {
		err := eng.Admit(ctx, name)
		hint, ok := errors.AsType[retryHint](err)
		if !ok || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("attempt %d: Admit = %v, want the journal's error with a retry hint", i+1, err)
		}
		lo := min(initial<<i, ceiling)
		if got := hint.RetryAfter(); got < lo || got > min(2*lo, ceiling) {
			t.Errorf("attempt %d: retry after %s, want within [%s, %s]", i+1, got, lo, min(2*lo, ceiling))
		}
	}
	if s, _ := h.emu.Process(name); s.Calls[emulator.MethodGet] != 1 || s.Calls[emulator.MethodClaim] != 1 || s.ClaimedBy != instanceID {
		t.Fatalf("8 failed admissions made %d gets and %d claims (claimed by %q), want 1 each", s.Calls[emulator.MethodGet], s.Calls[emulator.MethodClaim], s.ClaimedBy)
	}
	if got := count(m.AdmissionClaimsReused); got != 7 {
		t.Errorf("certprov_admission_claims_reused_total = %d, want 7", got)
	}
	if got := count(m.AdmissionFailures); got != 8 {
		t.Errorf("certprov_admission_failures_total = %d, want 8", got)
	}

	store.Heal()
	if err := eng.Admit(ctx, name); err != nil {
		t.Fatalf("Admit once the journal is back: %v", err)
	}
	rec, err := store.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := h.emu.Process(name); rec.State != journal.StateClaimed || string(rec.Process.SPKI) != string(s.SPKI) {
		t.Fatalf("record %s for SPKI %x, want claimed for the device's key", rec.State, rec.Process.SPKI)
	}
	if got := count(m.Admissions.WithLabelValues("claimed")); got != 1 {
		t.Errorf("certprov_admissions_total{result=claimed} = %d, want 1", got)
	}

	store.FailWrites(-1, journaltest.ErrDiskFull, journaltest.OpCreate)
	other := h.start(emulator.ProcessSpec{NoPublish: true})
	for _, n := range []string{name, other} {
		err := eng.Admit(ctx, n)
		if n == name {
			if err != nil {
				t.Fatalf("a duplicate admission = %v, want nil (recorded already)", err)
			}
			continue
		}
		if hint, ok := errors.AsType[retryHint](err); !ok || hint.RetryAfter() > 2*initial {
			t.Fatalf("first failure of another process: %v, want a retry after at most %s", err, 2*initial)
		}
	}
}

// Google's Retry-After is honoured: a claim refused with 429 asks the caller to wait at least
// what Google asked (up to maxBackoff), longer than the backoff alone.
func TestAdmitHonoursRetryAfter(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	name := h.start(emulator.ProcessSpec{NoPublish: true})
	eng, _, _ := h.admitter(config.Retry{InitialBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Second, MaxDuration: time.Minute})
	// More 429s than the client's inline retries take.
	if err := h.emu.Inject(frontend.Fault{Method: emulator.MethodClaim, Process: name, Times: 4, Status: 429, RetryAfter: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	err := eng.Admit(context.Background(), name)
	hint, ok := errors.AsType[retryHint](err)
	if !ok || hint.RetryAfter() < 3*time.Second || hint.RetryAfter() > 10*time.Second {
		t.Fatalf("Admit = %v, want a retry after Google's 3s", err)
	}
}
