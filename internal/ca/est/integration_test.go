package est

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// TestConformance runs the connector suite against the real estserver, with trust anchors
// fetched from /cacerts and with an explicit caCertsFile.
func TestConformance(t *testing.T) {
	srv := startESTServer(t)
	for _, tc := range []struct {
		name     string
		settings ca.Settings
	}{
		{"cacerts", nil},
		{"caCertsFile", ca.Settings{"caCertsFile": srv.CACertsFile}},
		{"label", ca.Settings{"label": "devices"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			catest.Run(t, func(t *testing.T) (ca.Connector, *x509.CertPool) {
				return newConnector(t, "est", srv.settings(tc.settings)), srv.roots()
			})
		})
	}
	// An RA in front of the server that queues enrollments for approval (202 until approved).
	t.Run("approval", func(t *testing.T) {
		catest.RunTarget(t, func(t *testing.T) *catest.Target {
			f := newFront(t, srv, nil)
			return &catest.Target{
				Connector: newConnector(t, "est", srv.settings(ca.Settings{"url": f.URL, "tls": map[string]any{"caFile": f.CAFile}})),
				Roots:     srv.roots(),
				Pending: &catest.PendingControl{
					Hold:    func(testing.TB) { f.hold(true) },
					Approve: func(testing.TB) { f.hold(false) },
				},
			}
		})
	})
}

