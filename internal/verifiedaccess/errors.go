package verifiedaccess

import (
	"errors"
	"fmt"
	"time"

	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// Code is a stable error code of the enrollment API (package wire, which the emulator's client
// shares).
type Code = wire.Code

// The enrollment API's error codes.
const (
	CodeBadRequest        = wire.CodeBadRequest
	CodeUnknownProfile    = wire.CodeUnknownProfile
	CodeBadChallenge      = wire.CodeBadChallenge
	CodeChallengeExpired  = wire.CodeChallengeExpired
	CodeChallengeReplayed = wire.CodeChallengeReplayed
	CodePolicyDenied      = wire.CodePolicyDenied
	CodeCAFailure         = wire.CodeCAFailure
	CodeUnavailable       = wire.CodeUnavailable
	CodeMisconfigured     = wire.CodeMisconfigured
	CodeRateLimited       = wire.CodeRateLimited
	CodeBusy              = wire.CodeBusy
)

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
