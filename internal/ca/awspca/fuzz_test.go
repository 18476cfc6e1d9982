package awspca

import (
	"context"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/aws/smithy-go"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// FuzzClassify feeds arbitrary PCA error answers (code, message, fault) through classify: the
// error is permanent or retryable (Revoke and Issue never see a pending one from it), printable,
// on one line (PCA's code too), with at most maxMessage bytes of its message; only a client
// fault counts as a refusal, after which nothing was issued.
func FuzzClassify(f *testing.F) {
	for _, s := range []struct {
		code, msg string
		fault     int
	}{
		{"AccessDeniedException", "User: arn:aws:sts::123456789012:assumed-role/certprov is not authorized to perform: acm-pca:IssueCertificate", 1},
		{"ThrottlingException", "Rate exceeded", 1},
		{"InternalFailure", "", 2},
		{"MalformedCSRException", "bad\ncsr\x00\xff", 1},
		{"", strings.Repeat("é", 400), 0},
	} {
		f.Add(s.code, s.msg, s.fault)
	}
	f.Fuzz(func(t *testing.T, code, msg string, fault int) {
		apiErr := &smithy.GenericAPIError{Code: code, Message: msg, Fault: smithy.ErrorFault(abs(fault) % 3)}
		err := classify(context.Background(), "AWS Private CA corp: issue k", apiErr)
		class, _ := ca.Classify(err)
		if class == ca.ClassPending {
			t.Fatalf("classified pending: %v", err)
		}
		text := err.Error()
		if !utf8.ValidString(text) || strings.ContainsFunc(text, unicode.IsControl) {
			t.Fatalf("not printable on one line: %q", text)
		}
		if len(text) > len("AWS Private CA corp: issue k: PCA answered : ")+len(code)+maxMessage+len("…")+200 {
			t.Fatalf("message of %d bytes", len(text))
		}
		if refused(apiErr) && apiErr.Fault != smithy.FaultClient {
			t.Fatalf("a fault %v counted as a refusal", apiErr.Fault)
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
