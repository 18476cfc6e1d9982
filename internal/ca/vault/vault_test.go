package vault

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/ca/leafcheck"
	"github.com/certprov/certprov-adapter/internal/csr"
)

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// appRoleAuth writes the fake's AppRole credentials to files and returns the auth block.
func (f *fakeVault) appRoleAuth(t testing.TB) map[string]any {
	t.Helper()
	dir := t.TempDir()
	r := f.approles["approle/certprov"]
	return map[string]any{
		"method":       MethodAppRole,
		"roleIDFile":   writeFile(t, dir, "role-id", r.roleID+"\n"),
		"secretIDFile": writeFile(t, dir, "secret-id", r.secretID+"\n"),
	}
}

// newConnector builds a connector to the fake with settings over the defaults (role devices,
// AppRole, the fake's TLS certificate trusted), its token clock the fake's.
func (f *fakeVault) newConnector(t testing.TB, over ca.Settings) (*Connector, *observer.ObservedLogs) {
	t.Helper()
	s := ca.Settings{
		"address": f.srv.URL,
		"role":    "devices",
		"auth":    f.appRoleAuth(t),
		"tls":     map[string]any{"caFile": f.caFile(t)},
	}
	for k, v := range over {
		if v == nil {
			delete(s, k)
			continue
		}
		s[k] = v
	}
	core, logs := observer.New(zap.DebugLevel)
	c, err := New(s, ca.Env{Name: "corp-vault", Logger: zap.New(core)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c.auth.now = f.clock.Now
	t.Cleanup(func() { _ = c.Close() })
	return c, logs
}

func ctxTimeout(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestConformance runs the shared suite against the fake, for both endpoints.
func TestConformance(t *testing.T) {
	for _, endpoint := range []string{EndpointSign, EndpointSignVerbatim} {
		t.Run(endpoint, func(t *testing.T) {
			catest.RunTarget(t, func(t *testing.T) *catest.Target {
				f := newFakeVault(t)
				c, _ := f.newConnector(t, ca.Settings{"endpoint": endpoint})
				return &catest.Target{
					Connector: c,
					Roots:     f.rootPool(),
					// Vault's revoke takes a serial only; its CRL entries carry no reason.
					Revocation: &catest.Revocation{Status: f.revocationStatus, ReasonNotRecorded: true},
				}
			})
		})
	}
}

// TestIssuedCertificate: the certificate carries the device key and every name of the request
// (DNS, e-mail, UPN, URI) and nothing else, the requested lifetime, the chain to the root; the
// roots come from the issuer endpoint, not from the sign answer. sign applies the role's
// subject (its organization, not the CSR's); sign-verbatim keeps the CSR's.
func TestIssuedCertificate(t *testing.T) {
	uri, _ := url.Parse("urn:chromeos:device:42")
	for _, tt := range []struct {
		endpoint string
		wantOrg  string
	}{{EndpointSign, "Vault Role Org"}, {EndpointSignVerbatim, "certprov catest"}} {
		t.Run(tt.endpoint, func(t *testing.T) {
			f := newFakeVault(t)
			c, _ := f.newConnector(t, ca.Settings{"endpoint": tt.endpoint})
			key := catest.DeviceKey(t, catest.P256)
			req := catest.NewRequest(t, key, "NAMES000000000000000000000000001")
			der := catest.SignedCSR(t, key, &csr.Request{
				Subject:        req.CSR.Subject,
				DNSNames:       req.CSR.DNSNames,
				EmailAddresses: req.CSR.EmailAddresses,
				URIs:           []*url.URL{uri},
				UPNs:           []string{"user-1@corp.example.com"},
				KeyUsage:       x509.KeyUsageDigitalSignature,
				ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			parsed, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			req.CSR, req.CSRDER, req.Validity = parsed, der, 36*time.Hour
			issued, err := c.Issue(ctxTimeout(t), req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			catest.CheckIssued(t, req, issued, f.rootPool())
			catest.CheckRoots(t, issued)
			if !issued.Roots.Equal(f.rootPool()) {
				t.Error("the roots are not the fake PKI's root")
			}
			leaf := issued.Leaf
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 36*time.Hour || got > 36*time.Hour+time.Minute {
				t.Errorf("lifetime %s, want 36h (plus Vault's 30s not_before_duration)", got)
			}
			if len(issued.Chain) != 2 || issued.Chain[1].Subject.CommonName != "Fake Vault Root" {
				t.Errorf("chain %v, want the intermediate and the root", issued.Chain)
			}
			if got := leaf.Subject.Organization; !slices.Equal(got, []string{tt.wantOrg}) {
				t.Errorf("organization %v, want [%s]", got, tt.wantOrg)
			}
			mismatches, err := leafcheck.Check(issued, leafcheck.Expectations{SPKI: req.CSR.RawSubjectPublicKeyInfo, CSR: parsed})
			if err != nil {
				t.Fatalf("leafcheck: %v", err)
			}
			for _, m := range mismatches {
				if m.Field != leafcheck.FieldExtKeyUsage || tt.endpoint == EndpointSignVerbatim { // the role adds serverAuth, as Vault's default server_flag does
					t.Errorf("names differ from the request: %s", m)
				}
			}
			if f.issuedCount() != 1 {
				t.Errorf("%d certificates stored, want 1", f.issuedCount())
			}
		})
	}
}

// TestRefusals: what Vault refuses reaches the engine as a permanent error carrying Vault's
// reason, and what Vault may answer later as retryable (with its Retry-After).
func TestRefusals(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(f *fakeVault) ca.Settings
		want      ca.Class
		retry     time.Duration
		wantInErr string
	}{
		{"name the role does not allow", func(f *fakeVault) ca.Settings {
			f.mounts["pki"].roles["devices"].allowedDomains = []string{"other.example"}
			return nil
		}, ca.ClassPermanent, 0, "common name user-R@example.com not allowed by this role"},
		{"UPN the role does not allow", func(f *fakeVault) ca.Settings {
			f.mounts["pki"].roles["devices"].allowedOtherSANs = nil
			return nil
		}, ca.ClassPermanent, 0, "other SAN user-R@corp.example.com not allowed"},
		{"role for RSA keys, a P-256 device", func(f *fakeVault) ca.Settings {
			f.mounts["pki"].roles["devices"].keyType = "rsa"
			return nil
		}, ca.ClassPermanent, 0, "role requires keys of type rsa"},
		{"unknown role", func(f *fakeVault) ca.Settings {
			f.policies["certprov"] = append(f.policies["certprov"], policyRule{"pki/sign/*", []string{"update"}})
			return ca.Settings{"role": "laptops"}
		}, ca.ClassPermanent, 0, "unknown role: laptops"},
		{"unknown mount", func(f *fakeVault) ca.Settings {
			f.policies["certprov"] = append(f.policies["certprov"], policyRule{"pki2/*", []string{"update", "read"}})
			return ca.Settings{"mount": "pki2", "caCertsFile": rootsFile(f)}
		}, ca.ClassPermanent, 0, "no handler for route"},
		{"policy does not grant the path", func(f *fakeVault) ca.Settings {
			f.policies["certprov"] = f.policies["certprov"][2:]
			return nil
		}, ca.ClassPermanent, 0, "permission denied"},
		{"bad AppRole secret", func(f *fakeVault) ca.Settings {
			a := f.appRoleAuth(f.t)
			a["secretIDFile"] = writeFile(f.t, f.t.TempDir(), "wrong", "not-the-secret-id\n")
			return ca.Settings{"auth": a}
		}, ca.ClassPermanent, 0, "invalid role or secret ID"},
		{"sealed", func(f *fakeVault) ca.Settings { f.sealed = true; return ca.Settings{"caCertsFile": rootsFile(f)} },
			ca.ClassRetryable, 0, "Vault is sealed"},
		{"rate limit quota", func(f *fakeVault) ca.Settings {
			f.failSign = []fakeFailure{{429, "7", []string{`request path "pki/sign/devices": rate limit quota exceeded`}}}
			return nil
		}, ca.ClassRetryable, 7 * time.Second, "rate limit quota exceeded"},
		{"performance standby behind", func(f *fakeVault) ca.Settings {
			f.failSign = []fakeFailure{{412, "", []string{"required index state not present"}}}
			return nil
		}, ca.ClassRetryable, 0, "not up to date"},
		{"internal error", func(f *fakeVault) ca.Settings {
			f.failSign = []fakeFailure{{500, "", []string{"1 error occurred:\n\t* failed to persist certificate\n\n"}}}
			return nil
		}, ca.ClassRetryable, 0, "Vault failed: failed to persist certificate"},
		{"no active node", func(f *fakeVault) ca.Settings {
			f.failSign = []fakeFailure{{503, "2", []string{"local node not active but active cluster node not found"}}}
			return nil
		}, ca.ClassRetryable, 2 * time.Second, "active cluster node not found"},
		{"TLS certificate not trusted", func(f *fakeVault) ca.Settings { return ca.Settings{"tls": nil} },
			ca.ClassPermanent, 0, "TLS certificate does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeVault(t)
			over := tt.setup(f)
			c, _ := f.newConnector(t, over)
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "R")
			issued, err := c.Issue(ctxTimeout(t), req)
			if err == nil || issued != nil {
				t.Fatalf("Issue succeeded: %v", issued)
			}
			class, retry := ca.Classify(err)
			if class != tt.want || retry != tt.retry {
				t.Errorf("classified %v (retry after %s), want %v (%s): %v", class, retry, tt.want, tt.retry, err)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not say %q", err, tt.wantInErr)
			}
			if strings.Contains(err.Error(), "secret-id-s3cr3t") || strings.Contains(err.Error(), "hvs.") {
				t.Errorf("error carries a secret: %v", err)
			}
			if f.issuedCount() != 0 {
				t.Errorf("%d certificates issued", f.issuedCount())
			}
		})
	}
}

func issueOne(t *testing.T, c *Connector, id string) (*ca.Request, *ca.Issued) {
	t.Helper()
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), id)
	issued, err := c.Issue(ctxTimeout(t), req)
	if err != nil {
		t.Fatalf("Issue %s: %v", id, err)
	}
	return req, issued
}

func rootsFile(f *fakeVault) string {
	return writeFile(f.t, f.t.TempDir(), "roots.pem", string(pemCert(f.root)))
}

// TestPolicyDeniedRetriesOnceWithNewToken: a 403 makes the connector log in again and ask
// once more; a second 403 is final. Neither issues.
func TestPolicyDeniedRetriesOnceWithNewToken(t *testing.T) {
	f := newFakeVault(t)
	f.policies["certprov"] = f.policies["certprov"][2:] // no sign paths
	c, _ := f.newConnector(t, nil)
	_, err := c.Issue(ctxTimeout(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "DENIED"))
	if !ca.IsPermanent(err) {
		t.Fatalf("want a permanent error, got %v", err)
	}
	if n := f.count("PUT", "auth/approle/login"); n != 2 {
		t.Errorf("%d logins, want 2 (the first token, then one more after the 403)", n)
	}
	if n := f.count("PUT", "pki/sign/devices"); n != 2 {
		t.Errorf("%d sign requests, want 2", n)
	}
}

// TestRevokedTokenReplaced: a token Vault revoked (403) is replaced by a new login, and the
// request succeeds with it.
func TestRevokedTokenReplaced(t *testing.T) {
	f := newFakeVault(t)
	c, _ := f.newConnector(t, nil)
	ctx := ctxTimeout(t)
	if _, err := c.Issue(ctx, catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "FIRST")); err != nil {
		t.Fatal(err)
	}
	first := f.tokensUsed("pki/sign/devices")[0]
	f.revokeToken(first)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "SECOND")
	issued, err := c.Issue(ctx, req)
	if err != nil {
		t.Fatalf("Issue after revocation: %v", err)
	}
	catest.CheckIssued(t, req, issued, f.rootPool())
	used := f.tokensUsed("pki/sign/devices")
	if len(used) != 3 || used[1] != first || used[2] == first {
		t.Errorf("tokens used %v: want the revoked one, then a new one", used)
	}
}

