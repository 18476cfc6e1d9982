package logging

import (
	"fmt"
	"log/slog"
	"strconv"
)

// Redacted is what a Secret prints instead of its value.
const Redacted = "[redacted]"

// Secret is a string that must never appear in logs or error messages: a password, a SCEP
// challenge, a token. Every way of printing it — fmt verbs, zap fields (zap.Any, zap.Stringer,
// zap.Reflect, structs logged whole), encoding/json, encoding.TextMarshaler users and slog —
// yields "[redacted]".
// Use Reveal, deliberately, where the value is actually needed.
//
// A Secret converted back with string(s) is an ordinary string again; do that only at the call
// that sends it.
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String redacts; it is what zap.Any and zap.Stringer use.
func (s Secret) String() string { return Redacted }

// GoString redacts %#v.
func (s Secret) GoString() string { return strconv.Quote(Redacted) }

// Format redacts every fmt verb, including %x and %q, which would otherwise encode the raw string.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		_, _ = f.Write([]byte(strconv.Quote(Redacted)))
	case 'v':
		if f.Flag('#') {
			_, _ = f.Write([]byte(s.GoString()))
			return
		}
		_, _ = f.Write([]byte(Redacted))
	default:
		_, _ = f.Write([]byte(Redacted))
	}
}

// MarshalJSON redacts, covering zap.Reflect and structs logged whole.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(Redacted)), nil }

// MarshalText redacts, covering encoders that prefer text, such as YAML. (encoding/json writes
// a string-kinded map key as is: never key a map by a Secret.)
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// UnmarshalText accepts the value unchanged, so that a Secret can be decoded from a
// configuration even though it marshals as "[redacted]".
func (s *Secret) UnmarshalText(b []byte) error {
	*s = Secret(b)
	return nil
}

// LogValue redacts in log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }
