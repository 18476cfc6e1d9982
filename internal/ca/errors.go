package ca

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/certprov/certprov-adapter/internal/errclass"
)

// Class says what the engine should do after an error: the adapter's one taxonomy (package
// errclass), re-exported for connectors.
type Class = errclass.Class

const (
	// ClassRetryable errors are transient: back off and try again until the step's deadline.
	ClassRetryable = errclass.Retryable
	// ClassPermanent errors can never succeed as is: tell the user at once.
	ClassPermanent = errclass.Permanent
	// ClassPending means the CA accepted the request but has not issued yet.
	ClassPending = errclass.Pending
)

// Permanent marks err as one that retrying cannot fix (the CA refused the subject, bad credentials).
func Permanent(err error) error { return errclass.Mark(err, ClassPermanent, 0) }

// Permanentf is Permanent(fmt.Errorf(...)).
func Permanentf(format string, args ...any) error {
	return Permanent(fmt.Errorf(format, args...))
}

// Retryable marks err as transient; retryAfter, when positive, is the CA's own hint.
func Retryable(err error, retryAfter time.Duration) error {
	return errclass.Mark(err, ClassRetryable, retryAfter)
}

// PendingError reports that the CA accepted the request and will issue later.
type PendingError struct {
	Ticket     string        // connector-specific handle to resume with (Request.Ticket)
	RetryAfter time.Duration // when to ask again; zero lets the engine choose
	Reason     string
}

// ErrorClass implements errclass.Classifier.
func (e *PendingError) ErrorClass() (Class, time.Duration) { return ClassPending, e.RetryAfter }

func (e *PendingError) Error() string {
	if e.Reason != "" {
		return "certificate pending: " + e.Reason
	}
	return "certificate pending"
}

// Classify returns the class of err and the retry hint it carries. Unclassified errors are
// retryable: a CA that failed in an unexpected way may well work a minute later.
func Classify(err error) (Class, time.Duration) {
	var p *PendingError
	if errors.As(err, &p) {
		return ClassPending, p.RetryAfter // wherever in the chain: the CA has the request
	}
	return errclass.Of(err)
}

// IsPermanent reports whether err is classified permanent.
func IsPermanent(err error) bool {
	c, _ := Classify(err)
	return c == ClassPermanent
}

// GatewayLost reports whether an HTTP status is a gateway's admission that it lost the answer:
// 502 Bad Gateway or 504 Gateway Timeout from a proxy or load balancer in front of the CA. The
// CA may have received the request and acted on it, so a request that makes the CA issue must
// not be repeated after one (the same rule as an answer lost on the connection); other calls
// may be.
func GatewayLost(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusGatewayTimeout
}
