package frontend

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Fault is one misbehaviour of the front end, injected with Faults.Inject.
type Fault struct {
	// Method is the API method it affects (the emulator's Method* names); "" means any.
	Method string
	// Process is the resource name of the only process it affects; "" means any. A test that
	// runs several processes at once targets one with it, so that the fault lands where the test
	// expects it and not on whichever call comes next. Calls that name no process (Verified
	// Access) match only faults without one.
	Process string
	// Times is how many calls it affects; it must be positive.
	Times int
	// Status is the HTTP status answered with Google's error envelope (400..599). When
	// AfterApply is false the call is not applied; when it is true, 0 means 503.
	Status int
	// RetryAfter > 0 adds a Retry-After header in whole seconds (rounded up).
	RetryAfter time.Duration
	// AfterApply applies the call as usual and then answers Status, as if the response was lost
	// on the way back: the change happened, the caller cannot know it.
	AfterApply bool
}

type rule struct {
	method     string
	process    string
	remaining  int
	status     int
	retryAfter time.Duration
}

// Faults holds the injected faults and latency of the front end. The zero value injects
// nothing; all methods are safe for concurrent use.
type Faults struct {
	mu      sync.Mutex
	refuse  []*rule // answered without applying the call
	lose    []*rule // applied, then answered with an error
	latency time.Duration
}

// Inject queues f. Faults are consumed in the order they were injected, each by the first calls
// it matches; a call consumes at most one fault of each kind (unapplied, after apply).
func (f *Faults) Inject(fault Fault) error {
	if fault.Times <= 0 {
		return fmt.Errorf("inject fault: times %d: want a positive number", fault.Times)
	}
	if fault.AfterApply && fault.Status == 0 {
		fault.Status = 503
	}
	if fault.Status < 400 || fault.Status > 599 {
		return fmt.Errorf("inject fault: status %d: want 400 to 599", fault.Status)
	}
	if fault.RetryAfter < 0 {
		return fmt.Errorf("inject fault: retry after %s: must not be negative", fault.RetryAfter)
	}
	r := &rule{method: fault.Method, process: fault.Process, remaining: fault.Times, status: fault.Status, retryAfter: fault.RetryAfter}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fault.AfterApply {
		f.lose = append(f.lose, r)
	} else {
		f.refuse = append(f.refuse, r)
	}
	return nil
}

// Pending is how many injected calls are still to come, over every queued fault.
func (f *Faults) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.refuse {
		n += r.remaining
	}
	for _, r := range f.lose {
		n += r.remaining
	}
	return n
}

// Refusal consumes one use of the first unapplied fault matching the call and returns its
// answer, with the error details the API attaches to its status (details may be nil: none); nil
// means the call goes ahead.
func (f *Faults) Refusal(method, process string, details func(status int) []any) *Error {
	r := f.take(&f.refuse, method, process)
	if r == nil {
		return nil
	}
	e := &Error{Code: r.status, Status: StatusName(r.status), Message: "injected failure (emulator)", RetryAfter: r.retryAfter}
	if details != nil {
		e.Details = details(r.status)
	}
	return e
}

// LostResponse consumes one use of the first after-apply fault matching the call, which has been
// applied, and returns the answer that replaces its response; nil means the response goes out.
func (f *Faults) LostResponse(method, process string) *Error {
	r := f.take(&f.lose, method, process)
	if r == nil {
		return nil
	}
	return &Error{Code: r.status, Status: StatusName(r.status),
		Message: "The service is currently unavailable (emulator: response lost).", RetryAfter: r.retryAfter}
}

func (f *Faults) take(rules *[]*rule, method, process string) *rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range *rules {
		if r.method != "" && r.method != method {
			continue
		}
		if r.process != "" && r.process != process {
			continue
		}
		r.remaining--
		if r.remaining <= 0 {
			*rules = append((*rules)[:i:i], (*rules)[i+1:]...)
		}
		c := *r
		return &c
	}
	return nil
}

// SetLatency delays every call by d before it is handled (0 disables).
func (f *Faults) SetLatency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = max(d, 0)
}

// Wait sleeps the injected latency; false means the client gave up meanwhile.
func (f *Faults) Wait(ctx context.Context) bool {
	f.mu.Lock()
	latency := f.latency
	f.mu.Unlock()
	if latency <= 0 {
		return true
	}
	t := time.NewTimer(latency)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
