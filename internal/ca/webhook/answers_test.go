package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/ca/webhook"
)

// cannedServer answers every request with whatever the current test case says.
type cannedServer struct {
	srv    *httptest.Server
	dir    string
	answer chan func(w http.ResponseWriter, r *http.Request)
}

func newCannedServer(t *testing.T) *cannedServer {
	t.Helper()
	c := &cannedServer{dir: t.TempDir(), answer: make(chan func(http.ResponseWriter, *http.Request), 1)}
	c.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case f := <-c.answer:
			f(w, r)
		default:
			http.Error(w, "no answer prepared", http.StatusTeapot)
		}
	}))
	t.Cleanup(c.srv.Close)
	writeFile(t, c.dir, serverCAFile, certPEM(c.srv.Certificate()))
	return c
}

// TestAnswers pins how every kind of answer is classified and reported.
func TestAnswers(t *testing.T) {
	issuer := newLocalCA(t, filepath.Join(t.TempDir(), "ca"), "ecdsa")
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "ANSWERS")
	good, err := issuer.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	other, err := issuer.Issue(context.Background(), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "OTHER"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, root, otherLeaf := jsonString(certPEM(good.Leaf)), jsonString(certPEM(issuer.Certificate())), jsonString(certPEM(other.Leaf))
	long := strings.Repeat("x", 2000)

	tests := []struct {
		name        string
		code        int
		header      http.Header
		body        string
		wantClass   ca.Class // ignored when wantChain >= 0
		wantChain   int      // >= 0: a certificate with this many chain certificates
		wantMessage string
		wantHint    time.Duration
		wantTicket  string
	}{
		{name: "issued", code: 200, body: `{"status":"issued","certificate":` + leaf + `,"chain":[` + root + `]}`, wantChain: 1},
		{name: "issued, chain inside certificate", code: 200, body: `{"status":"issued","certificate":` + jsonString(certPEM(good.Leaf)+certPEM(issuer.Certificate())) + `}`, wantChain: 1},
		{name: "issued, unknown fields ignored", code: 201, body: `{"status":"issued","certificate":` + leaf + `,"serial":"01"}`, wantChain: 0},
		{name: "pending 202", code: 202, body: `{"status":"pending","ticket":"T-1","retryAfterSeconds":7,"message":"awaiting approval"}`,
			wantChain: -1, wantClass: ca.ClassPending, wantTicket: "T-1", wantHint: 7 * time.Second, wantMessage: "awaiting approval"},
		{name: "pending 200 with Retry-After", code: 200, header: http.Header{"Retry-After": {"3"}}, body: `{"status":"pending"}`,
			wantChain: -1, wantClass: ca.ClassPending, wantHint: 3 * time.Second, wantMessage: "has not issued the certificate yet"},
		{name: "error 200 not retryable", code: 200, body: `{"status":"error","message":"subject not allowed","retryable":false}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "webhook answers: subject not allowed (HTTP 200)"},
		{name: "error 200 retryable", code: 200, body: `{"status":"error","message":"HSM busy","retryable":true,"retryAfterSeconds":2}`,
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: "HSM busy (HTTP 200)", wantHint: 2 * time.Second},
		{name: "error 400 without retryable", code: 400, body: `{"status":"error","message":"bad template"}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "bad template (HTTP 400)"},
		{name: "error 503 without retryable", code: 503, body: `{"status":"error","message":"maintenance"}`,
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: "maintenance (HTTP 503)"},
		{name: "error 500 not retryable", code: 500, body: `{"status":"error","message":"CA rejected the key size","retryable":false}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "CA rejected the key size (HTTP 500)"},
		{name: "error without message", code: 403, body: `{"status":"error"}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "no message (HTTP 403)"},
		{name: "429 text with Retry-After", code: 429, header: http.Header{"Retry-After": {"5"}}, body: "slow down",
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: "answered HTTP 429 Too Many Requests: slow down", wantHint: 5 * time.Second},
		{name: "401 text", code: 401, body: "No required SSL certificate was sent\n",
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "answered HTTP 401 Unauthorized: No required SSL certificate was sent"},
		{name: "502 HTML", code: 502, body: "<html><body>Bad Gateway</body></html>",
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: "answered HTTP 502 Bad Gateway"},
		{name: "404 with unknown status", code: 404, body: `{"status":"gone"}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: `answered HTTP 404 Not Found: status "gone"`},
		{name: "404 with a message only", code: 404, body: `{"message":"no such route"}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "HTTP 404 Not Found: no such route"},
		{name: "200 not JSON", code: 200, body: "<html>maintenance</html>",
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: `answered HTTP 200 with a body that is not a JSON answer (invalid character '<' looking for beginning of value): "<html>maintenance</html>"`},
		{name: "200 JSON array", code: 200, body: `[1,2]`,
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: "not a JSON answer"},
		{name: "200 JSON with a field of the wrong type", code: 200, body: `{"status":"pending","retryAfterSeconds":"soon"}`,
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: "retryAfterSeconds"},
		{name: "200 unknown status", code: 200, body: `{"status":"done"}`,
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: `status "done", which is not an answer to an issue request in certprov.webhook/v1`},
		{name: "200 notFound to an issue request", code: 200, body: `{"status":"notFound"}`,
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: `status "notFound"`},
		{name: "redirect", code: 302, header: http.Header{"Location": {"https://ca.example.com/v2?key=hunter2"}},
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "redirect (HTTP 302 to https://ca.example.com/v2)"},
		{name: "certificate for another key", code: 200, body: `{"status":"issued","certificate":` + otherLeaf + `}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "returned a certificate for a different key"},
		{name: "certificate not PEM", code: 200, body: `{"status":"issued","certificate":"MIIB..."}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "the issued certificate cannot be used: no PEM certificate"},
		{name: "certificate with a key block", code: 200, body: `{"status":"issued","certificate":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: `PEM block "PRIVATE KEY", want CERTIFICATE`},
		{name: "chain entry broken", code: 200, body: `{"status":"issued","certificate":` + leaf + `,"chain":["junk"]}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "chain[0] cannot be used"},
		{name: "oversized answer", code: 200, body: `{"status":"pending","message":"` + strings.Repeat("a", 1<<20) + `"}`,
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: "larger than 1048576 bytes"},
		{name: "ticket too long", code: 202, body: `{"status":"pending","ticket":"` + strings.Repeat("t", 5000) + `"}`,
			wantChain: -1, wantClass: ca.ClassRetryable, wantMessage: "pending ticket is 5000 bytes"},
		{name: "message with control characters, too long", code: 403, body: `{"status":"error","message":"line one\nline two\u0007` + long + `"}`,
			wantChain: -1, wantClass: ca.ClassPermanent, wantMessage: "line one line two xxx"},
	}
	c := newCannedServer(t)
	conn := newConnector(t, ca.Settings{"url": c.srv.URL, "tls": map[string]any{"caFile": serverCAFile}}, c.dir, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.answer <- func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header()[k] = v
				}
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, tc.body)
			}
			issued, err := conn.Issue(context.Background(), req)
			if tc.wantChain >= 0 {
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				catest.CheckIssued(t, req, issued, poolOf(issuer.Certificate()))
				if len(issued.Chain) != tc.wantChain {
					t.Errorf("chain of %d, want %d", len(issued.Chain), tc.wantChain)
				}
				return
			}
			if err == nil || issued != nil {
				t.Fatalf("Issue = %v, %v; want an error", issued, err)
			}
			class, hint := ca.Classify(err)
			if class != tc.wantClass || hint != tc.wantHint {
				t.Errorf("class %v hint %v, want %v %v: %v", class, hint, tc.wantClass, tc.wantHint, err)
			}
			if !strings.Contains(err.Error(), tc.wantMessage) {
				t.Errorf("error %q does not contain %q", err, tc.wantMessage)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.ContainsAny(err.Error(), "\n\a") {
				t.Errorf("error %q carries a secret or control characters", err)
			}
			if n := utf8.RuneCountInString(err.Error()); n > 450 {
				t.Errorf("error of %d characters", n)
			}
			var p *ca.PendingError
			if errors.As(err, &p) && p.Ticket != tc.wantTicket {
				t.Errorf("ticket %q, want %q", p.Ticket, tc.wantTicket)
			}
		})
	}
}

