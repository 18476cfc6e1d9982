package adapter

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/ca"
	_ "github.com/certprov/certprov-adapter/internal/ca/install"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/extension"
	"github.com/certprov/certprov-adapter/internal/googleauth"
)

// freeLoopbackAddr returns a loopback address with a port that was free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// startEmulator runs the emulator (project p, subscription s) with its REST API on a test
// server until the test ends.
func startEmulator(t *testing.T, log *zap.Logger) (*emulator.Emulator, *httptest.Server) {
	t.Helper()
	emu, err := emulator.New(context.Background(), emulator.Options{Project: "p", Subscription: "s", Logger: log.Named("emulator")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	rest := httptest.NewServer(emu.Handler())
	t.Cleanup(rest.Close)
	return emu, rest
}

// TestRunServesVerifiedAccess builds the daemon from a configuration with Verified Access
// enabled and enrolls a simulated device through it: the enrollment server is wired into Run and
// stops with it.
func TestRunServesVerifiedAccess(t *testing.T) {
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	emu, rest := startEmulator(t, log)

	dir := t.TempDir()
	certPath, keyPath, err := local.CreateCA(dir, "ecdsa", "adapter test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	listen := freeLoopbackAddr(t)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
instanceId: a1
customers: [C0demo]
pubsub: {project: p, subscription: s, endpoint: %q, insecure: true}
ops: {listen: "127.0.0.1:0"}
google: {credentials: {type: none}, endpoint: %q}
journal: {type: memory}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  builtin: {type: local, certificateFile: %q, keyFile: %q}
verifiedAccess:
  enabled: true
  insecure: true
  listen: %q
  endpoint: %q
  profiles:
    wifi:
      enrollmentDomain: example.com
      caConnection: builtin
      subject: {commonName: "{{.Signals.SerialNumber}}"}
      extendedKeyUsage: [clientAuth]
      policy: {keyTrustLevels: [CHROME_OS_VERIFIED_MODE], signals: {diskEncryption: [DISK_ENCRYPTION_ENCRYPTED]}}
`, emu.PubSubAddr(), rest.URL+"/", certPath, keyPath, listen, rest.URL+"/")), dir)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	a, err := New(ctx, cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() { _ = a.Close() })

	roots := x509.NewCertPool()
	issuer, err := local.New(ca.Settings{"certificateFile": certPath, "keyFile": keyPath}, ca.Env{})
	if err != nil {
		t.Fatal(err)
	}
	roots.AddCert(issuer.Certificate())
	var res *extension.EnrollResult
	deadline := time.Now().Add(10 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err = extension.Enroll(rctx, extension.EnrollOptions{
			AdapterURL: "http://" + listen, EmulatorURL: rest.URL, Profile: "wifi", KeyType: emulator.KeyECDSA, Roots: roots,
		})
		cancel()
		var aerr *extension.AdapterError
		if err == nil || errors.As(err, &aerr) || time.Now().After(deadline) || !strings.Contains(err.Error(), "connection refused") {
			break
		}
		time.Sleep(50 * time.Millisecond) // the server is still starting
	}
	if err != nil {
		t.Fatalf("enroll through the daemon: %v", err)
	}
	if res.Certificate.Subject.CommonName == "" {
		t.Errorf("certificate %v", res.Certificate.Subject)
	}

	stop()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	if _, err := http.Post("http://"+listen+"/v1/verifiedaccess/challenge", "application/json", strings.NewReader(`{"profile":"wifi"}`)); err == nil {
		t.Error("the enrollment server still answers after Run returned")
	}
}

// TestNewRefusesVerifiedAccessOnCSRConnectors: a profile on a connector that cannot issue for a
// bare key stops the daemon at startup, naming the key.
func TestNewRefusesVerifiedAccessOnCSRConnectors(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(`
instanceId: a1
customers: [C0demo]
pubsub: {project: p, subscription: s, endpoint: "127.0.0.1:1", insecure: true}
ops: {listen: "127.0.0.1:0"}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal: {type: memory}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  corp: {type: webhook, url: "https://ca.example.com/issue"}
verifiedAccess:
  enabled: true
  insecure: true
  endpoint: "http://127.0.0.1:1/"
  profiles:
    wifi: {enrollmentDomain: example.com, caConnection: corp, subject: {commonName: x}}
`), dir)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	_, err = New(context.Background(), cfg, zaptest.NewLogger(t))
	if err == nil || !strings.Contains(err.Error(), "verifiedAccess.profiles.wifi.caConnection") {
		t.Fatalf("New: %v", err)
	}
}

// TestGoogleCredentials: every credentials type the configuration accepts reaches googleauth as
// the same choice, with the key file and subject config.Load resolved.
func TestGoogleCredentials(t *testing.T) {
	for typ, want := range map[string]googleauth.Type{
		"": googleauth.ADC, config.CredentialsADC: googleauth.ADC, config.CredentialsServiceAccountKey: googleauth.ServiceAccountKey,
		config.CredentialsSelfSignedJWT: googleauth.SelfSignedJWT, config.CredentialsNone: googleauth.None,
	} {
		got := GoogleCredentials(config.Credentials{Type: typ, File: "/etc/certprov/sa.json", Subject: "admin@example.com"})
		if got != (googleauth.Credentials{Type: want, File: "/etc/certprov/sa.json", Subject: "admin@example.com"}) {
			t.Errorf("type %q: %+v, want type %q", typ, got, want)
		}
	}
}

// TestCheckRevokers: a profile that revokes superseded certificates is refused, at its YAML
// path, unless every CA connection it revokes through can revoke: a connector that is no
// ca.Revoker (est), or the built-in CA without a CRL to publish, is named with the fix; listing
// only connections that can revoke, or turning the option off, passes.
func TestCheckRevokers(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := local.CreateCA(filepath.Join(dir, "ca"), "ecdsa", "test CA", 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(revoke string) *config.Config {
		t.Helper()
		cfg, err := config.Parse([]byte(`
instanceId: a1
customers: [C0demo]
pubsub: {project: p, subscription: s}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal: {type: memory}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}, revokeSuperseded: `+revoke+`}
caConnections:
  crl: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key, crlFile: ca.crl}
  nocrl: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}
  est: {type: est, url: "https://est.example.com", username: "a", passwordFile: pw}
