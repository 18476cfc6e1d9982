package webhook_test

import (
	"strings"
	"testing"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/webhook"
)

func TestSettings(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, secretFile, hmacSecret+"\n")
	writeFile(t, dir, "short.secret", "changeme\n")
	writeFile(t, dir, apiKeyFile, apiKey+"\n")
	writeFile(t, dir, "empty.key", "\n")
	writeFile(t, dir, "two-lines.key", "first-line-secret\nsecond-line-secret\n")

	const base = "https://ca.example.com/certprov"
	with := func(kv ...any) ca.Settings {
		s := ca.Settings{"url": base}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(s, kv[i].(string))
			} else {
				s[kv[i].(string)] = kv[i+1]
			}
		}
		return s
	}
	tests := []struct {
		name     string
		settings ca.Settings
		wantErr  []string // all must appear; none means success
	}{
		{"url only", with(), nil},
		{"everything", with("tls", map[string]any{"serverName": "ca.internal"}, "hmacSecretFile", secretFile,
			"headers", map[string]any{"X-Tenant": "corp"}, "headerFiles", map[string]any{"X-Api-Key": apiKeyFile}), nil},
		{"http to loopback", with("url", "http://127.0.0.1:8443/certprov"), nil},
		{"http to localhost", with("url", "http://localhost/"), nil},
		{"url missing", with("url", nil), []string{"url: required"}},
		{"caCertsFile missing", with("caCertsFile", "nope.pem"), []string{`caCertsFile: "nope.pem"`, "no such file"}},
		{"caCertsFile without certificates", with("caCertsFile", apiKeyFile), []string{`caCertsFile: "api.key"`, "no PEM CERTIFICATE block"}},
		{"http elsewhere", with("url", "http://ca.example.com/?key=hunter2"), []string{`url: "http://ca.example.com/": http is allowed only to a loopback address`}},
		{"not a URL", with("url", "https://ca.example.com/%zz?key=hunter2"), []string{"url: not a URL"}},
		{"other scheme", with("url", "ftp://ca.example.com/"), []string{"scheme must be https"}},
		{"no host", with("url", "https:///path"), []string{"no host"}},
		{"fragment", with("url", "https://ca.example.com/#x"), []string{"#fragment"}},
		{"credentials in url", with("url", "https://admin:hunter2@ca.example.com/"), []string{"must not carry credentials"}},
		{"unknown key", with("timout", "30s"), []string{"timout"}},
		{"connection timeout is the adapter's", with("timeout", "30s"), []string{"timeout"}},
		{"unknown tls key", with("tls", map[string]any{"caFiles": "x"}), []string{"caFiles"}},
		{"tls cert without key", with("tls", map[string]any{"certFile": "client.crt"}), []string{"tls.certFile and tls.keyFile go together"}},
		{"tls caFile missing", with("tls", map[string]any{"caFile": "nope.pem"}), []string{"tls.caFile"}},
		{"secret file missing", with("hmacSecretFile", "nope.secret"), []string{`hmacSecretFile: "nope.secret"`, "no such file"}},
		{"secret too short", with("hmacSecretFile", "short.secret"), []string{`hmacSecretFile: "short.secret": the secret is 8 bytes; use at least 16`}},
		{"header file missing", with("headerFiles", map[string]any{"X-Api-Key": "nope.key"}), []string{"headerFiles.X-Api-Key", "no such file"}},
		{"header file empty", with("headerFiles", map[string]any{"X-Api-Key": "empty.key"}), []string{"headerFiles.X-Api-Key: empty value"}},
		{"header file of two lines", with("headerFiles", map[string]any{"X-Api-Key": "two-lines.key"}), []string{"headerFiles.X-Api-Key: the value is not a valid header value"}},
		{"header name invalid", with("headers", map[string]any{"X Api Key": "v"}), []string{"headers.X Api Key: not a valid header name"}},
		{"header value with CRLF", with("headers", map[string]any{"X-Tenant": "corp\r\nX-Evil: 1"}), []string{"headers.X-Tenant: the value is not a valid header value"}},
		{"reserved header", with("headers", map[string]any{"content-type": "text/plain"}), []string{"headers.content-type: set by the connector itself"}},
		{"reserved signature header", with("headerFiles", map[string]any{"X-Certprov-Signature": apiKeyFile}), []string{"headerFiles.X-Certprov-Signature: set by the connector itself"}},
		{"header set twice", with("headers", map[string]any{"x-api-key": "a"}, "headerFiles", map[string]any{"X-Api-Key": apiKeyFile}),
			[]string{"headerFiles.X-Api-Key: also set in headers"}},
		{"every problem at once", with("url", "http://ca.example.com/", "hmacSecretFile", "short.secret", "headers", map[string]any{"Host": "x"}),
			[]string{"url", "hmacSecretFile", "headers.Host"}},
	}
	leaks := []string{"hunter2", "first-line-secret", "X-Evil", "changeme", apiKey}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := ca.New(webhook.Type, tc.settings, ca.Env{Name: "corp", BaseDir: dir})
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if conn == nil {
					t.Fatal("New returned no connector")
				}
				return
			}
			if err == nil {
				t.Fatal("New accepted the settings")
			}
			if conn != nil {
				t.Error("New returned a connector with its error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, `webhook connector "corp": `) {
				t.Errorf("error %q does not name the connection", msg)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			for _, secret := range leaks {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q leaks %q", msg, secret)
				}
			}
		})
	}
}
