package catls

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
)

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	// The server's own certificate doubles as the client's (both from httptest), which is enough
	// to prove both directions are configured.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "hello "+r.TLS.PeerCertificates[0].Subject.String())
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	cert := srv.Certificate()
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", cert.Raw)
	key := srv.TLS.Certificates[0].PrivateKey
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "client.pem"), "CERTIFICATE", cert.Raw)
	writePEM(t, filepath.Join(dir, "client.key"), "PRIVATE KEY", keyDER)
	env := ca.Env{BaseDir: dir}

	tests := []struct {
		name    string
		opts    Options
		wantErr string // from the request; "" means success
	}{
		{"trusted with client certificate", Options{CAFile: "ca.pem", CertFile: "client.pem", KeyFile: "client.key", ServerName: "example.com"}, ""},
		{"untrusted server", Options{CertFile: "client.pem", KeyFile: "client.key"}, "certificate"},
		{"no client certificate", Options{CAFile: "ca.pem", ServerName: "example.com"}, "certificate"},
		{"wrong server name", Options{CAFile: "ca.pem", CertFile: "client.pem", KeyFile: "client.key", ServerName: "other.test"}, "other.test"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.opts.HTTPClient(env, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Get(srv.URL)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello") {
					t.Fatalf("%d %s", resp.StatusCode, body)
				}
				return
			}
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == 200 {
					t.Fatal("request succeeded")
				}
				return
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		opts Options
		want string
	}{
		"missing CA file":  {Options{CAFile: "nope.pem"}, "tls.caFile"},
		"CA file not PEM":  {Options{CAFile: "junk.pem"}, "no PEM"},
		"cert without key": {Options{CertFile: "c.pem"}, "go together"},
		"unreadable pair":  {Options{CertFile: "junk.pem", KeyFile: "junk.pem"}, "tls.certFile"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tc.opts.Config(ca.Env{BaseDir: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