// TestLostAnswerIsNotRepeated injects the fault: Vault signs and stores the certificate, then
// the connection drops before the answer. The connector must not ask again (Vault cannot say
// what it signed for a request), so the process fails with exactly one certificate issued.
func TestLostAnswerIsNotRepeated(t *testing.T) {
	f := newFakeVault(t)
	f.loseSign = 1
	c, _ := f.newConnector(t, nil)
	_, err := c.Issue(ctxTimeout(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "LOST"))
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "not asking again") {
		t.Fatalf("want a permanent 'not asking again', got %v", err)
	}
	if n := f.count("PUT", "pki/sign/devices"); n != 1 {
		t.Errorf("%d sign requests, want exactly 1", n)
	}
	if n := f.issuedCount(); n != 1 {
		t.Errorf("%d certificates issued, want 1", n)
	}
}

// TestGatewayAfterSignIsNotRepeated: Vault signs and stores, then the proxy in front of it
// answers 502 or 504 instead of Vault's answer. That is the lost answer again, told by the
// proxy: the connector does not ask again, one certificate issued.
func TestGatewayAfterSignIsNotRepeated(t *testing.T) {
	for _, code := range []int{http.StatusBadGateway, http.StatusGatewayTimeout} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			f := newFakeVault(t)
			f.gatewayAfterSign = code
			c, _ := f.newConnector(t, nil)
			_, err := c.Issue(ctxTimeout(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "GATEWAY"))
			if !ca.IsPermanent(err) || !strings.Contains(err.Error(), fmt.Sprintf("a gateway in front of Vault answered HTTP %d", code)) ||
				!strings.Contains(err.Error(), "not asking again") {
				t.Fatalf("want a permanent 'not asking again' naming the gateway, got %v", err)
			}
			if n := f.count("PUT", "pki/sign/devices"); n != 1 {
				t.Errorf("%d sign requests, want exactly 1", n)
			}
			if n := f.issuedCount(); n != 1 {
				t.Errorf("%d certificates issued, want 1", n)
			}
		})
	}
}

