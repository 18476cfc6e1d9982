package stepca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// Tests against a real step-ca (deploy/local/servers/step-ca.sh).

func TestConformance(t *testing.T) {
	s := sharedCA(t)
	catest.RunTarget(t, func(t *testing.T) *catest.Target {
		return &catest.Target{
			Connector: s.connector(t, adminProvisioner),
			Roots:     s.Roots,
			Revocation: &catest.Revocation{
				Status: func(t testing.TB, cert *x509.Certificate) (bool, ca.Reason) {
					return s.crlStatus(t, cert.SerialNumber)
				},
				// step-ca records a revocation of any serial; only a certificate given can be checked.
				UnknownSerialAccepted: true,
			},
		}
	})
}

// requestFor builds a request for a CSR made with crypto/x509 (for names package csr does not
// produce, such as IP addresses), signed by key.
func requestFor(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest, validity time.Duration) *ca.Request {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca.Request{Key: "test/" + tmpl.Subject.CommonName, CSR: parsed, CSRDER: der, Validity: validity}
}

// TestIssuedNames proves the token names exactly what the CSR asks for, for every kind of name
// step-ca compares, with both device key types, and that the requested lifetime is honoured.
func TestIssuedNames(t *testing.T) {
	s := sharedCA(t)
	c := s.connector(t, adminProvisioner)
	ctx := ctxTimeout(t, 2*time.Minute)
	uri, _ := url.Parse("spiffe://example.com/device/42")
	tests := []struct {
		name     string
		key      catest.KeyType
		req      func(t *testing.T, key crypto.Signer) *ca.Request
		wantCN   string
		validity time.Duration
	}{
		{"catest request RSA", catest.RSA2048, func(t *testing.T, key crypto.Signer) *ca.Request {
			return catest.NewRequest(t, key, "NAMES0000000000000000000000000001")
		}, "user-NAMES0000000000000000000000000001@example.com", 24 * time.Hour},
		{"catest request P-256", catest.P256, func(t *testing.T, key crypto.Signer) *ca.Request {
			return catest.NewRequest(t, key, "NAMES0000000000000000000000000002")
		}, "user-NAMES0000000000000000000000000002@example.com", 24 * time.Hour},
		{"IP and URI, no CN", catest.P256, func(t *testing.T, key crypto.Signer) *ca.Request {
			return requestFor(t, key, &x509.CertificateRequest{
				IPAddresses: []net.IP{net.ParseIP("192.0.2.7"), net.ParseIP("2001:db8::7")},
				URIs:        []*url.URL{uri},
				DNSNames:    []string{"dev42.example.com"},
			}, 2*time.Hour)
		}, "dev42.example.com", 2 * time.Hour},
		{"CN only", catest.RSA2048, func(t *testing.T, key crypto.Signer) *ca.Request {
			return requestFor(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "SERIAL42"}}, 90*time.Minute)
		}, "SERIAL42", 90 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req(t, catest.DeviceKey(t, tc.key))
			issued, err := c.Issue(ctx, req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			catest.CheckIssued(t, req, issued, s.Roots)
			catest.CheckRoots(t, issued)
			leaf := issued.Leaf
			if leaf.Subject.CommonName != tc.wantCN {
				t.Errorf("CN %q, want %q", leaf.Subject.CommonName, tc.wantCN)
			}
			if len(req.CSR.DNSNames)+len(req.CSR.EmailAddresses)+len(req.CSR.IPAddresses)+len(req.CSR.URIs) == 0 {
				// step-ca's default template: a token without SANs gets its subject as SAN.
				if !slices.Equal(leaf.DNSNames, []string{tc.wantCN}) {
					t.Errorf("DNS names %v, want the CN as the only one", leaf.DNSNames)
				}
			} else {
				if !slices.Equal(leaf.DNSNames, req.CSR.DNSNames) || !slices.Equal(leaf.EmailAddresses, req.CSR.EmailAddresses) {
					t.Errorf("names DNS %v e-mail %v, CSR asked for %v %v", leaf.DNSNames, leaf.EmailAddresses, req.CSR.DNSNames, req.CSR.EmailAddresses)
				}
				if len(leaf.IPAddresses) != len(req.CSR.IPAddresses) || len(leaf.URIs) != len(req.CSR.URIs) {
					t.Errorf("IPs %v URIs %v, CSR asked for %v %v", leaf.IPAddresses, leaf.URIs, req.CSR.IPAddresses, req.CSR.URIs)
				}
			}
			// step-ca backdates notBefore by a minute and adds the requested duration to its own
			// clock, so the lifetime is exact.
			if got, want := leaf.NotAfter.Sub(leaf.NotBefore), tc.validity+time.Minute; got != want {
				t.Errorf("lifetime %v, want %v", got, want)
			}
		})
	}
}

