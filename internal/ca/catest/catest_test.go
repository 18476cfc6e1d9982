package catest

import (
	"context"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
)

// The suite's parts must fail for connectors that break the contract they check: each broken
// connector below is the built-in CA with one behaviour spoiled, and the honest one passes.

// recorder is a testing.TB that records failures instead of failing the test, so that a part
// can be run against a connector expected to fail it.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	failures []string
}

func (r *recorder) Helper() {}

func (r *recorder) record(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, s)
}

func (r *recorder) Errorf(format string, args ...any) { r.record(fmt.Sprintf(format, args...)) }
func (r *recorder) Error(args ...any)                 { r.record(fmt.Sprint(args...)) }
func (r *recorder) Fail()                             { r.record("Fail") }
func (r *recorder) Fatalf(format string, args ...any) {
	r.record(fmt.Sprintf(format, args...))
	runtime.Goexit()
}
func (r *recorder) Fatal(args ...any) { r.record(fmt.Sprint(args...)); runtime.Goexit() }
func (r *recorder) FailNow()          { r.record("FailNow"); runtime.Goexit() }
func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.failures) > 0
}

// runPart runs part against tg and returns what it reported.
func runPart(t *testing.T, part func(testing.TB, *Target), tg *Target) []string {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		part(r, tg)
	}()
	<-done
	return r.failures
}

// localTarget is an honest built-in CA with a CRL.
func localTarget(t *testing.T) (*local.Connector, *Target) {
	t.Helper()
	dir := t.TempDir()
	certPath, keyPath, err := local.CreateCA(dir, "ecdsa", "catest self-test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := local.New(ca.Settings{"certificateFile": certPath, "keyFile": keyPath, "crlFile": filepath.Join(dir, "ca.crl")}, ca.Env{Name: "selftest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(conn.Certificate())
	return conn, &Target{
		Connector: conn,
		Roots:     roots,
		Revocation: &Revocation{Status: func(t testing.TB, cert *x509.Certificate) (bool, ca.Reason) {
			revoked, reason, err := conn.RevocationStatus(cert.SerialNumber)
			if err != nil {
				t.Fatal(err)
			}
			return revoked, reason
		}},
	}
}

// forgetfulRevoker says it revoked, and did not.
type forgetfulRevoker struct{ *local.Connector }

func (forgetfulRevoker) Revoke(context.Context, *ca.RevokeRequest) error { return nil }

// credulousRevoker revokes any serial it is given, whoever issued the certificate.
type credulousRevoker struct{ *local.Connector }

func (c credulousRevoker) Revoke(ctx context.Context, req *ca.RevokeRequest) error {
	if req.Certificate != nil && req.Certificate.CheckSignatureFrom(c.Certificate()) != nil {
		return nil // as if revoked
	}
	return c.Connector.Revoke(ctx, req)
}

// amnesiac recovers nothing, whatever it issued.
type amnesiac struct{ *local.Connector }

func (amnesiac) Recover(context.Context, string) (*ca.Issued, error) { return nil, nil }

// stubbornPinger fails every ping.
type stubbornPinger struct{ *local.Connector }

func (stubbornPinger) Ping(context.Context) error { return ca.Permanentf("always down") }

func TestPartsFailBrokenConnectors(t *testing.T) {
	tests := []struct {
		name  string
		part  func(testing.TB, *Target)
		spoil func(conn *local.Connector, tg *Target)
		want  string // in a failure; "" for an honest connector that must pass
	}{
		{"honest Revoke", testRevoke, func(*local.Connector, *Target) {}, ""},
		{"honest Recover", testRecover, func(*local.Connector, *Target) {}, ""},
		{"honest RepeatedKey", testRepeatedKey, func(*local.Connector, *Target) {}, ""},
		{"honest Ping", testPing, func(*local.Connector, *Target) {}, ""},
		{"honest IssueForKey", func(t testing.TB, tg *Target) { testIssueForKey(t, tg, P256) }, func(*local.Connector, *Target) {}, ""},
		{"Revoke that revokes nothing", testRevoke, func(c *local.Connector, tg *Target) { tg.Connector = forgetfulRevoker{c} }, "after Revoke the CA holds revoked=false"},
		{"Revoke of another CA's certificate", testRevoke, func(c *local.Connector, tg *Target) { tg.Connector = credulousRevoker{c} }, "Revoke of another CA's certificate: no error"},
		{"Revoker that cannot be observed", testRevoke, func(_ *local.Connector, tg *Target) { tg.Revocation = nil }, "Target.Revocation.Status"},
		{"Recover that forgets", testRecover, func(c *local.Connector, tg *Target) { tg.Connector = amnesiac{c} }, "Recover returned no certificate"},
		{"claimed idempotency", testRepeatedKey, func(_ *local.Connector, tg *Target) { tg.Idempotent = true }, "issued twice for one key"},
		{"repeat that Recover forgets", testRepeatedKey, func(c *local.Connector, tg *Target) { tg.Connector = amnesiac{c} }, "not one of the certificates issued"},
		{"Ping that always fails", testPing, func(c *local.Connector, tg *Target) { tg.Connector = stubbornPinger{c} }, "Ping of a working CA"},
		{"IssueForKey to the wrong roots", func(t testing.TB, tg *Target) { testIssueForKey(t, tg, RSA2048) },
			func(_ *local.Connector, tg *Target) { tg.Roots = NewRoot(t, "unrelated").Pool() }, "does not chain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, tg := localTarget(t)
			tc.spoil(conn, tg)
			failures := runPart(t, tc.part, tg)
			if tc.want == "" {
				if len(failures) > 0 {
					t.Fatalf("the honest connector failed the part: %q", failures)
				}
				return
			}
			for _, f := range failures {
				if strings.Contains(f, tc.want) {
					t.Logf("failed as it should: %s", f)
					return
				}
			}
			t.Fatalf("the part did not report %q; it reported %q", tc.want, failures)
		})
	}
}

// pendingCA holds every request until approved, then issues through the built-in CA.
type pendingCA struct {
	*local.Connector
	mu       sync.Mutex
	holding  bool
	approved map[string]*ca.Issued
}

func (p *pendingCA) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holding {
		return nil, &ca.PendingError{Ticket: "t-" + req.Key, Reason: "waiting for approval"}
	}
	if i := p.approved[req.Key]; i != nil {
		return i, nil
	}
	i, err := p.Connector.Issue(ctx, req)
	if err == nil {
		p.approved[req.Key] = i
	}
	return i, err
}

func TestPendingPart(t *testing.T) {
	for _, tc := range []struct {
		name       string
		neverIssue bool
		want       string
	}{
		{"approval issues", false, ""},
		{"approval that issues nothing", true, "Issue of the approved request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, tg := localTarget(t)
			p := &pendingCA{Connector: conn, approved: map[string]*ca.Issued{}}
			tg.Connector = p
			tg.Pending = &PendingControl{
				Hold: func(testing.TB) { p.mu.Lock(); p.holding = true; p.mu.Unlock() },
				Approve: func(testing.TB) {
					if !tc.neverIssue {
						p.mu.Lock()
						p.holding = false
						p.mu.Unlock()
					}
				},
			}
			failures := runPart(t, testPending, tg)
			switch {
			case tc.want == "" && len(failures) > 0:
				t.Fatalf("failed: %q", failures)
			case tc.want != "" && (len(failures) == 0 || !strings.Contains(strings.Join(failures, "\n"), tc.want)):
				t.Fatalf("want a failure with %q, got %q", tc.want, failures)
			}
		})
	}
}
