package emulator

import (
	"context"
	"fmt"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
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

// Inject queues f in the front end's faults, shared with the Verified Access API. Faults are
// consumed in the order they were injected, each by the first calls it matches; a call consumes
// at most one fault of each kind (unapplied, after apply). Calls answered by a fault are counted
// in Snapshot.Calls like any other, and in Snapshot.Injected.
func (e *Emulator) Inject(f frontend.Fault) error { return e.faults.Inject(f) }

// FailNext makes the next n calls of method ("" = any method) answer HTTP status with the Google
// error envelope, without applying the call. When retryAfter > 0 the answer carries a Retry-After
// header in whole seconds (rounded up). Rules queue up in call order; n <= 0 or a status outside
// 400..599 is ignored. Injected answers are counted in Snapshot.Calls like any other call.
func (e *Emulator) FailNext(method string, n int, status int, retryAfter time.Duration) {
	_ = e.Inject(frontend.Fault{Method: method, Times: n, Status: status, RetryAfter: max(retryAfter, 0)})
}

// LoseNextResponses makes the next n calls of method ("" = any method) apply their change as
// usual and then answer 503 UNAVAILABLE, as if the response was lost on the way back.
func (e *Emulator) LoseNextResponses(method string, n int) {
	_ = e.Inject(frontend.Fault{Method: method, Times: n, AfterApply: true})
}

// PendingFaults is how many injected calls are still to come, over every queued fault: a test
// waits for it to reach 0 to know its faults were all delivered. It waits for a provisioning call
// under way to finish, so that what the fault did shows in its snapshot once this says 0.
func (e *Emulator) PendingFaults() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.faults.Pending()
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
	if err := e.publishFor(ctx, p.customer, data); err != nil {
		return fmt.Errorf("notify %s: %w", name, err)
	}
	return nil
}

// SetLatency delays every API call, of both APIs, by d before it is handled (0 disables). The
// delay ends early when the request's context is cancelled.
func (e *Emulator) SetLatency(d time.Duration) { e.faults.SetLatency(d) }

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