// TestRecoverAnswers covers the lookup answers Recover accepts and refuses.
func TestRecoverAnswers(t *testing.T) {
	issuer := newLocalCA(t, filepath.Join(t.TempDir(), "ca"), "ecdsa")
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "LOOKUP")
	good, err := issuer.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		code      int
		body      string
		wantFound bool
		wantErr   string // "" means no error
		wantClass ca.Class
	}{
		{"issued", 200, `{"status":"issued","certificate":` + jsonString(certPEM(good.Leaf)) + `}`, true, "", 0},
		{"notFound 404", 404, `{"status":"notFound"}`, false, "", 0},
		{"notFound 200", 200, `{"status":"notFound"}`, false, "", 0},
		{"still pending", 200, `{"status":"pending","ticket":"T"}`, false, "", 0},
		{"bare 404 is not an answer", 404, `404 page not found`, false, "HTTP 404 Not Found", ca.ClassPermanent},
		{"lookup unsupported", 400, `{"status":"error","message":"lookup is not supported"}`, false, "lookup is not supported (HTTP 400)", ca.ClassPermanent},
		{"server down", 503, `{"status":"error","message":"restarting"}`, false, "restarting (HTTP 503)", ca.ClassRetryable},
		{"unknown status", 200, `{"status":"maybe"}`, false, `status "maybe", which is not an answer to a lookup`, ca.ClassRetryable},
	}
	c := newCannedServer(t)
	rec := newConnector(t, ca.Settings{"url": c.srv.URL, "tls": map[string]any{"caFile": serverCAFile}}, c.dir, nil).(ca.Recoverer)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.answer <- func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, tc.body)
			}
			got, err := rec.Recover(context.Background(), req.Key)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Recover = %v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				if class, _ := ca.Classify(err); class != tc.wantClass {
					t.Errorf("class %v, want %v", class, tc.wantClass)
				}
				return
			}
			if err != nil {
				t.Fatalf("Recover: %v", err)
			}
			if (got != nil) != tc.wantFound {
				t.Fatalf("Recover found %v, want %v", got != nil, tc.wantFound)
			}
			if got != nil && !got.Leaf.Equal(good.Leaf) {
				t.Errorf("recovered serial %s, want %s", got.Leaf.SerialNumber, good.Leaf.SerialNumber)
			}
		})
	}
}

