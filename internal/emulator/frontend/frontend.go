// Package frontend is what Google's API front end does to every call, for both of the
// emulator's Google sides (the Certificate Provisioning API in package emulator and the Verified
// Access API in package vagoogle), written once: Google's error envelope, bounded and strictly
// decoded request bodies, and the faults and latency tests inject. One Faults serves both APIs, so
// that a fault for any method ("") lands on whichever call comes next, whichever API it is.
package frontend

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 1 << 20

// Error is an error answered with Google's error envelope.
type Error struct {
	Code    int    // HTTP status
	Status  string // google.rpc.Code name
	Message string
	Details []any // google.rpc error details (AIP-193), each with its @type; nil sends none
	// RetryAfter > 0 adds a Retry-After header in whole seconds (rounded up).
	RetryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Code, e.Status, e.Message) }

// InvalidArgument is 400 INVALID_ARGUMENT.
func InvalidArgument(format string, args ...any) *Error {
	return &Error{Code: 400, Status: "INVALID_ARGUMENT", Message: fmt.Sprintf(format, args...)}
}

// FailedPrecondition is 400 FAILED_PRECONDITION.
func FailedPrecondition(format string, args ...any) *Error {
	return &Error{Code: 400, Status: "FAILED_PRECONDITION", Message: fmt.Sprintf(format, args...)}
}

// NotFound is 404 NOT_FOUND.
func NotFound(format string, args ...any) *Error {
	return &Error{Code: 404, Status: "NOT_FOUND", Message: fmt.Sprintf(format, args...)}
}

// Internal is 500 INTERNAL with err's text.
func Internal(err error) *Error {
	return &Error{Code: 500, Status: "INTERNAL", Message: err.Error()}
}

// MethodNotAllowed is the emulator's answer to a control endpoint called with the wrong HTTP
// method: 405 UNIMPLEMENTED, saying which method to use.
func MethodNotAllowed(use, path string) *Error {
	return &Error{Code: http.StatusMethodNotAllowed, Status: "UNIMPLEMENTED", Message: "use " + use + " on " + path}
}

// WriteJSON answers code with v as JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"error":{"code":500,"message":"marshal response","status":"INTERNAL"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

type errorEnvelope struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
	Details []any  `json:"details,omitempty"`
}

// WriteError answers with Google's error envelope and, when e.RetryAfter > 0, a Retry-After
// header in whole seconds.
func WriteError(w http.ResponseWriter, e *Error) {
	SetRetryAfter(w, e.RetryAfter)
	WriteJSON(w, e.Code, errorEnvelope{Error: errorBody{Code: e.Code, Message: e.Message, Status: e.Status, Details: e.Details}})
}

// SetRetryAfter adds a Retry-After header of d in whole seconds (rounded up), when d > 0; APIs
// with an envelope of their own (the Directory's) write it with this too.
func SetRetryAfter(w http.ResponseWriter, d time.Duration) {
	if d > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10))
	}
}

// ReadBody reads a request body of at most MaxBodyBytes.
func ReadBody(r *http.Request) ([]byte, *Error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, InvalidArgument("read request body: %v", err)
	}
	if len(b) > MaxBodyBytes {
		return nil, InvalidArgument("request body larger than %d bytes", MaxBodyBytes)
	}
	return b, nil
}

// DecodeBody parses a JSON request body strictly, as Google's front end does (unknown field
// names are rejected); an empty body leaves v as it is.
func DecodeBody(body []byte, v any) *Error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := DecodeStrict(body, v); err != nil {
		return InvalidArgument("Invalid JSON payload received. %v", err)
	}
	return nil
}

// DecodeStrict decodes one JSON value into v the way every body the emulator reads is decoded:
// unknown keys and data after the value are errors.
func DecodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

// DecodeBase64 accepts standard and URL-safe base64, padded or not, as Google's JSON parser
// does for bytes fields.
func DecodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("invalid base64")
}

// Base64 is the base64 flavour the emulator answers in: standard, padded, as proto3 JSON does.
func Base64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// StatusName is the google.rpc.Code name Google pairs with an HTTP status.
func StatusName(code int) string {
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
