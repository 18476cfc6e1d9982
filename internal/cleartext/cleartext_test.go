package cleartext

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/pemutil"
)

func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LocalHost": true, "127.0.0.1": true, "127.8.9.10": true, "::1": true,
		"::ffff:127.0.0.1": true, "::1%lo": true,
		"": false, "0.0.0.0": false, "::": false, "10.0.0.1": false, "db.example.com": false,
		"localhost.example.com": false, "127.0.0.1.nip.io": false, "128.0.0.1": false, "[::1]": false,
	} {
		if got := LoopbackHost(host); got != want {
			t.Errorf("LoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

var endpointRule = Rule{Setting: "google.endpoint", OptOut: "google.insecureAllowCleartext", Secret: "the OAuth access token"}

func TestURL(t *testing.T) {
	for _, tt := range []struct {
		url     string
		exposed bool
		host    string
	}{
		{"https://chromemanagement.example.com/", false, ""},
		{"http://127.0.0.1:8480/", false, ""},
		{"http://localhost:8480/v1", false, ""},
		{"http://[::1]:8480/", false, ""},
		{"http://api.example.com/", true, "api.example.com"},
		{"HTTP://api.example.com:8080/x?key=hunter2", true, "api.example.com"},
		{"http://10.1.2.3/", true, "10.1.2.3"},
		{"http://[2001:db8::1]:80/", true, "2001:db8::1"},
		{"http://0.0.0.0:8480/", true, "0.0.0.0"},
		// Not http: validated elsewhere, no opinion here.
		{"ftp://api.example.com/", false, ""},
		{"://bad", false, ""},
	} {
		t.Run(tt.url, func(t *testing.T) {
			warning, err := endpointRule.URL(tt.url, false)
			if warning != nil {
				t.Fatalf("warning %v without the opt-out", warning)
			}
			if !tt.exposed {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var e *Exposure
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want an *Exposure", err)
			}
			if e.Host != tt.host {
				t.Errorf("host %q, want %q", e.Host, tt.host)
			}
			msg := err.Error()
			for _, want := range []string{"google.endpoint: ", "plain http", "the OAuth access token", tt.host, "use https", "google.insecureAllowCleartext: true"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("message %q shows the query", msg)
			}

			// With the opt-out the same exposure is a warning, and the connection goes ahead.
			warning, err = endpointRule.URL(tt.url, true)
			if err != nil || warning == nil || warning.Host != tt.host {
				t.Fatalf("with opt-out: warning %v, err %v", warning, err)
			}
		})
	}
}

func TestURLHidesCredentials(t *testing.T) {
	_, err := endpointRule.URL("http://svc:s3cret@ndes.example.com/certsrv/mscep_admin/", false)
	if err == nil {
		t.Fatal("accepted")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("message shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), "http://ndes.example.com/certsrv/mscep_admin/") {
		t.Errorf("message does not name the URL: %v", err)
	}
}

func TestWarnLogsTheAcceptedExposure(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	warning, err := endpointRule.URL("http://api.example.com/", true)
	if err != nil {
		t.Fatal(err)
	}
	warning.Warn(zap.New(core))
	var none *Exposure // what a check returns for a protected connection
	none.Warn(zap.New(core))
	entries := logs.All()
	if len(entries) != 1 || entries[0].Level != zapcore.WarnLevel {
		t.Fatalf("log entries %+v, want one warning", entries)
	}
	fields := entries[0].ContextMap()
	if fields["setting"] != "google.endpoint" || fields["host"] != "api.example.com" || !strings.Contains(entries[0].Message, "google.insecureAllowCleartext") {
		t.Errorf("warning %q %v", entries[0].Message, fields)
	}
}

var dsnRule = Rule{Setting: "journal.dsn", OptOut: "journal.insecureAllowCleartext", Secret: "the password and journal data"}

// clearPGEnv keeps the machine's PG* variables out of a test; each test sets what it needs.
func clearPGEnv(t *testing.T) {
	t.Helper()
	for _, v := range []string{"PGHOST", "PGPORT", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLNEGOTIATION", "PGSERVICE", "PGSERVICEFILE", "PGPASSWORD"} {
		t.Setenv(v, "") // pgx ignores empty variables
	}
	// pgx reads ~/.postgresql/root.crt as sslrootcert when it exists, which turns require into
	// verify-ca; an empty home keeps this test about what its DSNs say.
	t.Setenv("HOME", t.TempDir())
}

// rootCertFile writes a self-signed CA certificate for sslrootcert.
func rootCertFile(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "db CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(path, pemutil.EncodeCertificateDER(der), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPostgresDSN(t *testing.T) {
	clearPGEnv(t)
	root := rootCertFile(t)
	sock := t.TempDir()
	const pw = "Sup3r-s3cret"
	for _, tt := range []struct {
		name, dsn string
		env       map[string]string
		// want is empty when the DSN protects the password, else text the refusal must contain.
		want []string
	}{
		{name: "loopback disable (the test cluster)", dsn: "postgres://postgres@127.0.0.1:55432/certprov_test?sslmode=disable"},
		{name: "localhost kv disable", dsn: "host=localhost port=5432 user=u password=" + pw + " sslmode=disable"},
		{name: "ipv6 loopback", dsn: "postgres://u:" + pw + "@[::1]:5432/db?sslmode=disable"},
		{name: "unix socket", dsn: "host=" + sock + " user=u password=" + pw + " sslmode=disable"},
		{name: "unix socket in URL", dsn: "postgres://u:" + pw + "@/db?host=" + sock},
		{name: "verify-full", dsn: "postgres://u:" + pw + "@db.example.com:5432/db?sslmode=verify-full"},
		{name: "verify-full kv", dsn: "host=db.example.com user=u password='" + pw + "' sslmode=verify-full"},
		{name: "verify-ca", dsn: "postgres://u:" + pw + "@db.example.com/db?sslmode=verify-ca&sslrootcert=" + root},
		{name: "require with sslrootcert is verify-ca", dsn: "host=db.example.com password=" + pw + " sslmode=require sslrootcert=" + root},
		{name: "sslrootcert=system", dsn: "postgres://u:" + pw + "@db.example.com/db?sslrootcert=system"},
		{name: "PGSSLMODE verify-full", dsn: "postgres://u:" + pw + "@db.example.com/db", env: map[string]string{"PGSSLMODE": "verify-full"}},
		{name: "DSN sslmode beats PGSSLMODE", dsn: "postgres://u:" + pw + "@db.example.com/db?sslmode=verify-full", env: map[string]string{"PGSSLMODE": "disable"}},

		{name: "remote disable", dsn: "postgres://u:" + pw + "@db.example.com:5432/db?sslmode=disable",
			want: []string{"journal.dsn: sslmode=disable", "in clear to db.example.com:5432", "sslmode=verify-full", "journal.insecureAllowCleartext: true"}},
		{name: "remote disable kv", dsn: "host=db.example.com user=u password=" + pw + " sslmode=disable",
			want: []string{"sslmode=disable", "db.example.com:5432"}},
		{name: "remote allow", dsn: "postgres://u:" + pw + "@db.example.com/db?sslmode=allow", want: []string{"sslmode=allow"}},
		{name: "remote prefer", dsn: "postgres://u:" + pw + "@db.example.com/db?sslmode=prefer", want: []string{"sslmode=prefer"}},
		{name: "remote sslmode missing is prefer", dsn: "host=10.0.0.5 port=6432 user=u password=" + pw, want: []string{"sslmode=prefer", "10.0.0.5:6432"}},
		{name: "remote require", dsn: "postgres://u:" + pw + "@db.example.com/db?sslmode=require", want: []string{"sslmode=require", "does not verify"}},
		{name: "PGSSLMODE disable", dsn: "postgres://u:" + pw + "@db.example.com/db", env: map[string]string{"PGSSLMODE": "disable"},
			want: []string{"sslmode=disable", "PGSSLMODE=disable"}},
		{name: "PGHOST remote", dsn: "user=u password=" + pw + " sslmode=disable", env: map[string]string{"PGHOST": "db.example.com"},
			want: []string{"db.example.com:5432"}},
		{name: "second host remote", dsn: "postgres://u:" + pw + "@127.0.0.1:5432,db.example.com:5433/db?sslmode=disable",
			want: []string{"db.example.com:5433"}},
		{name: "direct negotiation turns prefer into require", dsn: "postgres://u:" + pw + "@db.example.com/db?sslnegotiation=direct",
			want: []string{"sslmode=require"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			warning, err := dsnRule.PostgresDSN(tt.dsn, false)
			if warning != nil {
				t.Fatalf("warning %v without the opt-out", warning)
			}
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var e *Exposure
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want an *Exposure", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("message shows the password: %v", err)
			}
			warning, err = dsnRule.PostgresDSN(tt.dsn, true)
			if err != nil || warning == nil || warning.Host != e.Host {
				t.Fatalf("with opt-out: warning %v, err %v", warning, err)
			}
		})
	}
}

func TestPostgresDSNParseErrorsHideTheString(t *testing.T) {
	clearPGEnv(t)
	const pw = "Sup3r-s3cret"
	for _, dsn := range []string{
		"postgres://u:" + pw + "@db.example.com:notaport/db",
		"host=db.example.com password=" + pw + " sslmode=verify_full",
		"host=db.example.com password='" + pw, // unterminated quote: pgx cannot tell where the password ends
		"postgres://u:" + pw + "/x@db.example.com/db?sslmode=disable&port=x",
		"host=db.example.com password=" + pw + " sslmode=verify-full sslrootcert=/nonexistent/root.pem",
	} {
		_, err := dsnRule.PostgresDSN(dsn, true)
		if err == nil {
			t.Errorf("%q: accepted", dsn)
			continue
		}
		var e *Exposure
		if errors.As(err, &e) {
			t.Errorf("%q: parse error reported as exposure: %v", dsn, err)
		}
		if !strings.HasPrefix(err.Error(), "journal.dsn: not a usable PostgreSQL connection string: ") {
			t.Errorf("%q: message %q", dsn, err)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("%q: message shows the password: %v", dsn, err)
		}
	}
}

// BenchmarkPostgresDSN measures the check Validate and Open run once per start.
func BenchmarkPostgresDSN(b *testing.B) {
	for b.Loop() {
		if _, err := dsnRule.PostgresDSN("postgres://u:pw@db.example.com:5432/db?sslmode=verify-full", false); err != nil {
			b.Fatal(err)
		}
	}
}
