package emulator

import (
	"context"
	"testing"
	"time"

	cm "google.golang.org/api/chromemanagement/v1"

	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend/frontendtest"
)

// TestInjectTargetsOneProcess: a fault aimed at one process is consumed by that process's calls
// only, however many other processes call meanwhile, and every answer it gives is counted in
// Calls and Injected of that process alone.
func TestInjectTargetsOneProcess(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	target := v.start(t, ProcessSpec{KeyType: KeyECDSA})
	other := v.start(t, ProcessSpec{KeyType: KeyECDSA})
	if err := v.emu.Inject(frontend.Fault{Method: MethodClaim, Process: target, Times: 2, Status: 429, RetryAfter: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	claim := func(name string) error {
		_, err := v.api.Claim(name, &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{CallerInstanceId: "a"}).Do()
		return err
	}
	if err := claim(other); err != nil {
		t.Fatalf("claim of the other process: %v", err)
	}
	for i := range 2 {
		gerr := frontendtest.WantError(t, claim(target), 429, "RESOURCE_EXHAUSTED")
		if got := gerr.Header.Get("Retry-After"); got != "2" {
			t.Errorf("call %d: Retry-After %q, want 2", i, got)
		}
	}
	if n := v.emu.PendingFaults(); n != 0 {
		t.Errorf("PendingFaults = %d after the fault was used up, want 0", n)
	}
	if err := claim(target); err != nil {
		t.Fatalf("claim after the fault: %v", err)
	}
	s, o := v.snap(t, target), v.snap(t, other)
	if s.Calls[MethodClaim] != 3 || s.Injected[MethodClaim] != 2 || s.ClaimedBy != "a" {
		t.Errorf("target: calls %v injected %v claimed by %q; want 3 claims, 2 injected, claimed", s.Calls, s.Injected, s.ClaimedBy)
	}
	if o.Calls[MethodClaim] != 1 || len(o.Injected) != 0 {
		t.Errorf("other: calls %v injected %v; want 1 claim, none injected", o.Calls, o.Injected)
	}
}

// TestInjectAfterApply: a fault after apply lets the change happen and answers the status asked
// for, so the caller sees an error for a call that took effect.
func TestInjectAfterApply(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	name := v.start(t, ProcessSpec{KeyType: KeyECDSA})
	if err := v.emu.Inject(frontend.Fault{Method: MethodClaim, Process: name, Times: 1, Status: 504, AfterApply: true}); err != nil {
		t.Fatal(err)
	}
	_, err := v.api.Claim(name, &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{CallerInstanceId: "a"}).Do()
	frontendtest.WantError(t, err, 504, "DEADLINE_EXCEEDED")
	s := v.snap(t, name)
	if s.State != StateClaimed || s.Injected[MethodClaim] != 1 || s.Calls[MethodClaim] != 1 {
		t.Errorf("state %s calls %v injected %v; want claimed, 1 call, 1 injected", s.State, s.Calls, s.Injected)
	}
}

func TestInjectRejectsBadFaults(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	for _, f := range []frontend.Fault{
		{Method: MethodGet, Times: 0, Status: 500},
		{Method: MethodGet, Times: 1, Status: 200},
		{Method: MethodGet, Times: 1, Status: 600, AfterApply: true},
		{Method: MethodGet, Times: 1, Status: 429, RetryAfter: -time.Second},
	} {
		if err := v.emu.Inject(f); err == nil {
			t.Errorf("Inject(%+v) = nil, want an error", f)
		}
	}
	if n := v.emu.PendingFaults(); n != 0 {
		t.Errorf("PendingFaults = %d after refused faults, want 0", n)
	}
}

// TestNotify publishes the notifications of unpublished processes in the reverse order of their
// creation, and one of them twice: the subscription delivers each as often as it was published,
// in its process's encoding.
func TestNotify(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	first := v.start(t, ProcessSpec{KeyType: KeyECDSA, Encoding: EncodingProto, NoPublish: true})
	second := v.start(t, ProcessSpec{KeyType: KeyECDSA, Encoding: EncodingProto, NoPublish: true})
	ctx := context.Background()
	for _, n := range []string{second, first, second} {
		if err := v.emu.Notify(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.emu.Notify(ctx, "customers/C0demo/certificateProvisioningProcesses/none"); err == nil {
		t.Error("Notify of an unknown process = nil, want an error")
	}
	got := map[string]int{}
	for _, m := range receive(t, v.emu, 3) {
		id, _ := decodeProto(t, m)
		got[id]++
	}
	if got[v.snap(t, second).ID()] != 2 || got[v.snap(t, first).ID()] != 1 {
		t.Errorf("received %v; want the second process twice and the first once", got)
	}
}
