package emulator

import (
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
	remaining  int
	status     int
	retryAfter time.Duration
}

// FailNext makes the next n calls of method ("" = any method) answer HTTP status with the Google
// error envelope, without applying the call. When retryAfter > 0 the answer carries a Retry-After
// header in whole seconds (rounded up). Rules queue up in call order; n <= 0 or a status outside
// 400..599 is ignored. Injected answers are counted in Snapshot.Calls like any other call.
func (e *Emulator) FailNext(method string, n int, status int, retryAfter time.Duration) {
	if n <= 0 || status < 400 || status > 599 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failRules = append(e.failRules, &faultRule{method: method, remaining: n, status: status, retryAfter: retryAfter})
}

// LoseNextResponses makes the next n calls of method ("" = any method) apply their change as
// usual and then answer 503 UNAVAILABLE, as if the response was lost on the way back.
func (e *Emulator) LoseNextResponses(method string, n int) {
	if n <= 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.loseRules = append(e.loseRules, &faultRule{method: method, remaining: n, status: 503})
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

// takeRuleLocked consumes one use of the first rule matching method.
func takeRuleLocked(rules *[]*faultRule, method string) *faultRule {
	for i, r := range *rules {
		if r.method != "" && r.method != method {
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
