package directory

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/api/googleapi"

	"github.com/certprov/certprov-adapter/internal/errclass"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/retryafter"
)

// The Directory methods, as the metrics name them.
const (
	methodDevicesGet = "chromeosdevices.get"
	methodUsersGet   = "users.get"
)

// Error is a failed lookup, classified (errclass, through ErrorClass). 404 is permanent and
// says the record does not exist (NotFound); 403 is permanent and means the service account
// may not read the Directory (delegation or scopes), unless its reason is one of the Directory's
// rate limits; 429, 408, 5xx, timeouts and connections that failed are retryable, with the
// server's Retry-After; any other answer is permanent. A lookup its caller gave up is
// retryable: a lookup shared with others may be cut short by one of them.
type Error struct {
	Kind       string // metrics.DirectoryDevice or metrics.DirectoryUser
	Key        string // the device id or user key looked up
	Code       int    // HTTP status; 0 when no answer came
	Reason     string // the Directory's reason (notFound, forbidden, userRateLimitExceeded, …)
	Message    string
	RetryAfter time.Duration
	Class      errclass.Class
	err        error
}

// ErrorClass implements errclass.Classifier.
func (e *Error) ErrorClass() (errclass.Class, time.Duration) { return e.Class, e.RetryAfter }

// NotFound reports whether the Directory has no such record (HTTP 404).
func (e *Error) NotFound() bool { return e.Code == http.StatusNotFound }

// Forbidden reports whether the service account may not read the record (HTTP 403 that is not
// a rate limit): an operator must grant domain-wide delegation of the Directory scopes.
func (e *Error) Forbidden() bool {
	return e.Code == http.StatusForbidden && e.Class == errclass.Permanent
}

func (e *Error) Unwrap() error { return e.err }

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: ", methodName(e.Kind), e.Key)
	switch {
	case e.Code != 0 && e.Reason != "":
		fmt.Fprintf(&b, "HTTP %d %s: %s", e.Code, e.Reason, e.Message)
	case e.Code != 0:
		fmt.Fprintf(&b, "HTTP %d: %s", e.Code, e.Message)
	default:
		b.WriteString(e.err.Error())
	}
	return b.String()
}

func methodName(kind string) string {
	if kind == metrics.DirectoryUser {
		return methodUsersGet
	}
	return methodDevicesGet
}

// rateLimitReasons are the reasons the Directory gives its quota refusals, some with 403.
func rateLimitReasons() []string {
	return []string{"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}
}

// classify turns a transport or googleapi error into an *Error.
func classify(kind, key string, err error) *Error {
	e := &Error{Kind: kind, Key: key, Class: errclass.Permanent, err: err}
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		e.Code, e.Message = gerr.Code, gerr.Message
		if e.Message == "" {
			e.Message = strings.TrimSpace(gerr.Body)
		}
		if len(gerr.Errors) > 0 {
			e.Reason = gerr.Errors[0].Reason
		}
		e.RetryAfter = retryafter.FromHeader(gerr.Header)
		switch {
		case gerr.Code == http.StatusTooManyRequests, gerr.Code == http.StatusRequestTimeout, gerr.Code >= 500,
			gerr.Code == http.StatusForbidden && slices.Contains(rateLimitReasons(), e.Reason):
			e.Class = errclass.Retryable
		}
		return e
	}
	// No answer: a timeout of our own, a connection that failed, or the caller gone. None of
	// them says anything about the record.
	e.Class = errclass.Retryable
	return e
}
