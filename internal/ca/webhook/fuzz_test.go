package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/logging"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// FuzzAnswer feeds arbitrary HTTP answers (status, Retry-After, Location, body) to the issue,
// lookup and revoke interpretation. An issue answer is a certificate for the CSR's key, only
// from a 2xx "issued" answer, or a classified error; a lookup answer is a certificate, nothing
// (notFound or pending) or a classified error; a revoke answer is success only from a "revoked"
// answer, else a classified error that is never pending. Retry hints and tickets stay within the
// contract's bounds, and no message carries a configured secret or a control character.
func FuzzAnswer(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "ca")
	certPath, keyPath, err := local.CreateCA(dir, "ecdsa", "webhook fuzz CA", 48*time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	issuer, err := local.New(ca.Settings{"certificateFile": certPath, "keyFile": keyPath}, ca.Env{Name: "fuzz-ca"})
	if err != nil {
		f.Fatal(err)
	}
	req := catest.NewRequest(f, catest.DeviceKey(f, catest.P256), "FUZZ")
	good, err := issuer.Issue(context.Background(), req)
	if err != nil {
		f.Fatal(err)
	}
	other, err := issuer.Issue(context.Background(), catest.NewRequest(f, catest.DeviceKey(f, catest.P256), "OTHER"))
	if err != nil {
		f.Fatal(err)
	}
	const (
		hmacSecret  = "7f3a9c1e5b2d8f4a6c0e1b3d5f7a9c2e"
		headerValue = "Bearer eyJhbGciOi.fuzz-token"
	)
	c := &Connector{
		name:    "fuzz",
		log:     zap.NewNop(),
		secret:  logging.Secret(hmacSecret),
		headers: []header{{name: "Authorization", value: logging.Secret(headerValue)}},
		now:     time.Now,
	}
	pemOf := func(certs ...[]byte) string {
		var b strings.Builder
		for _, der := range certs {
			b.Write(pemutil.EncodeCertificateDER(der))
		}
		return b.String()
	}
	js := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	leaf, root := js(pemOf(good.Leaf.Raw)), js(pemOf(issuer.Certificate().Raw))
	for _, s := range []struct {
		code       int
		retryAfter string
		location   string
		body       string
	}{
		{200, "", "", `{"status":"issued","certificate":` + leaf + `,"chain":[` + root + `]}`},
		{201, "", "", `{"status":"issued","certificate":` + js(pemOf(good.Leaf.Raw, issuer.Certificate().Raw)) + `,"serial":"01"}`},
		{200, "", "", `{"status":"issued","certificate":` + js(pemOf(other.Leaf.Raw)) + `}`},
		{200, "", "", `{"status":"issued","certificate":` + js(pemOf(good.Leaf.Raw)+"trailing") + `}`},
		{202, "", "", `{"status":"pending","ticket":"T-1","retryAfterSeconds":7,"message":"awaiting approval"}`},
		{200, "3", "", `{"status":"pending"}`},
		{200, "", "", `{"status":"error","message":"HSM busy","retryable":true,"retryAfterSeconds":1e300}`},
		{403, "", "", `{"status":"error","message":"echo: Authorization: ` + headerValue + `, secret ` + hmacSecret + `"}`},
		{404, "", "", `{"status":"notFound"}`},
		{429, "Wed, 21 Oct 2037 07:28:00 GMT", "", "slow down"},
		{502, "", "", "<html><body>Bad Gateway</body></html>"},
		{302, "", "https://ca.example.com/v2?key=hunter2", ""},
		{200, "", "", `[1,2]`},
		{200, "", "", `{"status":"pending","retryAfterSeconds":"soon"}`},
		{200, "", "", `{"status":"revoked"}`},
		{404, "", "", `{"status":"revoked"}`},
		{400, "", "", `{"status":"error","message":"revoke not supported","retryable":false}`},
	} {
		f.Add(s.code, s.retryAfter, s.location, []byte(s.body))
	}
	spki := req.CSR.RawSubjectPublicKeyInfo
	f.Fuzz(func(t *testing.T, code int, retryAfter, location string, body []byte) {
		code = 100 + abs(code)%500
		h := http.Header{}
		h.Set("Retry-After", retryAfter)
		h.Set("Location", location)
		r := c.decodeReply(code, h, body)
		if r.hint() < 0 || r.hint() > maxRetryAfter {
			t.Fatalf("retry hint %v", r.hint())
		}
		issued, err := c.issueAnswer(r, spki)
		switch {
		case err != nil:
			checkAnswerError(t, err, hmacSecret, headerValue)
		case code/100 != 2 || r.body == nil || r.body.Status != StatusIssued:
			t.Fatalf("certificate from HTTP %d %+v", code, r.body)
		case !bytes.Equal(issued.Leaf.RawSubjectPublicKeyInfo, spki):
			t.Fatal("certificate for another key")
		}
		found, err := c.lookupAnswer(r)
		switch {
		case err != nil:
			checkAnswerError(t, err, hmacSecret, headerValue)
		case found == nil && (r.body == nil || (r.body.Status != StatusNotFound && r.body.Status != StatusPending)):
			t.Fatalf("nothing found from HTTP %d %+v", code, r.body)
		case found != nil && (found.Leaf == nil || r.body == nil || r.body.Status != StatusIssued):
			t.Fatalf("lookup result %+v from %+v", found, r.body)
		}
		switch err := c.revokeAnswer(r, "7f3a"); {
		case err == nil && (r.body == nil || r.body.Status != StatusRevoked || (code/100 != 2 && code != http.StatusNotFound)):
			t.Fatalf("revoked from HTTP %d %+v", code, r.body)
		case err != nil:
			checkAnswerError(t, err, hmacSecret, headerValue)
			var pending *ca.PendingError
			if errors.As(err, &pending) {
				t.Fatalf("a revocation answered pending: %v", err)
			}
		}
	})
}