`), dir)
		if err != nil {
			t.Fatalf("config: %v", err)
		}
		return cfg
	}
	for _, tt := range []struct {
		revoke string
		want   []string // substrings of the error; none: no error
	}{
		{"{enabled: true}", []string{
			"profiles.device.revokeSuperseded: caConnections.est (type est) cannot revoke (its CA offers no revocation to the adapter)",
			"caConnections.nocrl (type local) cannot revoke (it publishes no CRL; set crlFile)",
			"list the connections this profile's certificates come from in profiles.device.revokeSuperseded.caConnections"}},
		{"{enabled: true, caConnections: [crl, est]}", []string{"caConnections.est (type est) cannot revoke", "remove it from the list"}},
		{"{enabled: true, caConnections: [crl]}", nil},
		{"{enabled: false}", nil},
	} {
		t.Run(tt.revoke, func(t *testing.T) {
			cfg := load(tt.revoke)
			conns, err := Connectors(cfg, zap.NewNop())
			if err != nil {
				t.Fatalf("Connectors: %v", err)
			}
			t.Cleanup(func() { _ = CloseConnectors(conns) })
			err = CheckRevokers(cfg, conns)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("CheckRevokers: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckRevokers accepted connections that cannot revoke")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "caConnections.crl ") {
				t.Errorf("error %q names the connection that can revoke", err)
			}
		})
	}
	// The reason is checked offline, with the profiles.
	if _, err := Profiles(load("{enabled: true, reason: sperseded}")); err == nil ||
		!strings.Contains(err.Error(), "profiles.device.revokeSuperseded.reason") || !strings.Contains(err.Error(), "superseded") {
		t.Errorf("Profiles with a misspelt reason: %v", err)
	}
}