// TestIssueRealServer covers what the suite does not: the chain the connector returns, the TLS
// client certificate, the label path and estserver's triggered errors, each against the server.
func TestIssueRealServer(t *testing.T) {
	srv := startESTServer(t)
	downAddr := testservers.FreeAddr(t)
	// estserver verifies a client certificate only when one is sent, and Go's TLS client sends
	// none that the server's CA list does not name, so a front that requires one tells whether
	// the adapter authenticates with it.
	mtls := newFront(t, srv, func(f *front) { f.clientCAs = pool(srv.ClientCA) })
	viaMTLS := func(cert, key string) ca.Settings {
		t := map[string]any{"caFile": mtls.CAFile}
		if cert != "" {
			t["certFile"], t["keyFile"] = cert, key
		}
		return ca.Settings{"url": mtls.URL, "tls": t}
	}
	tests := []struct {
		name     string
		settings ca.Settings
		cn       string // CSR common name; estserver's triggers key on it
		// want is "" for an issued certificate, else the class and a part of the message.
		wantClass ca.Class
		want      string
	}{
		{name: "plain", settings: srv.settings(nil)},
		{name: "client certificate", settings: srv.settings(ca.Settings{
			"tls": map[string]any{"caFile": srv.TLSCAFile, "certFile": srv.ClientCert, "keyFile": srv.ClientKey},
		})},
		{name: "client certificate required and given", settings: viaMTLS(srv.ClientCert, srv.ClientKey)},
		{name: "client certificate from an unknown CA", settings: viaMTLS(srv.OtherClientCert, srv.OtherClientKey),
			wantClass: ca.ClassPermanent, want: "refused the adapter's TLS client certificate"},
		{name: "client certificate expired", settings: viaMTLS(srv.ExpiredClientCert, srv.ExpiredClientKey),
			wantClass: ca.ClassPermanent, want: "refused the adapter's TLS client certificate (TLS alert certificate expired)"},
		{name: "client certificate missing", settings: viaMTLS("", ""),
			wantClass: ca.ClassPermanent, want: "the server requires a TLS client certificate (TLS alert certificate required); set tls.certFile"},
		{name: "server certificate not trusted", settings: srv.settings(ca.Settings{"tls": map[string]any{}}),
			wantClass: ca.ClassRetryable, want: "TLS certificate is not trusted"},
		{name: "label with an ordinary subject", settings: srv.settings(ca.Settings{"label": "triggererrors", "caCertsFile": srv.CACertsFile})},
		{name: "forbidden", settings: srv.settings(ca.Settings{"label": "triggererrors", "caCertsFile": srv.CACertsFile}),
			cn: "Trigger Error Forbidden", wantClass: ca.ClassPermanent, want: "HTTP 403 Forbidden: 403 triggered forbidden response"},
		{name: "deferred", settings: srv.settings(ca.Settings{"label": "triggererrors", "caCertsFile": srv.CACertsFile}),
			cn: "Trigger Error Deferred", wantClass: ca.ClassPending, want: "HTTP 202"},
		{name: "server error", settings: srv.settings(ca.Settings{"label": "triggererrors", "caCertsFile": srv.CACertsFile}),
			cn: "Trigger Error Unknown", wantClass: ca.ClassRetryable, want: "HTTP 500"},
		// Without caCertsFile the connector needs /cacerts first, which this label fails on purpose.
		{name: "cacerts fails", settings: srv.settings(ca.Settings{"label": "triggererrors"}),
			wantClass: ca.ClassRetryable, want: "EST cacerts"},
		{name: "server down", settings: ca.Settings{"url": "https://" + downAddr, "caCertsFile": srv.CACertsFile},
			wantClass: ca.ClassRetryable, want: "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := newConnector(t, "est", tc.settings)
			key := catest.DeviceKey(t, catest.P256)
			req := catest.NewRequest(t, key, "REAL0000000000000000000000000000")
			if tc.cn != "" {
				req = requestWithCN(t, key, tc.cn)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			issued, err := conn.Issue(ctx, req)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				catest.CheckIssued(t, req, issued, srv.roots())
				catest.CheckRoots(t, issued)
				if len(issued.Chain) != 1 || !issued.Chain[0].Equal(srv.Issuing) {
					t.Fatalf("chain %v, want the issuing CA only", subjects(issued.Chain))
				}
				// What the expiry metrics see: the anchors the certificate was checked against,
				// and the client certificate when one is configured.
				roles, root := map[string]int{}, false
				for _, h := range conn.Certificates() {
					roles[h.Role]++
					root = root || (h.Role == ca.RoleRoot && h.Cert.Equal(srv.Root))
				}
				tlsBlock, _ := tc.settings["tls"].(map[string]any)
				_, withClient := tlsBlock["certFile"]
				if !root || (roles[ca.RoleClient] == 1) != withClient {
					t.Errorf("held certificates by role %v (client certificate configured: %v)", roles, withClient)
				}
				return
			}
			if err == nil {
				t.Fatalf("Issue succeeded (leaf %s), want a %v error", issued.Leaf.Subject, tc.wantClass)
			}
			t.Logf("error: %v", err)
			if issued != nil {
				t.Errorf("Issue returned a certificate with its error")
			}
			if class, _ := ca.Classify(err); class != tc.wantClass {
				t.Errorf("error classified %v, want %v: %v", class, tc.wantClass, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if tc.wantClass == ca.ClassPending {
				if class, after := ca.Classify(err); class == ca.ClassPending && after != 600*time.Second {
					t.Errorf("pending retry after %v, want the server's 600s", after)
				}
			}
		})
	}
}

// TestPingRealServer checks the health check against the server, on a served and a failing label.
func TestPingRealServer(t *testing.T) {
	srv := startESTServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := newConnector(t, "est", srv.settings(nil)).Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	err := newConnector(t, "est", srv.settings(ca.Settings{"label": "triggererrors"})).Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "HTTP 500") {
		t.Fatalf("Ping on a failing label: %v, want the server's 500", err)
	}
}

func subjects(certs []*x509.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = c.Subject.CommonName
	}
	return out
}