// checkAnswerError requires err to be classified within the contract's bounds and its message
// to be fit for a device: valid UTF-8, no control characters, no secret.
func checkAnswerError(t *testing.T, err error, secrets ...string) {
	t.Helper()
	class, hint := ca.Classify(err)
	if hint < 0 || hint > maxRetryAfter {
		t.Fatalf("%s error with retry hint %v", class, hint)
	}
	var pending *ca.PendingError
	if errors.As(err, &pending) && len(pending.Ticket) > maxTicketBytes {
		t.Fatalf("pending ticket of %d bytes", len(pending.Ticket))
	}
	msg := err.Error()
	if !utf8.ValidString(msg) || strings.ContainsFunc(msg, unicode.IsControl) {
		t.Fatalf("message not fit for a device: %q", msg)
	}
	for _, s := range secrets {
		if strings.Contains(msg, s) {
			t.Fatalf("message %q carries a secret", msg)
		}
	}
}

func abs(n int) int {
	if n < 0 {
		return -(n + 1)
	}
	return n
}

// TestSnippetKeepsNoPartOfASecret: a body that is not JSON is quoted only in part; the part must
// not end in the start of a secret the server echoed across the cut.
func TestSnippetKeepsNoPartOfASecret(t *testing.T) {
	const secret = "7f3a9c1e5b2d8f4a6c0e1b3d5f7a9c2e"
	c := &Connector{name: "snippet", log: zap.NewNop(), secret: logging.Secret(secret), now: time.Now}
	for _, lead := range []int{0, 190, 195, 199} {
		r := c.decodeReply(http.StatusBadGateway, http.Header{}, []byte(strings.Repeat("x", lead)+secret+" echoed"))
		if r.body != nil || strings.Contains(r.snippet, secret[:5]) {
			t.Errorf("%d bytes before the secret: snippet %q", lead, r.snippet)
		}
	}
}
