package emulator

import (
	"context"
	"fmt"
	"time"
)

// API method names, as used for fault injection and in Snapshot.Calls.
const (
	MethodGet               = "get"
	MethodClaim             = "claim"
	MethodSignData          = "signData"
	MethodOperationsGet     = "operations.get"
	MethodUploadCertificate = "uploadCertificate"
	MethodSetFailure        = "setFailure"
)

// LROVariant changes the shape of signData operations, to test that the adapter depends on
// neither "@type" nor the signature inside the operation's response.
type LROVariant struct {
	OmitType                bool // leave "@type" out of metadata and response
	OmitSignatureInResponse bool // leave "signature" out of response.certificateProvisioningProcess
}

type faultRule struct {
	method     string // "" matches every method
	process    string // resource name; "" matches every process (and calls naming none)
	remaining  int
	status     int
	retryAfter time.Duration
}

// Fault is one misbehaviour of the REST API, injected with Inject.
type Fault struct {
	// Method is the API method it affects (MethodGet, MethodClaim, …); "" means any.
	Method string
	// Process is the resource name of the only process it affects; "" means any. A test that
	// runs several processes at once targets one with it, so that the fault lands where the test
	// expects it and not on whichever call comes next.
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

// Inject queues f. Faults are consumed in the order they were injected, each by the first calls
// it matches; a call consumes at most one fault of each kind (unapplied, after apply). Calls
// answered by a fault are counted in Snapshot.Calls like any other, and in Snapshot.Injected.
func (e *Emulator) Inject(f Fault) error {
	if f.Times <= 0 {
		return fmt.Errorf("inject fault: times %d: want a positive number", f.Times)
	}
	if f.AfterApply && f.Status == 0 {
		f.Status = 503
	}
	if f.Status < 400 || f.Status > 599 {
		return fmt.Errorf("inject fault: status %d: want 400 to 599", f.Status)
	}
	if f.RetryAfter < 0 {
		return fmt.Errorf("inject fault: retry after %s: must not be negative", f.RetryAfter)
	}
	r := &faultRule{method: f.Method, process: f.Process, remaining: f.Times, status: f.Status, retryAfter: f.RetryAfter}
	e.mu.Lock()
	defer e.mu.Unlock()
	if f.AfterApply {
		e.loseRules = append(e.loseRules, r)
	} else {
		e.failRules = append(e.failRules, r)
	}
	return nil
}

// FailNext makes the next n calls of method ("" = any method) answer HTTP status with the Google
// error envelope, without applying the call. When retryAfter > 0 the answer carries a Retry-After
// header in whole seconds (rounded up). Rules queue up in call order; n <= 0 or a status outside
// 400..599 is ignored. Injected answers are counted in Snapshot.Calls like any other call.
func (e *Emulator) FailNext(method string, n int, status int, retryAfter time.Duration) {
	_ = e.Inject(Fault{Method: method, Times: n, Status: status, RetryAfter: max(retryAfter, 0)})
}

// LoseNextResponses makes the next n calls of method ("" = any method) apply their change as
// usual and then answer 503 UNAVAILABLE, as if the response was lost on the way back.
func (e *Emulator) LoseNextResponses(method string, n int) {
	_ = e.Inject(Fault{Method: method, Times: n, AfterApply: true})
}

// PendingFaults is how many injected calls are still to come, over every queued fault: a test
// waits for it to reach 0 to know its faults were all delivered.
func (e *Emulator) PendingFaults() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, r := range e.failRules {
		n += r.remaining
	}
	for _, r := range e.loseRules {
		n += r.remaining
	}
	return n
}

// Notify publishes the notification of an existing process again, in the encoding of its spec,
// as Pub/Sub does when it delivers a message twice or late. Publishing the notifications of
// NoPublish processes in an order of the test's choosing delivers them out of order.
func (e *Emulator) Notify(ctx context.Context, name string) error {
	e.mu.Lock()
	p := e.procs[name]
	e.mu.Unlock()
	if p == nil {
		return fmt.Errorf("notify %s: no such process", name)
	}
	data, err := encodeNotification(p.spec.Encoding, p.id, p.customer)
	if err != nil {
		return fmt.Errorf("notify %s: %w", name, err)
	}
	e.markNotified(name)
	if err := e.Publish(ctx, data); err != nil {
		return fmt.Errorf("notify %s: %w", name, err)
	}
	return nil
}

// SetLatency delays every REST API call by d before it is handled (0 disables). The delay ends
// early when the request's context is cancelled.
func (e *Emulator) SetLatency(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.latency = max(d, 0)
}

// SetClaimConflictStatus sets the HTTP status of a claim that another instance already holds:
// 400 FAILED_PRECONDITION (the default, as documented) or 409 ABORTED. Any other code restores 400.
func (e *Emulator) SetClaimConflictStatus(code int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if code != 409 {
		code = 400
	}
	e.conflictStatus = code
}

// SetLROVariant changes the shape of operations returned from now on.
func (e *Emulator) SetLROVariant(v LROVariant) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lro = v
}

// takeRuleLocked consumes one use of the first rule matching method and process.
func takeRuleLocked(rules *[]*faultRule, method, process string) *faultRule {
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

// statusName is the google.rpc.Code name Google pairs with an HTTP status.
func statusName(code int) string {
	switch code {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 409:
		return "ABORTED"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case 500:
		return "INTERNAL"
	case 501:
		return "UNIMPLEMENTED"
	case 503:
		return "UNAVAILABLE"
	case 504:
		return "DEADLINE_EXCEEDED"
	default:
		return "UNKNOWN"
	}
}