// TestSecretsStayHidden makes a server echo the request's headers back in its error, and checks
// that neither the API key nor the HMAC secret reaches an error message or a log line.
func TestSecretsStayHidden(t *testing.T) {
	c := newCannedServer(t)
	writeFile(t, c.dir, apiKeyFile, apiKey+"\n")
	writeFile(t, c.dir, secretFile, hmacSecret+"\n")
	core, logs := observer.New(zap.DebugLevel)
	conn := newConnector(t, ca.Settings{
		"url":            c.srv.URL + "/certs?token=url-token-0042",
		"tls":            map[string]any{"caFile": serverCAFile},
		"headers":        map[string]any{"Authorization": "Bearer static-token-77"},
		"headerFiles":    map[string]any{"X-Api-Key": apiKeyFile},
		"hmacSecretFile": secretFile,
	}, c.dir, zap.New(core))
	echo := func(code int) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			var b strings.Builder
			_ = r.Header.Write(&b)
			w.WriteHeader(code)
			_, _ = io.WriteString(w, `{"status":"error","message":`+jsonString("echo "+b.String()+" "+hmacSecret)+`}`)
		}
	}
	secrets := []string{apiKey, "static-token-77", hmacSecret, "url-token-0042"}
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "SECRETS")
	var texts []string
	for _, code := range []int{400, 500} {
		c.answer <- echo(code)
		_, err := conn.Issue(context.Background(), req)
		if err == nil {
			t.Fatal("Issue succeeded against an echoing server")
		}
		texts = append(texts, err.Error())
	}
	c.answer <- echo(418)
	texts = append(texts, errorText(conn.(ca.Pinger).Ping(context.Background())))
	c.answer <- echo(401)
	_, err := conn.(ca.Recoverer).Recover(context.Background(), req.Key)
	texts = append(texts, errorText(err))
	// A transport error names the URL: without its query.
	c.srv.Close()
	_, err = conn.Issue(context.Background(), req)
	texts = append(texts, errorText(err))
	if !strings.Contains(texts[len(texts)-1], strings.TrimPrefix(c.srv.URL, "https://")+"/certs") {
		t.Errorf("transport error %q does not name the URL", texts[len(texts)-1])
	}
	for _, e := range logs.All() {
		texts = append(texts, e.Message)
		for k, v := range e.ContextMap() {
			texts = append(texts, k+"="+fmt.Sprint(v))
		}
	}
	if logs.Len() == 0 {
		t.Error("no debug log of the calls")
	}
	texts = append(texts, conn.(interface{ String() string }).String())
	for _, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%q leaks %q", text, s)
			}
		}
	}
	if !strings.Contains(texts[0], "[redacted]") {
		t.Errorf("echoed secret not redacted: %q", texts[0])
	}
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestSignature checks the X-Certprov-Signature header against an independent computation and
// the clock the connector uses.
func TestSignature(t *testing.T) {
	c := newCannedServer(t)
	writeFile(t, c.dir, secretFile, "  "+hmacSecret+"\n\n")
	conn := newConnector(t, ca.Settings{"url": c.srv.URL, "tls": map[string]any{"caFile": serverCAFile}, "hmacSecretFile": secretFile}, c.dir, nil)
	type seen struct {
		header, requestID string
		body              []byte
	}
	got := make(chan seen, 1)
	c.answer <- func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- seen{r.Header.Get(webhook.SignatureHeader), r.Header.Get(webhook.RequestIDHeader), body}
		_, _ = io.WriteString(w, `{"status":"error","message":"stop here"}`)
	}
	before := time.Now().Unix()
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "SIGNED")
	if _, err := conn.Issue(context.Background(), req); err == nil {
		t.Fatal("want the server's error")
	}
	after := time.Now().Unix()
	s := <-got
	if s.requestID != req.Key {
		t.Errorf("%s = %q, want %q", webhook.RequestIDHeader, s.requestID, req.Key)
	}
	ts, mac, ok := strings.Cut(s.header, ",")
	if !ok || !strings.HasPrefix(ts, "t=") || !strings.HasPrefix(mac, "v1=") {
		t.Fatalf("header %q, want t=<unix>,v1=<hex>", s.header)
	}
	unix := parseInt(t, strings.TrimPrefix(ts, "t="))
	if unix < before || unix > after {
		t.Errorf("timestamp %d not within the call [%d, %d]", unix, before, after)
	}
	// The file's surrounding whitespace is not part of the key.
	if want := hmacHex(hmacSecret, strings.TrimPrefix(ts, "t=")+"."+string(s.body)); strings.TrimPrefix(mac, "v1=") != want {
		t.Errorf("v1=%s, want %s", strings.TrimPrefix(mac, "v1="), want)
	}
}

