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
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
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
