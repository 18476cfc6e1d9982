package frontend

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"
)

// TestFaults: faults are taken in the order injected, by the first calls they match (method and
// process, "" for any), a refusal and a lost response separately, and Pending counts what is left.
func TestFaults(t *testing.T) {
	var f Faults
	for _, fault := range []Fault{
		{Method: "claim", Process: "p1", Times: 1, Status: 429, RetryAfter: 1500 * time.Millisecond},
		{Method: "", Times: 2, Status: 503},
		{Method: "get", Times: 1, AfterApply: true},
	} {
		if err := f.Inject(fault); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.Pending(); n != 4 {
		t.Fatalf("Pending = %d, want 4", n)
	}
	// claim of p2: not the targeted fault; the any-method one answers.
	if e := f.Refusal("claim", "p2", nil); e == nil || e.Code != 503 || e.Status != "UNAVAILABLE" {
		t.Fatalf("claim p2: %+v, want 503", e)
	}
	if e := f.Refusal("claim", "p1", func(int) []any { return []any{"detail"} }); e == nil || e.Code != 429 || e.RetryAfter != 1500*time.Millisecond || len(e.Details) != 1 {
		t.Fatalf("claim p1: %+v, want the targeted 429 with its detail", e)
	}
	if e := f.Refusal("get", "", nil); e == nil || e.Code != 503 {
		t.Fatalf("get: %+v, want the second use of the any-method fault", e)
	}
	if e := f.Refusal("get", "", nil); e != nil {
		t.Fatalf("get: %+v, want no refusal left", e)
	}
	if e := f.LostResponse("claim", "p1"); e != nil {
		t.Fatalf("lost claim: %+v, want none (the lost response is for get)", e)
	}
	if e := f.LostResponse("get", "p9"); e == nil || e.Code != 503 {
		t.Fatalf("lost get: %+v, want 503", e)
	}
	if n := f.Pending(); n != 0 {
		t.Fatalf("Pending = %d, want 0", n)
	}

	rec := httptest.NewRecorder()
	WriteError(rec, &Error{Code: 429, Status: "RESOURCE_EXHAUSTED", Message: "m", RetryAfter: 1500 * time.Millisecond})
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "2" {
		t.Errorf("WriteError: %d, Retry-After %q; want 429, 2 (rounded up)", rec.Code, rec.Header().Get("Retry-After"))
	}

	for _, bad := range []Fault{{Times: 0, Status: 500}, {Times: 1, Status: 200}, {Times: 1, Status: 500, RetryAfter: -time.Second}} {
		if err := f.Inject(bad); err == nil {
			t.Errorf("Inject(%+v) accepted", bad)
		}
	}
}

// TestWaitEndsWithTheClient: the injected latency ends early when the caller gives up.
func TestWaitEndsWithTheClient(t *testing.T) {
	var f Faults
	if !f.Wait(context.Background()) {
		t.Fatal("Wait without latency = false")
	}
	f.SetLatency(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if f.Wait(ctx) {
		t.Fatal("Wait of an hour returned true for a cancelled caller")
	}
}