// TestProvisionerKeyFile uses a decrypted JWK instead of a password.
func TestProvisionerKeyFile(t *testing.T) {
	s := sharedCA(t)
	ctx := ctxTimeout(t, time.Minute)
	settings := func(p string) ca.Settings {
		return ca.Settings{"url": s.URL, "rootFingerprint": s.Fingerprint, "provisioner": p, "provisionerKeyFile": s.KeyFile}
	}
	c, err := New(settings(keyFileProvisioner), ca.Env{})
	if err != nil {
		t.Fatal(err)
	}
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "KEYFILE00000000000000000000000001")
	issued, err := c.Issue(ctx, req)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	catest.CheckIssued(t, req, issued, s.Roots)

	// The same key file for another provisioner: refused before any token is sent.
	other, err := New(settings(adminProvisioner), ca.Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Issue(ctx, req)
	wantPermanent(t, err, `provisionerKeyFile`, `does not belong to step-ca provisioner "adapter"`)
}

// wantPermanent fails unless err is permanent and mentions every want.
func wantPermanent(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	t.Logf("error: %v", err)
	if !ca.IsPermanent(err) {
		c, _ := ca.Classify(err)
		t.Errorf("classified %v, want permanent: %v", c, err)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// selfSignedCA writes a CA certificate unrelated to step-ca, for tls.caFile cases.
func selfSignedCA(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the step-ca root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pemutil.EncodeCertificateDER(der), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// TestBootstrap covers the ways a connection is configured: each case is checked by Ping (as
// `validate --check-connections` does) and by Issue.
func TestBootstrap(t *testing.T) {
	s := sharedCA(t)
	dir := t.TempDir()
	wrongPW := filepath.Join(dir, "wrong-password")
	if err := os.WriteFile(wrongPW, []byte("not the password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(dir, "other-ca.pem")
	selfSignedCA(t, otherCA)
	stepRoot := filepath.Join(s.Dir, "certs", "root_ca.crt")

	tests := []struct {
		name   string
		change func(ca.Settings)
		wants  []string // empty: must work
	}{
		{"root fingerprint", func(ca.Settings) {}, nil},
		{"fingerprint with colons, upper case", func(st ca.Settings) {
			fp := strings.ToUpper(s.Fingerprint)
			var parts []string
			for i := 0; i < len(fp); i += 2 {
				parts = append(parts, fp[i:i+2])
			}
			st["rootFingerprint"] = strings.Join(parts, ":")
		}, nil},
		{"tls.caFile instead of a fingerprint", func(st ca.Settings) {
			delete(st, "rootFingerprint")
			st["tls"] = map[string]any{"caFile": stepRoot}
		}, nil},
		{"fingerprint checked over tls.caFile", func(st ca.Settings) {
			st["tls"] = map[string]any{"caFile": stepRoot, "serverName": "127.0.0.1"}
		}, nil},
		{"wrong provisioner password", func(st ca.Settings) { st["provisionerPasswordFile"] = wrongPW },
			[]string{`cannot decrypt the key of step-ca provisioner "adapter"`, "wrong password?"}},
		{"wrong root fingerprint", func(st ca.Settings) {
			st["rootFingerprint"] = strings.Repeat("ab", 32)
		}, []string{"has no root with fingerprint " + strings.Repeat("ab", 32), "check rootFingerprint"}},
		{"unknown provisioner", func(st ca.Settings) { st["provisioner"] = "nobody" },
			[]string{`no provisioner named "nobody"`, adminProvisioner, restrictedProvisioner}},
		{"tls.caFile of another CA", func(st ca.Settings) {
			delete(st, "rootFingerprint")
			st["tls"] = map[string]any{"caFile": otherCA}
		}, []string{"does not verify against the step-ca root"}},
		{"fingerprint right, tls.caFile of another CA", func(st ca.Settings) {
			st["tls"] = map[string]any{"caFile": otherCA}
		}, []string{"does not verify against the step-ca root"}},
		{"wrong tls.serverName", func(st ca.Settings) {
			st["tls"] = map[string]any{"serverName": "ca.invalid"}
		}, []string{"does not verify", "ca.invalid"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := s.settings(adminProvisioner)
			tc.change(st)
			c, err := New(st, ca.Env{})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ctx := ctxTimeout(t, time.Minute)
			pingErr := c.Ping(ctx)
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "BOOTSTRAP000000000000000000000001")
			issued, issueErr := c.Issue(ctx, req)
			if len(tc.wants) == 0 {
				if pingErr != nil {
					t.Fatalf("Ping: %v", pingErr)
				}
				if issueErr != nil {
					t.Fatalf("Issue: %v", issueErr)
				}
				catest.CheckIssued(t, req, issued, s.Roots)
				return
			}
			wantPermanent(t, pingErr, tc.wants...)
			wantPermanent(t, issueErr, tc.wants...)
			if strings.Contains(issueErr.Error(), caPassword) || strings.Contains(pingErr.Error(), caPassword) {
				t.Errorf("the password leaks into the error: %v", issueErr)
			}
		})
	}
}

// TestTokensAreNeverReused shows step-ca refuses a replayed token, and that the connector makes a
// new one for every call: the same request issued twice gives two certificates.
func TestTokensAreNeverReused(t *testing.T) {
	s := sharedCA(t)
	c := s.connector(t, adminProvisioner)
	ctx := ctxTimeout(t, time.Minute)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REPLAY00000000000000000000000001")

	t.Run("replayed token refused", func(t *testing.T) {
		sess, err := c.session(ctx)
		if err != nil {
			t.Fatal(err)
		}
		subject, sans, err := tokenNames(req.CSR)
		if err != nil {
			t.Fatal(err)
		}
		ott, err := sess.token(c, c.audience, subject, sans)
		if err != nil {
			t.Fatal(err)
		}
		body := signRequest{CSR: string(pemutil.EncodeCSR(req.CSRDER)), OTT: ott}
		var first signResponse
		if err := c.call(ctx, sess, http.MethodPost, "/1.0/sign", body, &first, ott); err != nil {
			t.Fatalf("first use of the token: %v", err)
		}
		if _, err := first.issued(); err != nil {
			t.Fatal(err)
		}
		var second signResponse
		err = c.call(ctx, sess, http.MethodPost, "/1.0/sign", body, &second, ott)
		wantPermanent(t, err, "HTTP 401", "refused the provisioner token")
		if strings.Contains(err.Error(), ott) {
			t.Error("the token leaks into the error")
		}
	})

	t.Run("each Issue has its own token", func(t *testing.T) {
		var serials []*big.Int
		for range 2 {
			issued, err := c.Issue(ctx, req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			catest.CheckIssued(t, req, issued, s.Roots)
			serials = append(serials, issued.Leaf.SerialNumber)
		}
		if serials[0].Cmp(serials[1]) == 0 {
			t.Fatal("two calls returned the same certificate")
		}
	})
}

// TestRefusals: a provisioner's template and an authority policy refuse names outside their
// domain, and a provisioner refuses a lifetime above its maximum; each refusal is permanent and
// carries step-ca's reason, and what is allowed is signed.
func TestRefusals(t *testing.T) {
	s := sharedCA(t)
	policyCA := newCA(t, caOptions{policy: map[string]any{
		"allow": map[string]any{"dns": []string{"*.devices.example.com"}, "email": []string{"@example.com"}},
	}})
	ctx := ctxTimeout(t, 2*time.Minute)
	// name is a DNS name, or an e-mail address (which then is the CN too); cn overrides the CN.
	csrFor := func(t *testing.T, cn, name string, validity time.Duration) *ca.Request {
		key := catest.DeviceKey(t, catest.P256)
		r := &csr.Request{
			Subject:     pkix.Name{CommonName: name},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if strings.Contains(name, "@") {
			r.EmailAddresses = []string{name}
		} else {
			r.DNSNames = []string{name}
		}
		if cn != "" {
			r.Subject.CommonName = cn
		}
		der := catest.SignedCSR(t, key, r)
		parsed, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		return &ca.Request{Key: "refused/" + name, CSR: parsed, CSRDER: der, Validity: validity}
	}
	tests := []struct {
		name     string
		ca       *stepCA
		prov     string
		cn, san  string
		validity time.Duration
		wants    []string // empty: issued
	}{
		{"template allows", s, restrictedProvisioner, "", "dev1" + allowedSuffix, time.Hour, nil},
		{"template refuses", s, restrictedProvisioner, "", "dev1.elsewhere.example.org", time.Hour, []string{
			"HTTP 400", "dev1.elsewhere.example.org is outside the names this provisioner may sign"}},
		{"policy allows a DNS name", policyCA, adminProvisioner, "", "dev1.devices.example.com", time.Hour, nil},
		{"policy allows an e-mail address", policyCA, adminProvisioner, "", "user1@example.com", time.Hour, nil},
		{"policy refuses a DNS name", policyCA, adminProvisioner, "", "dev1.elsewhere.example.org", time.Hour, []string{
			"HTTP 403", "refused the certificate", `dns name "dev1.elsewhere.example.org" not allowed`}},
		{"policy refuses an e-mail address", policyCA, adminProvisioner, "", "user1@elsewhere.example.org", time.Hour, []string{
			"HTTP 403", "refused the certificate", "user1@elsewhere.example.org"}},
		{"policy checks the CN too", policyCA, adminProvisioner, "SERIAL1", "serial1.devices.example.com", time.Hour, []string{
			"HTTP 403", "SERIAL1"}},
		{"lifetime at the default maximum (24h)", s, adminProvisioner, "", "dev2.example.com", 24 * time.Hour, nil},
		{"lifetime above the maximum", s, adminProvisioner, "", "dev3.example.com", 48 * time.Hour, []string{
			"HTTP 403", "more than the authorized maximum certificate duration of 24h1m0s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.ca.connector(t, tc.prov)
			req := csrFor(t, tc.cn, tc.san, tc.validity)
			issued, err := c.Issue(ctx, req)
			if len(tc.wants) == 0 {
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				catest.CheckIssued(t, req, issued, tc.ca.Roots)
				return
			}
			if issued != nil {
				t.Error("a certificate came back with the error")
			}
			wantPermanent(t, err, tc.wants...)
		})
	}
}

// TestCADown: with the CA stopped every call fails as retryable, and the same connector works
// again once the CA is back; a CA that never answered fails the same way at bootstrap.
func TestCADown(t *testing.T) {
	s := newCA(t, caOptions{})
	c := s.connector(t, adminProvisioner)
	ctx := ctxTimeout(t, 2*time.Minute)
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	s.stop()
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.RSA2048), "DOWN0000000000000000000000000001")
	wantRetryable := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("no error from a CA that is down")
		}
		if c, _ := ca.Classify(err); c != ca.ClassRetryable {
			t.Fatalf("classified %v, want retryable: %v", c, err)
		}
		if !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("error %q does not say the connection was refused", err)
		}
	}
	_, err := c.Issue(ctx, req)
	wantRetryable(t, err)
	wantRetryable(t, c.Ping(ctx))

	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	issued, err := c.Issue(ctx, req)
	if err != nil {
		t.Fatalf("Issue after the CA came back: %v", err)
	}
	catest.CheckIssued(t, req, issued, s.Roots)

	never, err := New(ca.Settings{
		"url": "https://" + testservers.FreeAddr(t), "rootFingerprint": s.Fingerprint,
		"provisioner": adminProvisioner, "provisionerPasswordFile": s.PasswordFile,
	}, ca.Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = never.Issue(ctx, req)
	wantRetryable(t, err)
	if strings.Contains(err.Error(), caPassword) {
		t.Errorf("the password leaks into the error: %v", err)
	}
}

// TestRevokeAgainstStepCA pins what Revoke relies on in step-ca's answers: a second revocation
// is refused with "already revoked" (which Revoke takes as done), a revoke token for another
// serial is refused permanently, and the revocation appears on step-ca's CRL with its reason.
func TestRevokeAgainstStepCA(t *testing.T) {
	s := sharedCA(t)
	c := s.connector(t, adminProvisioner)
	ctx := ctxTimeout(t, time.Minute)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REVOKEWORDING000000000000000001")
	issued, err := c.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	serial := issued.Leaf.SerialNumber
	if err := c.Revoke(ctx, &ca.RevokeRequest{Serial: serial, Reason: ca.ReasonAffiliationChanged}); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if ok, reason := s.crlStatus(t, serial); !ok || reason != ca.ReasonAffiliationChanged {
		t.Fatalf("CRL: revoked %v reason %v", ok, reason)
	}
	sess, err := c.session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	post := func(tokenSubject string) error {
		ott, err := sess.token(c, c.revokeAud, tokenSubject, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out struct{}
		return c.call(ctx, sess, http.MethodPost, "/1.0/revoke",
			revokeRequest{Serial: serial.String(), OTT: ott, ReasonCode: 1, Passive: true}, &out, ott)
	}
	err = post(serial.String())
	var he *httpError
	if !errors.As(err, &he) || he.code != http.StatusBadRequest || !strings.Contains(he.msg, "already revoked") {
		t.Fatalf("second revocation: %v; want HTTP 400 saying already revoked", err)
	}
	wantPermanent(t, post("12345"), "HTTP 403", "do not match")
	if err := c.Revoke(ctx, &ca.RevokeRequest{Serial: serial, Certificate: issued.Leaf, Reason: ca.ReasonKeyCompromise}); err != nil {
		t.Fatalf("Revoke again: %v", err)
	}
	if _, reason := s.crlStatus(t, serial); reason != ca.ReasonAffiliationChanged {
		t.Errorf("revoking again changed the reason to %v", reason)
	}
}

// TestX5CProvisioner: with an X5C provisioner the connector signs its tokens with a certificate
// under the provisioner's roots and passes the whole suite, revocation included; a certificate
// under another root, or X5C credentials for a JWK provisioner, are refused permanently.
func TestX5CProvisioner(t *testing.T) {
	s := sharedCA(t)
	x5cSettings := func(prov, cert, key string) ca.Settings {
		return ca.Settings{"url": s.URL, "rootFingerprint": s.Fingerprint, "provisioner": prov, "x5cCertFile": cert, "x5cKeyFile": key}
	}
	catest.RunTarget(t, func(t *testing.T) *catest.Target {
		c, err := New(x5cSettings(x5cProvisioner, s.X5CCertFile, s.X5CKeyFile), ca.Env{Name: "stepca-x5c"})
		if err != nil {
			t.Fatal(err)
		}
		return &catest.Target{
			Connector: c,
			Roots:     s.Roots,
			Revocation: &catest.Revocation{
				Status:                func(t testing.TB, cert *x509.Certificate) (bool, ca.Reason) { return s.crlStatus(t, cert.SerialNumber) },
				UnknownSerialAccepted: true,
			},
		}
	})

	ctx := ctxTimeout(t, time.Minute)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "X5CREFUSED0000000000000000000001")
	for _, tc := range []struct {
		name     string
		settings ca.Settings
		wants    []string
	}{
		{"certificate under another root", x5cSettings(x5cProvisioner, s.ForeignCertFile, s.ForeignKey),
			[]string{"HTTP 401", "refused the provisioner token"}},
		{"X5C credentials for a JWK provisioner", x5cSettings(adminProvisioner, s.X5CCertFile, s.X5CKeyFile),
			[]string{`provisioner "adapter" is of type JWK; x5cCertFile needs an X5C provisioner`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.settings, ca.Env{})
			if err != nil {
				t.Fatal(err)
			}
			issued, err := c.Issue(ctx, req)
			if issued != nil {
				t.Error("a certificate came back with the error")
			}
			wantPermanent(t, err, tc.wants...)
		})
	}

	// A credential that expires before the requested lifetime: the certificate ends with it
	// (step-ca would refuse a longer one), and is issued.
	short, err := New(x5cSettings(x5cProvisioner, s.ShortCertFile, s.ShortKeyFile), ca.Env{})
	if err != nil {
		t.Fatal(err)
	}
	shortReq := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "X5CSHORT00000000000000000000001")
	issued, err := short.Issue(ctx, shortReq)
	if err != nil {
		t.Fatalf("Issue with a credential shorter than the lifetime: %v", err)
	}
	catest.CheckIssued(t, shortReq, issued, s.Roots)
	if !issued.Leaf.NotAfter.Before(short.x5c.Leaf.NotAfter) || issued.Leaf.NotAfter.Before(short.x5c.Leaf.NotAfter.Add(-5*time.Minute)) {
		t.Errorf("certificate notAfter %s, want just before the credential's %s", issued.Leaf.NotAfter, short.x5c.Leaf.NotAfter)
	}

	// Settings: one credential, both halves, and a certificate step-ca would refuse.
	for _, tc := range []struct {
		settings ca.Settings
		want     string
	}{
		{ca.Settings{"url": s.URL, "rootFingerprint": s.Fingerprint, "provisioner": "p", "x5cCertFile": s.X5CCertFile}, "x5cCertFile and x5cKeyFile: set both"},
		{ca.Settings{"url": s.URL, "rootFingerprint": s.Fingerprint, "provisioner": "p", "x5cCertFile": s.X5CCertFile, "x5cKeyFile": s.X5CKeyFile,
			"provisionerPasswordFile": s.PasswordFile}, "set only one"},
		{x5cSettings("p", s.X5CCertFile, s.ForeignKey), "private key does not match public key"},
	} {
		_, err := New(tc.settings, ca.Env{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%v) = %v, want %q", tc.settings, err, tc.want)
		}
	}
}