// TestEndToEnd drives ChromeOS processes through the emulator, Pub/Sub and the engine to the real
// estserver, directly and through fronts (basic authentication, a first answer of 202), with RSA
// and P-256 device keys in device and user scope, and the failure paths next to them.
func TestEndToEnd(t *testing.T) {
	srv := startESTServer(t)
	basic := newFront(t, srv, func(f *front) { f.user, f.password = "adapter", "s3cret-Passw0rd" })
	pending := newFront(t, srv, func(f *front) { f.deferFirst = true })
	triggers := newFront(t, srv, nil)
	mtls := newFront(t, srv, func(f *front) { f.clientCAs = pool(srv.ClientCA) })
	downAddr := testservers.FreeAddr(t)

	dir := t.TempDir()
	rightPassword := writeFile(t, dir, "right.pw", []byte("s3cret-Passw0rd\n"))
	wrongPassword := writeFile(t, dir, "wrong.pw", []byte("not-the-password\n"))
	viaFront := func(f *front, extra ca.Settings) ca.Settings {
		s := ca.Settings{"url": f.URL, "tls": map[string]any{"caFile": f.CAFile}}
		for k, v := range extra {
			s[k] = v
		}
		return s
	}
	connections := map[string]ca.Settings{
		"est":        srv.settings(nil),
		"est-label":  srv.settings(ca.Settings{"label": "devices"}),
		"est-mtls":   {"url": mtls.URL, "tls": map[string]any{"caFile": mtls.CAFile, "certFile": srv.ClientCert, "keyFile": srv.ClientKey}},
		"est-basic":  viaFront(basic, ca.Settings{"username": "adapter", "passwordFile": rightPassword}),
		"est-wrong":  viaFront(basic, ca.Settings{"username": "adapter", "passwordFile": wrongPassword}),
		"est-defer":  viaFront(pending, nil),
		"est-mtls-x": {"url": mtls.URL, "tls": map[string]any{"caFile": mtls.CAFile, "certFile": srv.OtherClientCert, "keyFile": srv.OtherClientKey}},
		"est-trig":   viaFront(triggers, ca.Settings{"label": "triggererrors", "caCertsFile": srv.CACertsFile}),
		"est-down":   ca.Settings{"url": "https://" + downAddr, "tls": map[string]any{"caFile": srv.TLSCAFile}},
	}
	// Long enough for a deferred enrollment to come round again on a loaded machine, short enough
	// for the failure paths to end quickly.
	const retryFor = 6 * time.Second
	profiles := map[string]config.Profile{}
	for _, cn := range []string{"Forbidden", "Deferred", "Unknown"} {
		profiles["trigger-"+strings.ToLower(cn)] = e2etest.Profile("Trigger Error "+cn, "", 30*time.Second)
	}
	h := e2etest.New(t, e2etest.Options{
		RetryFor: retryFor,
		Profiles: profiles,
		CAs: func(*e2etest.Harness) map[string]ca.Connector {
			out := map[string]ca.Connector{}
			for name, s := range connections {
				out[name] = newConnector(t, name, s)
			}
			return out
		},
	})

	// Processes that must be issued: every way in to the server, both key types, both scopes.
	issuing := []string{"est", "est-label", "est-mtls", "est-basic", "est-defer", "est-trig"}
	var good []string
	goodCA := map[string]string{}
	for i := range 24 {
		conn := issuing[i%len(issuing)]
		name := h.Start(emulator.ProcessSpec{
			CARef:   conn,
			KeyType: []string{"rsa", "ecdsa"}[i%2],
			Scope:   []string{"device", "device", "user", "user"}[i%4],
			Serial:  fmt.Sprintf("EST-E2E-%02d", i),
		})
		good = append(good, name)
		goodCA[name] = conn
	}

	failures := []struct {
		name, conn, profile string
		want                []string
	}{
		{"wrong password", "est-wrong", "", []string{"refused the adapter's credentials", "HTTP 401"}},
		{"unknown client certificate", "est-mtls-x", "", []string{"refused the adapter's TLS client certificate"}},
		{"forbidden", "est-trig", "trigger-forbidden", []string{"refused the request", "HTTP 403", "triggered forbidden response"}},
		{"server error", "est-trig", "trigger-unknown", []string{"kept failing for " + retryFor.String(), "HTTP 500"}},
		{"always deferred", "est-trig", "trigger-deferred", []string{"did not issue the certificate within " + retryFor.String()}},
		{"server down", "est-down", "", []string{"kept failing for " + retryFor.String(), "connection refused"}},
	}
	var bad []string
	for _, f := range failures {
		bad = append(bad, h.Start(emulator.ProcessSpec{CARef: f.conn, ProfileRef: f.profile, KeyType: "ecdsa"}))
	}

	snaps := h.WaitFinished(append(append([]string(nil), good...), bad...), 3*time.Minute)
	roots, inters := srv.roots(), pool(srv.Issuing)
	for _, name := range good {
		s := snaps[name]
		// MustIssue verifies without intermediates, so anchor it at the issuing CA, then check the
		// full path up to the server's root as well.
		leaf := h.MustIssue(s, inters)
		if _, err := emulator.VerifyIssued(s, roots, inters); err != nil {
			t.Errorf("%s via %s: %v", name, goodCA[name], err)
		}
		if s.Scope == "user" && (len(leaf.EmailAddresses) != 1 || leaf.Subject.CommonName != leaf.EmailAddresses[0]) {
			t.Errorf("%s: user certificate CN %q SAN %v", name, leaf.Subject.CommonName, leaf.EmailAddresses)
		}
		switch goodCA[name] {
		case "est-defer":
			if req, fwd := pending.counts(s.SPKI); req != 2 || fwd != 1 {
				t.Errorf("%s: %d enrollments reached the deferring front, %d the server; want 2 and 1", name, req, fwd)
			}
		case "est-basic":
			if req, fwd := basic.counts(s.SPKI); req != 1 || fwd != 1 {
				t.Errorf("%s: %d enrollments, %d forwarded; want one", name, req, fwd)
			}
		}
	}
	for i, f := range failures {
		t.Run(f.name, func(t *testing.T) {
			s := snaps[bad[i]]
			if s.State != emulator.StateFailed || s.CertificatePEM != "" {
				t.Fatalf("state %s, certificate %q; want failed without one", s.State, s.CertificatePEM)
			}
			for _, w := range f.want {
				if !strings.Contains(s.FailureMessage, w) {
					t.Errorf("failure message %q does not contain %q", s.FailureMessage, w)
				}
			}
			if strings.Contains(s.FailureMessage, "s3cret") || strings.Contains(s.FailureMessage, "not-the-password") {
				t.Errorf("failure message leaks a password: %q", s.FailureMessage)
			}
			if s.SignDataCount != 1 {
				t.Errorf("signData called %d times", s.SignDataCount)
			}
		})
	}
	// Permanent refusals are not repeated; the server error and the deferral are asked again.
	for _, tc := range []struct {
		idx     int
		atLeast int
		atMost  int
	}{{2, 1, 1}, {3, 2, 1 << 30}, {4, 2, 1 << 30}} {
		s := snaps[bad[tc.idx]]
		if req, _ := triggers.counts(s.SPKI); req < tc.atLeast || req > tc.atMost {
			t.Errorf("%s: the server saw %d enrollments, want %d..%d", failures[tc.idx].name, req, tc.atLeast, tc.atMost)
		}
	}
	// The wrong password is refused on the first request (reading /cacerts) and never re-sent.
	if n := basic.refusals(); n != 1 {
		t.Errorf("wrong password: refused %d times, want once (refused credentials are not retried)", n)
	}
	if n := h.Metric("certprov_ca_requests_total", "ca_connection", "est-down", "operation", "issue", "outcome", "retryable"); n < 2 {
		t.Errorf("CA down: %v retryable errors counted, want retries", n)
	}
	for _, p := range triggers.seenPaths() {
		if !strings.HasPrefix(p, "/.well-known/est/triggererrors/") {
			t.Errorf("label connection requested %s", p)
		}
	}
	h.WaitJournalIdle(10 * time.Second)
}