// TestUnreachableIsRetryable: nothing listens, so nothing was sent: retryable.
func TestUnreachableIsRetryable(t *testing.T) {
	f := newFakeVault(t)
	c, _ := f.newConnector(t, ca.Settings{"caCertsFile": rootsFile(f)})
	f.srv.Close()
	_, err := c.Issue(ctxTimeout(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "DOWN"))
	if c, _ := ca.Classify(err); err == nil || c != ca.ClassRetryable {
		t.Fatalf("want retryable, got %v", err)
	}
}

// TestAppRoleRenewal follows a login token through its life on the fake clock: used as is, renewed
// (renew-self) once two thirds of its TTL passed, and replaced by a new login once renewal can
// extend it no further (its max TTL).
func TestAppRoleRenewal(t *testing.T) {
	f := newFakeVault(t) // AppRole tokens: TTL 1h, max TTL 4h
	c, _ := f.newConnector(t, nil)
	ctx := ctxTimeout(t)
	issue := func(id string) {
		t.Helper()
		if _, err := c.Issue(ctx, catest.NewRequest(t, catest.DeviceKey(t, catest.P256), id)); err != nil {
			t.Fatalf("Issue %s: %v", id, err)
		}
	}
	counts := func() (int, int) {
		return f.count("PUT", "auth/approle/login"), f.count("PUT", "auth/token/renew-self")
	}
	issue("A")
	f.clock.Advance(30 * time.Minute)
	issue("B")
	if l, r := counts(); l != 1 || r != 0 {
		t.Fatalf("after 30m: %d logins, %d renewals; want 1, 0", l, r)
	}
	f.clock.Advance(15 * time.Minute) // 45m of 60m
	issue("C")
	if l, r := counts(); l != 1 || r != 1 {
		t.Fatalf("after 45m: %d logins, %d renewals; want 1, 1", l, r)
	}
	// Renew every 45 minutes until the max TTL (4h) stops extending it.
	for range 8 {
		f.clock.Advance(45 * time.Minute)
		issue("D")
	}
	l, r := counts()
	if l < 2 {
		t.Fatalf("%d logins after passing the max TTL; want a new login", l)
	}
	if r < 4 {
		t.Errorf("%d renewals, want at least 4 before the max TTL", r)
	}
	used := f.tokensUsed("pki/sign/devices")
	if used[0] == used[len(used)-1] {
		t.Error("the token was never replaced")
	}
}

// TestTokenFileBackgroundRenewal: a token from tokenFile is looked up for its TTL and renewed in
// the background when the timer fires, while no request comes, so that an idle adapter keeps a
// token it could not obtain again.
func TestTokenFileBackgroundRenewal(t *testing.T) {
	f := newFakeVault(t)
	tok := f.newToken([]string{"default", "certprov"}, time.Hour, 0, true)
	file := writeFile(t, t.TempDir(), "token", tok+"\n")
	// The adapter starts when the token has 20 minutes left: renewals must still ask for the
	// hour it was created with, not the 20 minutes lookup-self reports.
	f.clock.Advance(40 * time.Minute)
	fire := make(chan time.Time)
	s := ca.Settings{"auth": map[string]any{"method": MethodToken, "tokenFile": file}}
	c, _ := f.newConnector(t, s)
	c.auth.after = func(time.Duration) <-chan time.Time { return fire }
	if err := c.Ping(ctxTimeout(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if n := f.count("GET", "auth/token/lookup-self"); n != 1 {
		t.Fatalf("%d lookups, want 1", n)
	}
	f.clock.Advance(15 * time.Minute) // 5 minutes left
	fire <- time.Now()                // the loop renews now...
	fire <- time.Now()                // ...and is waiting again, so the renewal is done
	if n := f.count("PUT", "auth/token/renew-self"); n != 1 {
		t.Fatalf("%d background renewals, want 1", n)
	}
	f.mu.Lock()
	ttl := f.tokens[tok].ttl
	f.mu.Unlock()
	if ttl != time.Hour {
		t.Fatalf("renewed for %s, want the token's creation TTL of 1h", ttl)
	}
	// Past the original hour the token lives on thanks to the renewal.
	f.clock.Advance(40 * time.Minute)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "IDLE")
	if _, err := c.Issue(ctxTimeout(t), req); err != nil {
		t.Fatalf("Issue after the original TTL: %v", err)
	}
	// Close (a reload, a stop) ends the loop: Close waits for it, so nothing receives after.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case fire <- time.Now():
		t.Error("the renewal loop still runs after Close")
	default:
	}
}

// TestTokenFileRotation: Vault Agent writes a new token to the file and the old one is revoked;
// the 403 makes the connector read the file again.
func TestTokenFileRotation(t *testing.T) {
	f := newFakeVault(t)
	old := f.newToken([]string{"default", "certprov"}, 0, 0, false)
	dir := t.TempDir()
	file := writeFile(t, dir, "token", old)
	c, _ := f.newConnector(t, ca.Settings{"auth": map[string]any{"method": MethodToken, "tokenFile": file}})
	ctx := ctxTimeout(t)
	if _, err := c.Issue(ctx, catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "OLD")); err != nil {
		t.Fatal(err)
	}
	fresh := f.newToken([]string{"default", "certprov"}, 0, 0, false)
	writeFile(t, dir, "token", fresh)
	f.revokeToken(old)
	if _, err := c.Issue(ctx, catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "NEW")); err != nil {
		t.Fatalf("Issue after rotation: %v", err)
	}
	used := f.tokensUsed("pki/sign/devices")
	if used[len(used)-1] != fresh {
		t.Errorf("last token used is not the rotated one")
	}
}

// TestKubernetesLogin: the service-account JWT is read again at every login (Kubernetes rotates
// projected tokens), and a JWT the TokenReview API refuses is a permanent error.
func TestKubernetesLogin(t *testing.T) {
	f := newFakeVault(t)
	dir := t.TempDir()
	jwtFile := writeFile(t, dir, "token", f.k8sRoles["kubernetes/certprov"].jwt)
	auth := map[string]any{"method": MethodKubernetes, "role": "certprov", "jwtFile": jwtFile}
	c, _ := f.newConnector(t, ca.Settings{"auth": auth})
	ctx := ctxTimeout(t)
	if _, err := c.Issue(ctx, catest.NewRequest(t, catest.DeviceKey(t, catest.RSA2048), "K8S1")); err != nil {
		t.Fatal(err)
	}
	// Kubernetes rotates the JWT; the Vault token expires (past its max TTL).
	f.mu.Lock()
	f.k8sRoles["kubernetes/certprov"].jwt = "eyJ.k8s-jwt-two.sig"
	f.mu.Unlock()
	writeFile(t, dir, "token", "eyJ.k8s-jwt-two.sig")
	f.clock.Advance(5 * time.Hour)
	if _, err := c.Issue(ctx, catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "K8S2")); err != nil {
		t.Fatalf("Issue with the rotated JWT: %v", err)
	}
	// A JWT the cluster no longer accepts.
	f.mu.Lock()
	f.k8sRoles["kubernetes/certprov"].jwt = "eyJ.k8s-jwt-three.sig"
	f.mu.Unlock()
	f.clock.Advance(5 * time.Hour)
	_, err := c.Issue(ctx, catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "K8S3"))
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "Kubernetes login") || strings.Contains(err.Error(), "jwt-two") {
		t.Fatalf("want a permanent Kubernetes login error without the JWT, got %v", err)
	}
}

// TestNamespace: mounts and auth live in a namespace; the connector sends it with every
// request, and without it Vault finds neither the login nor the mount.
func TestNamespace(t *testing.T) {
	f := newFakeVault(t)
	f.namespace = "team-a"
	c, _ := f.newConnector(t, ca.Settings{"namespace": "/team-a/"})
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "NS")
	issued, err := c.Issue(ctxTimeout(t), req)
	if err != nil {
		t.Fatalf("Issue in the namespace: %v", err)
	}
	catest.CheckIssued(t, req, issued, f.rootPool())
	for _, r := range f.requests {
		if r.namespace != "team-a" {
			t.Errorf("%s %s sent namespace %q", r.method, r.path, r.namespace)
		}
	}
	bare, _ := f.newConnector(t, ca.Settings{"caCertsFile": rootsFile(f)})
	if _, err := bare.Issue(ctxTimeout(t), req); !ca.IsPermanent(err) {
		t.Errorf("without the namespace: want a permanent error, got %v", err)
	}
}

// TestIssuerPath: with issuer set, the connector signs at <mount>/issuer/<ref>/sign/<role> and
// takes the roots from that issuer.
func TestIssuerPath(t *testing.T) {
	f := newFakeVault(t)
	c, _ := f.newConnector(t, ca.Settings{"issuer": "intermediate"})
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "ISSUER")
	issued, err := c.Issue(ctxTimeout(t), req)
	if err != nil {
		t.Fatal(err)
	}
	catest.CheckRoots(t, issued)
	if f.count("PUT", "pki/issuer/intermediate/sign/devices") != 1 || f.count("GET", "pki/issuer/intermediate/json") != 1 {
		t.Errorf("requests: %v", f.requests)
	}
}

// TestRevoke: revocation by serial is recorded by Vault, repeating it is harmless, an unknown
// serial and certificateHold are permanent errors.
func TestRevoke(t *testing.T) {
	f := newFakeVault(t)
	c, logs := f.newConnector(t, nil)
	ctx := ctxTimeout(t)
	issued, err := c.Issue(ctx, catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REVOKE"))
	if err != nil {
		t.Fatal(err)
	}
	rr := &ca.RevokeRequest{Serial: issued.Leaf.SerialNumber, Certificate: issued.Leaf, Key: "REVOKE", Reason: ca.ReasonSuperseded}
	if err := c.Revoke(ctx, rr); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if revoked, reason := f.revocationStatus(t, issued.Leaf); !revoked || reason != ca.ReasonUnspecified {
		t.Fatalf("the CRL lists the certificate: %v, with reason %v; want listed without a reason (Vault records none)", revoked, reason)
	}
	if err := c.Revoke(ctx, rr); err != nil {
		t.Fatalf("second Revoke: %v", err)
	}
	if logs.FilterMessage("vault revoked certificate").FilterField(zap.Stringer("reason", ca.ReasonSuperseded)).Len() != 2 {
		t.Errorf("revocations not logged with their reason")
	}
	err = c.Revoke(ctx, &ca.RevokeRequest{Serial: big.NewInt(0xabcdef), Reason: ca.ReasonKeyCompromise})
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "knows no certificate") {
		t.Errorf("unknown serial: %v", err)
	}
	// Another CA's certificate with the serial of one of this mount's.
	_, kept := issueOne(t, c, "KEPT")
	other := catest.NewRoot(t, "another CA")
	foreign := other.Sign(t, &x509.Certificate{SerialNumber: kept.Leaf.SerialNumber, Subject: kept.Leaf.Subject}, kept.Leaf.PublicKey)
	err = c.Revoke(ctx, &ca.RevokeRequest{Serial: foreign.SerialNumber, Certificate: foreign, Reason: ca.ReasonKeyCompromise})
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "not the one mount pki issued") {
		t.Errorf("foreign certificate: %v", err)
	}
	if revoked, _ := f.revocationStatus(t, kept.Leaf); revoked {
		t.Error("revoking a foreign certificate revoked this mount's certificate with its serial")
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Revoke(cancelled, &ca.RevokeRequest{Serial: kept.Leaf.SerialNumber, Reason: ca.ReasonSuperseded}); !errors.Is(err, context.Canceled) || ca.IsPermanent(err) {
		t.Errorf("cancelled Revoke: %v", err)
	}
	before := f.count("PUT", "pki/revoke")
	err = c.Revoke(ctx, &ca.RevokeRequest{Serial: issued.Leaf.SerialNumber, Reason: ca.ReasonCertificateHold})
	if !ca.IsPermanent(err) || f.count("PUT", "pki/revoke") != before {
		t.Errorf("certificateHold: %v (and %d requests sent)", err, f.count("PUT", "pki/revoke")-before)
	}
	f.mu.Lock()
	f.policies["certprov"] = slices.DeleteFunc(f.policies["certprov"], func(r policyRule) bool { return r.pattern == "pki/revoke" })
	f.mu.Unlock()
	if err := c.Revoke(ctx, rr); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("revoke without the policy: %v", err)
	}
}

// TestPing: a healthy Vault and a sufficient policy pass; a sealed Vault is retryable; a policy
// without update on the sign path is permanent and names the path.
func TestPing(t *testing.T) {
	f := newFakeVault(t)
	c, _ := f.newConnector(t, nil)
	ctx := ctxTimeout(t)
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if f.issuedCount() != 0 {
		t.Error("Ping issued a certificate")
	}
	f.mu.Lock()
	f.policies["certprov"] = f.policies["certprov"][2:]
	f.mu.Unlock()
	if err := c.Ping(ctx); !ca.IsPermanent(err) || !strings.Contains(err.Error(), `path "pki/sign/devices"`) {
		t.Errorf("Ping without the policy: %v", err)
	}
	f.mu.Lock()
	f.sealed = true
	f.mu.Unlock()
	if err := c.Ping(ctx); err == nil || ca.IsPermanent(err) || !strings.Contains(err.Error(), "sealed") {
		t.Errorf("Ping of a sealed Vault: %v", err)
	}
}