func newConnector(t *testing.T, settings ca.Settings, dir string, log *zap.Logger) ca.Connector {
	t.Helper()
	if log == nil {
		log = zap.NewNop()
	}
	c, err := ca.New(webhook.Type, settings, ca.Env{Name: "answers", BaseDir: dir, Logger: log})
	if err != nil {
		t.Fatalf("webhook connector: %v", err)
	}
	return c
}

func jsonString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func parseInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

func hmacHex(key, msg string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// TestRevokeAnswers pins how revoke answers are classified, and the request a service receives:
// the documented keys only, the serial as lower-case hex, the reason by name and code.
func TestRevokeAnswers(t *testing.T) {
	issuer := newLocalCA(t, filepath.Join(t.TempDir(), "ca"), "ecdsa")
	good, err := issuer.Issue(context.Background(), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REVOKEANSWERS"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		code      int
		body      string
		wantClass ca.Class // ignored when wantOK
		wantOK    bool
		wantMsg   string
	}{
		{name: "revoked", code: 200, body: `{"status":"revoked"}`, wantOK: true},
		{name: "not found", code: 404, body: `{"status":"notFound"}`, wantClass: ca.ClassPermanent, wantMsg: "the service issued no such certificate"},
		{name: "bare 404 (a wrong URL)", code: 404, body: `not here`, wantClass: ca.ClassPermanent, wantMsg: "HTTP 404"},
		{name: "revocation not supported", code: 400, body: `{"status":"error","message":"revoke not supported","retryable":false}`,
			wantClass: ca.ClassPermanent, wantMsg: "revoke not supported"},
		{name: "CA busy", code: 503, body: `{"status":"error","message":"CA database busy","retryable":true}`, wantClass: ca.ClassRetryable, wantMsg: "CA database busy"},
		{name: "pending is not an answer to a revocation", code: 202, body: `{"status":"pending","ticket":"x"}`,
			wantClass: ca.ClassRetryable, wantMsg: "not an answer to a revoke request"},
		{name: "maintenance page", code: 200, body: `<html>maintenance</html>`, wantClass: ca.ClassRetryable, wantMsg: "not a JSON answer"},
	}
	c := newCannedServer(t)
	conn := newConnector(t, ca.Settings{"url": c.srv.URL, "tls": map[string]any{"caFile": serverCAFile}}, c.dir, nil).(ca.Revoker)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan map[string]any, 1)
			c.answer <- func(w http.ResponseWriter, r *http.Request) {
				var body map[string]any
				_ = json.NewDecoder(r.Body).Decode(&body)
				body["X-Certprov-Request-Id"] = r.Header.Get("X-Certprov-Request-Id")
				got <- body
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, tc.body)
			}
			err := conn.Revoke(context.Background(), &ca.RevokeRequest{
				Serial: good.Leaf.SerialNumber, Certificate: good.Leaf, Key: "customers/C0/certificateProvisioningProcesses/REVOKEANSWERS", Reason: ca.ReasonSuperseded,
			})
			body := <-got
			want := map[string]any{
				"apiVersion": "certprov.webhook/v1", "revoke": true, "serialNumber": good.Leaf.SerialNumber.Text(16),
				"requestId": "customers/C0/certificateProvisioningProcesses/REVOKEANSWERS", "reason": "superseded", "reasonCode": float64(4),
				"certificate":           certPEM(good.Leaf),
				"X-Certprov-Request-Id": "customers/C0/certificateProvisioningProcesses/REVOKEANSWERS",
			}
			if len(body) != len(want) {
				t.Errorf("request %v, want exactly the keys of %v", body, want)
			}
			for k, v := range want {
				if body[k] != v {
					t.Errorf("request %s = %v, want %v", k, body[k], v)
				}
			}
			if tc.wantOK {
				if err != nil {
					t.Fatalf("Revoke: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Revoke succeeded")
			}
			if class, _ := ca.Classify(err); class != tc.wantClass || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Revoke: %v (%v); want %v mentioning %q", err, class, tc.wantClass, tc.wantMsg)
			}
		})
	}
}
