package ca

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzServerText: whatever a CA sends, the text put into a failure message is valid UTF-8 on one
// printable line, within the limit, and never carries the secret, however the server spaced it.
func FuzzServerText(f *testing.F) {
	f.Add("bad\r\nrequest\t here", "s3cr3t-hmac-key", 0)
	f.Add("token s3cr3t-hmac-key refused", "s3cr3t-hmac-key", 12)
	f.Add("ok\u202etxt.exe é\xff", "Bearer abcdefgh", 5)
	f.Fuzz(func(t *testing.T, s, secret string, max int) {
		max = max % 1000
		if max < 0 {
			max = -max
		}
		got := ServerText(s, max, secret)
		if !utf8.ValidString(got) || strings.ContainsFunc(got, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) ||
			strings.Contains(got, "  ") || got != strings.TrimSpace(got) {
			t.Fatalf("ServerText(%q) = %q: not one printable line", s, got)
		}
		if max > 0 && len(got) > max+len("…") {
			t.Fatalf("ServerText(%q, %d) = %d bytes", s, max, len(got))
		}
		// A secret that could be spelt with the marker's own letters is not checked: "[redacted]"
		// would then contain it.
		for _, form := range []string{secret, strings.Join(strings.Fields(secret), " ")} {
			if len(form) >= 8 && !strings.ContainsAny(form, "[]") && !strings.Contains("redacted", form) && strings.Contains(got, form) {
				t.Fatalf("ServerText(%q) = %q carries the secret %q", s, got, secret)
			}
		}
	})
}
