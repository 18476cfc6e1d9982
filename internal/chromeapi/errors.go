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

	"google.golang.org/api/googleapi"

	"github.com/certprov/certprov-adapter/internal/errclass"
	"github.com/certprov/certprov-adapter/internal/process"
	"github.com/certprov/certprov-adapter/internal/retryafter"
)

// Error is a failed API call, classified: this is the one place where Google's answers become
// the taxonomy the engine acts on (errclass, through ErrorClass) and the answers it tells apart
// (process.ErrNotFound, through Is; process.ErrClaimedByOther, from Claim). 429, 408 and 5xx, a
// timeout of the call's own and a connection that failed are retryable, with the server's
// Retry-After; any other answer is permanent, and so is a call whose caller gave up.
type Error struct {
	Method     string
	Name       string
	Code       int    // HTTP status; 0 when no response arrived
	Status     string // canonical status from the error envelope, when present
	Message    string
	RetryAfter time.Duration // from the Retry-After header
	Class      errclass.Class
	err        error
}

// ErrorClass implements errclass.Classifier.
func (e *Error) ErrorClass() (errclass.Class, time.Duration) { return e.Class, e.RetryAfter }

// Is reports a 404 as process.ErrNotFound.
func (e *Error) Is(target error) bool {
	return target == process.ErrNotFound && e.Code == http.StatusNotFound
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

// retryable reports whether err is a transient API failure worth trying again.
func retryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Class == errclass.Retryable
}

// failedPrecondition reports whether the server refused the call because of the process state
// (HTTP 400/409), e.g. a claim of a process another instance holds.
func failedPrecondition(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Code == http.StatusBadRequest || e.Code == http.StatusConflict)
}

// classify turns a transport or googleapi error into an *Error. parent is the caller's context:
// a deadline of our own per-request timeout is retryable, the caller giving up is not.
func classify(parent context.Context, method, name string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Method: method, Name: name, Class: errclass.Permanent, err: err}
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
			e.Class = errclass.Retryable
		}
		return e
	}
	if parent.Err() != nil {
		return e // the caller is gone; retrying cannot help it
	}
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) || isConnectionError(err) {
		e.Class = errclass.Retryable
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
