package ca

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// ServerText makes text a CA sent fit for a failure message that a device shows: valid UTF-8,
// printable, on one line, at most max bytes (cut on a character boundary and marked with "…"),
// and with every non-empty secret replaced by "[redacted]", in case a server echoes a request.
func ServerText(s string, max int, secrets ...string) string {
	s = oneLine(redact(s, secrets))
	// Collapsing blanks can re-form a secret the server echoed with other ones ("Bearer\tkey").
	clean := make([]string, len(secrets))
	for i, secret := range secrets {
		clean[i] = oneLine(secret)
	}
	s = redact(s, clean)
	if max > 0 && len(s) > max {
		s = prefix(s, max) + "…"
	}
	return s
}

// Truncate returns s when it has at most max bytes, and otherwise as much of it as leaves room
// for mark within max bytes, cut on a character boundary, followed by mark: a message for a
// device that must stay within a length, without a character cut in half.
func Truncate(s string, max int, mark string) string {
	if len(s) <= max {
		return s
	}
	return prefix(s, max-len(mark)) + mark
}

// prefix is the longest prefix of s of at most n bytes that does not split a UTF-8 character.
func prefix(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if n >= len(s) {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func redact(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return s
}

// oneLine is s as valid UTF-8 with every unprintable character a blank and runs of blanks one.
func oneLine(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	return strings.Join(strings.Fields(s), " ")
}
