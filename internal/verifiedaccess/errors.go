package verifiedaccess

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Code is a stable error code of the enrollment API (docs/verified-access-api.md, section 2).
// Clients branch on it; its text never changes.
type Code string

// The enrollment API's error codes.
const (
	CodeBadRequest        Code = "BAD_REQUEST"
	CodeUnknownProfile    Code = "UNKNOWN_PROFILE"
	CodeBadChallenge      Code = "BAD_CHALLENGE"
	CodeChallengeExpired  Code = "CHALLENGE_EXPIRED"
	CodeChallengeReplayed Code = "CHALLENGE_REPLAYED"
	CodePolicyDenied      Code = "POLICY_DENIED"
	CodeCAFailure         Code = "CA_FAILURE"
	CodeUnavailable       Code = "UNAVAILABLE"
	// CodeMisconfigured: Google refused the adapter itself (401, 403, 404): its credentials, its
	// service account's permission or its endpoint need the administrator, not another try.
	CodeMisconfigured Code = "ADAPTER_MISCONFIGURED"
	// CodeRateLimited: this client address sent more requests, or more at once, than its share.
	CodeRateLimited Code = "RATE_LIMITED"
	// CodeBusy: every slot of the endpoint and its queue were taken, whoever the client.
	CodeBusy Code = "BUSY"
)

// Status is the HTTP status that goes with the code.
func (c Code) Status() int {
	switch c {
	case CodeBadRequest, CodeBadChallenge, CodeChallengeExpired:
		return http.StatusBadRequest
	case CodeUnknownProfile:
		return http.StatusNotFound
	case CodeChallengeReplayed:
		return http.StatusConflict
	case CodePolicyDenied:
		return http.StatusForbidden
	case CodeMisconfigured:
		return http.StatusInternalServerError
	case CodeCAFailure:
		return http.StatusBadGateway
	case CodeRateLimited:
		return http.StatusTooManyRequests
	default:
		return http.StatusServiceUnavailable
	}
}

// Error is an enrollment failure as the client sees it, plus the cause the adapter logs. Message
// and FailedRules go to the client and must never hold a secret; the cause may hold details that
// only the operator should see (a CA's own message, a Google error body).
type Error struct {
	Code        Code
	Message     string
	FailedRules []string
	cause       error
	// retryAfter, when set, is sent as the Retry-After header (whole seconds, at least one).
	retryAfter time.Duration
}

func (e *Error) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.cause)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.cause }

// fail builds an *Error; cause may be nil.
func fail(code Code, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), cause: cause}
}

// CodeOf returns the code err carries, or UNAVAILABLE for an error that is not an *Error (an
// unexpected failure is the adapter's, not the client's).
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeUnavailable
}