// TestSettings: every rule reports its key.
func TestSettings(t *testing.T) {
	base := func() ca.Settings {
		return ca.Settings{"address": "https://vault.example.com:8200", "role": "devices",
			"auth": map[string]any{"method": "token", "tokenFile": "/run/token"}}
	}
	tests := []struct {
		name string
		edit func(ca.Settings)
		key  string
		msg  string
	}{
		{"address missing", func(s ca.Settings) { delete(s, "address") }, "address", "required"},
		{"http elsewhere", func(s ca.Settings) { s["address"] = "http://vault.example.com:8200" }, "address", "only to a loopback"},
		{"credentials in address", func(s ca.Settings) { s["address"] = "https://u:p@vault.example.com" }, "address", "credentials"},
		{"path in address", func(s ca.Settings) { s["address"] = "https://vault.example.com/pki" }, "address", "path is not supported"},
		{"mount escapes", func(s ca.Settings) { s["mount"] = "pki/../sys" }, "mount", "a path of names"},
		{"role missing", func(s ca.Settings) { delete(s, "role") }, "role", "required with endpoint"},
		{"role with slash", func(s ca.Settings) { s["role"] = "a/b" }, "role", "letters"},
		{"endpoint", func(s ca.Settings) { s["endpoint"] = "issue" }, "endpoint", `"sign" or "sign-verbatim"`},
		{"no method", func(s ca.Settings) { s["auth"] = map[string]any{} }, "auth.method", "required"},
		{"token without file", func(s ca.Settings) { s["auth"] = map[string]any{"method": "token"} }, "auth.tokenFile", "required"},
		{"approle both role ids", func(s ca.Settings) {
			s["auth"] = map[string]any{"method": "approle", "roleID": "x", "roleIDFile": "/f"}
		}, "auth.roleID", "only one"},
		{"kubernetes without role", func(s ca.Settings) { s["auth"] = map[string]any{"method": "kubernetes"} }, "auth.role", "required"},
		{"key of another method", func(s ca.Settings) {
			s["auth"] = map[string]any{"method": "token", "tokenFile": "/t", "jwtFile": "/j"}
		}, "auth.jwtFile", "only with method kubernetes"},
		{"misspelt key", func(s ca.Settings) { s["rol"] = "x" }, "rol", `did you mean "role"`},
		{"misspelt method", func(s ca.Settings) { s["auth"] = map[string]any{"method": "aprole"} }, "auth.method", `did you mean "approle"?`},
		{"misspelt endpoint", func(s ca.Settings) { s["endpoint"] = "sign_verbatim" }, "endpoint", `did you mean "sign-verbatim"?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.edit(s)
			err := Check(s)
			var se *ca.SettingError
			if !errors.As(err, &se) {
				t.Fatalf("no setting error: %v", err)
			}
			found := false
			for _, e := range flattenErrs(err) {
				if errors.As(e, &se) && se.Key == tt.key && strings.Contains(se.Err.Error(), tt.msg) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem at %s saying %q: %v", tt.key, tt.msg, err)
			}
		})
	}
	if err := Check(base()); err != nil {
		t.Errorf("good settings: %v", err)
	}
	s := base()
	s["address"] = "http://127.0.0.1:8200"
	s["endpoint"] = "sign-verbatim"
	delete(s, "role")
	if err := Check(s); err != nil {
		t.Errorf("loopback http, sign-verbatim without role: %v", err)
	}
	// New reads the files: a missing one is reported at its key.
	_, err := New(base(), ca.Env{Name: "x"})
	var se *ca.SettingError
	if !errors.As(err, &se) || se.Key != "auth.tokenFile" {
		t.Errorf("missing token file: %v", err)
	}
}

func flattenErrs(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrs(e)...)
		}
		return out
	}
	return []error{err}
}

// TestCertificates: before Vault is contacted the connector holds no certificate; once it read
// the issuer's chain, it reports the issuer and the root for their expiry.
func TestCertificates(t *testing.T) {
	f := newFakeVault(t)
	c, _ := f.newConnector(t, nil)
	if held := c.Certificates(); len(held) != 0 {
		t.Fatalf("before contact: %v", held)
	}
	if err := c.Ping(ctxTimeout(t)); err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, h := range c.Certificates() {
		roles[h.Cert.Subject.CommonName] = h.Role
	}
	want := map[string]string{"Fake Vault Intermediate": ca.RoleIssuer, "Fake Vault Root": ca.RoleRoot}
	if !maps.Equal(roles, want) {
		t.Errorf("held %v, want %v", roles, want)
	}
	pinned, _ := f.newConnector(t, ca.Settings{"caCertsFile": rootsFile(f)})
	if held := pinned.Certificates(); len(held) != 1 || held[0].Role != ca.RoleRoot || !held[0].Cert.Equal(f.root) {
		t.Errorf("with caCertsFile: %v", held)
	}
}

// TestExampleConfig: the commented vault connection in configs/example.yaml, uncommented, passes
// the offline check, so the example an operator copies is valid.
func TestExampleConfig(t *testing.T) {
	if err := Check(catest.ExampleSettings(t, "corp-vault", Type)); err != nil {
		t.Errorf("the example fails the check: %v", err)
	}
}

// TestStandbyRedirect: a standby node answers 307 to the active node, as Vault's HA standbys do;
// the client follows it once with the token, and Vault signs once.
func TestStandbyRedirect(t *testing.T) {
	f := newFakeVault(t)
	standby := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/sys/health" {
			w.WriteHeader(http.StatusTooManyRequests) // a standby's health code, unless standbycode says otherwise
			return
		}
		http.Redirect(w, r, f.srv.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(standby.Close)
	c, _ := f.newConnector(t, ca.Settings{"address": standby.URL})
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "STANDBY")
	issued, err := c.Issue(ctxTimeout(t), req)
	if err != nil {
		t.Fatalf("Issue through a standby: %v", err)
	}
	catest.CheckIssued(t, req, issued, f.rootPool())
	if n := f.count("PUT", "pki/sign/devices"); n != 1 {
		t.Errorf("%d sign requests at the active node, want 1", n)
	}
	if used := f.tokensUsed("pki/sign/devices"); len(used) != 1 || used[0] == "" {
		t.Errorf("the redirected request carried no token: %q", used)
	}
}

// TestNoSecretInLogs: whatever the connector logs, at any level, while it logs in, renews,
// signs, is refused and revokes, holds neither the secret ID, the JWT nor a token.
func TestNoSecretInLogs(t *testing.T) {
	f := newFakeVault(t)
	c, logs := f.newConnector(t, nil)
	ctx := ctxTimeout(t)
	_, issued := issueOne(t, c, "LOGS1")
	f.clock.Advance(50 * time.Minute)
	issueOne(t, c, "LOGS2") // renews
	f.revokeToken(f.tokensUsed("pki/sign/devices")[0])
	issueOne(t, c, "LOGS3") // refused, logs in again
	if err := c.Revoke(ctx, &ca.RevokeRequest{Serial: issued.Leaf.SerialNumber, Reason: ca.ReasonSuperseded}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	var secrets []string
	for id := range f.tokens {
		secrets = append(secrets, id)
	}
	f.mu.Unlock()
	secrets = append(secrets, f.approles["approle/certprov"].secretID, f.k8sRoles["kubernetes/certprov"].jwt)
	if logs.Len() == 0 {
		t.Fatal("nothing logged")
	}
	for _, e := range logs.All() {
		text := e.Message + fmt.Sprint(e.ContextMap())
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("log %q holds a secret", text)
			}
		}
	}
}

// TestTTLCapped: a validity beyond the role's max_ttl is shortened by Vault, which says so in a
// warning; the connector logs it, and the engine gets the shorter certificate.
func TestTTLCapped(t *testing.T) {
	f := newFakeVault(t) // max_ttl 720h
	c, logs := f.newConnector(t, nil)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "LONG")
	req.Validity = 2000 * time.Hour
	issued, err := c.Issue(ctxTimeout(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := issued.Leaf.NotAfter.Sub(issued.Leaf.NotBefore); got > 720*time.Hour+time.Minute {
		t.Errorf("lifetime %s, want at most the role's 720h", got)
	}
	w := logs.FilterMessage("vault warning").All()
	if len(w) != 1 || !strings.Contains(w[0].ContextMap()["warning"].(string), "maxTTL") {
		t.Errorf("warnings logged: %v", w)
	}
}

// TestConcurrentFirstUseLogsInOnce: requests that arrive together before there is a token share
// one login.
func TestConcurrentFirstUseLogsInOnce(t *testing.T) {
	f := newFakeVault(t)
	c, _ := f.newConnector(t, nil)
	ctx := ctxTimeout(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), fmt.Sprintf("TOGETHER%d", i))
		wg.Go(func() { _, errs[i] = c.Issue(ctx, req) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := f.count("PUT", "auth/approle/login"); n != 1 {
		t.Errorf("%d logins for 8 concurrent first requests, want 1", n)
	}
}
