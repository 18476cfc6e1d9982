package chromeapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/retryafter"
	"google.golang.org/api/googleapi"
)

// ErrClaimedByOther means another adapter instance owns the process: this instance must leave it.
var ErrClaimedByOther = errors.New("process claimed by another adapter instance")

// Error is a failed API call, classified.
type Error struct {
	Method     string
	Name       string
	Code       int    // HTTP status; 0 when no response arrived
	Status     string // canonical status from the error envelope, when present
	Message    string
	RetryAfter time.Duration // from the Retry-After header
	Retryable  bool
	err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: ", e.Method, e.Name)
	switch {
	case e.Code != 0 && e.Status != "":
		fmt.Fprintf(&b, "HTTP %d %s: %s", e.Code, e.Status, e.Message)
	case e.Code != 0:
		fmt.Fprintf(&b, "HTTP %d: %s", e.Code, e.Message)
	default:
		b.WriteString(e.err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.err }

// IsRetryable reports whether err is a transient API failure worth trying again.
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable
}

// RetryAfter returns the server's Retry-After hint carried by err, or zero.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// IsFailedPrecondition reports whether the server refused the call because of the process state
// (HTTP 400/409), e.g. an upload to a process that already ended.
func IsFailedPrecondition(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Code == http.StatusBadRequest || e.Code == http.StatusConflict)
}

// IsNotFound reports whether the process does not exist.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == http.StatusNotFound
}

// classify turns a transport or googleapi error into an *Error. parent is the caller's context:
// a deadline of our own per-request timeout is retryable, the caller giving up is not.
func classify(parent context.Context, method, name string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Method: method, Name: name, err: err}
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		e.Code = gerr.Code
		e.Message = gerr.Message
		if e.Message == "" {
			e.Message = strings.TrimSpace(gerr.Body)
		}
		e.Status = envelopeStatus(gerr)
		e.RetryAfter = retryafter.FromHeader(gerr.Header)
		switch {
		case gerr.Code == http.StatusTooManyRequests, gerr.Code == http.StatusRequestTimeout, gerr.Code >= 500:
			e.Retryable = true
		}
		return e
	}
	if parent.Err() != nil {
		return e // the caller is gone; retrying cannot help it
	}
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) || isConnectionError(err) {
		e.Retryable = true
	}
	return e
}

func isConnectionError(err error) bool {
	s := err.Error()
	for _, frag := range []string{"connection refused", "connection reset", "EOF", "broken pipe", "no such host"} {
		if strings.Contains(s, frag) {
			return true
		}
	}
	return false
}

// envelopeStatus reads the canonical status ("FAILED_PRECONDITION") from the error envelope;
// googleapi.Error does not expose it as a field. A body that is not an envelope (a proxy's page)
// has none, whatever text it contains.
func envelopeStatus(gerr *googleapi.Error) string {
	var env struct {
		Error struct {
			Status string `json:"status"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(gerr.Body), &env) != nil {
		return ""
	}
	return env.Error.Status
}
