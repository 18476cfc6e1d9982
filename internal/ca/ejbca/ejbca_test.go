package ejbca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"
	"go.yaml.in/yaml/v3"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

func ctxTimeout(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// secretFile writes an enrollment code secret and returns its path.
func secretFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "code-secret")
	writeFile(t, p, []byte("0123456789abcdef0123456789abcdef\n"))
	return p
}

// TestConformance runs the shared suite against the fake, with derived and with random
// enrollment codes: idempotent by the search before each enroll, pending while an
// administrator has not approved, revocation read back from EJBCA's revocationstatus.
func TestConformance(t *testing.T) {
	for _, mode := range []string{"derived code", "random code"} {
		t.Run(mode, func(t *testing.T) {
			catest.RunTarget(t, func(t *testing.T) *catest.Target {
				f := newFakeEJBCA(t)
				over := ca.Settings{}
				if mode == "derived code" {
					over["enrollmentCodeSecretFile"] = secretFile(t)
				}
				c, _ := f.newConnector(t, over)
				return &catest.Target{
					Connector:  c,
					Roots:      f.rootPool(),
					Idempotent: true,
					Pending: &catest.PendingControl{
						Hold:    func(testing.TB) { f.mu.Lock(); f.hold = true; f.mu.Unlock() },
						Approve: f.approve,
					},
					// What EJBCA answers GET …/revocationstatus for the certificate.
					Revocation: &catest.Revocation{Status: f.revocationStatus},
				}
			})
		})
	}
}

func issueOne(t *testing.T, c *Connector, id string) (*ca.Request, *ca.Issued) {
	t.Helper()
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), id)
	issued, err := c.Issue(ctxTimeout(t), req)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return req, issued
}

// TestEnrollment: what EJBCA is sent (the profiles, the CA, the username made from the process,
// the chain asked for) and what comes back: the device key, the CSR's subject and names, the
// certificate profile's validity and usages, the chain from EJBCA's answer and the roots from its
// CA download. A repeat finds the certificate by search instead of enrolling again, while EJBCA
// itself would issue a second one for the same username.
func TestEnrollment(t *testing.T) {
	f := newFakeEJBCA(t)
	c, _ := f.newConnector(t, nil)
	req, issued := issueOne(t, c, "ENROLL0001")
	catest.CheckIssued(t, req, issued, f.rootPool())
	catest.CheckRoots(t, issued)
	username := "certprov-C0catest-ENROLL0001"
	if got := f.issuedFor(username); len(got) != 1 || !got[0].Equal(issued.Leaf) {
		t.Fatalf("EJBCA holds %d certificates for end entity %s", len(got), username)
	}
	leaf := issued.Leaf
	if leaf.Subject.CommonName != req.CSR.Subject.CommonName || len(leaf.Subject.Organization) != 1 || leaf.Subject.Organization[0] != "certprov catest" {
		t.Errorf("subject %s, the CSR's %s", leaf.Subject, req.CSR.Subject)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 29*24*time.Hour {
		t.Errorf("validity %s: EJBCA takes it from the certificate profile (30 days)", d)
	}
	if len(issued.Chain) != 2 || !issued.Chain[0].Equal(f.issuing.Cert) {
		t.Errorf("chain of %d, want the issuing CA first, then the root", len(issued.Chain))
	}
	sent := f.sent()
	if sent.Username != username || sent.CertificateProfileName != fakeCP || sent.EndEntityProfileName != fakeEEP ||
		sent.CertificateAuthorityName != fakeCAName || !sent.IncludeChain || sent.Email != "" || sent.AccountBindingID != "" ||
		sent.CertificateRequest != string(pemutil.EncodeCSR(req.CSRDER)) {
		t.Errorf("EJBCA received %+v", sent)
	}
	ee := f.endEntity(username)
	if ee == nil || ee.status != "GENERATED" || ee.cp != fakeCP || ee.eep != fakeEEP || len(ee.password) < 24 {
		t.Fatalf("end entity %+v", ee)
	}

	again, err := c.Issue(ctxTimeout(t), req)
	if err != nil || !again.Leaf.Equal(issued.Leaf) {
		t.Fatalf("repeat: %v, %v", describe(again), err)
	}
	if n := f.count("enroll"); n != 1 {
		t.Errorf("%d enrollments for one request", n)
	}
	if n := f.count("search"); n != 2 {
		t.Errorf("%d searches, want one before each Issue", n)
	}
	// EJBCA itself: another enroll for the username issues again, which is why the connector searches.
	other := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "ENROLL0001")
	second, err := c.Issue(ctxTimeout(t), other)
	if err != nil {
		t.Fatal(err)
	}
	if second.Leaf.Equal(issued.Leaf) || len(f.issuedFor(username)) != 2 {
		t.Errorf("a request for another key under the same end entity: %d certificates", len(f.issuedFor(username)))
	}
}

func describe(i *ca.Issued) string {
	if i == nil || i.Leaf == nil {
		return "no certificate"
	}
	return "serial " + i.Leaf.SerialNumber.Text(16)
}

// TestTemplateNameOverridesCertificateProfile: a profile's templateName is the certificate
// profile EJBCA issues with; one the end entity profile does not offer is refused by EJBCA.
func TestTemplateNameOverridesCertificateProfile(t *testing.T) {
	f := newFakeEJBCA(t)
	c, _ := f.newConnector(t, nil)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "TEMPLATE1")
	req.TemplateName = "ChromeOSUser"
	issued, err := c.Issue(ctxTimeout(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if d := issued.Leaf.NotAfter.Sub(issued.Leaf.NotBefore); d > 8*24*time.Hour {
		t.Errorf("validity %s, want ChromeOSUser's 7 days", d)
	}
	req = catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "TEMPLATE2")
	req.TemplateName = "SERVER"
	_, err = c.Issue(ctxTimeout(t), req)
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "HTTP 422") || !strings.Contains(err.Error(), "certificate profile SERVER") {
		t.Errorf("a certificate profile the end entity profile does not offer: %v", err)
	}
}

// requestWith is a request for a fresh key with the CSR made from spec.
func requestWith(t *testing.T, id string, spec *csr.Request) *ca.Request {
	t.Helper()
	key := catest.DeviceKey(t, catest.P256)
	req := catest.NewRequest(t, key, id)
	der := catest.SignedCSR(t, key, spec)
	parsed, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	req.CSR, req.CSRDER = parsed, der
	return req
}

// TestRefusals: what EJBCA refuses is classified as it should be and says what to fix, and
// nothing is issued for it.
func TestRefusals(t *testing.T) {
	uri, _ := url.Parse("urn:chromeos:device:1")
	tests := []struct {
		name  string
		setup func(t *testing.T, f *fakeEJBCA) ca.Settings
		req   func(t *testing.T) *ca.Request
		class ca.Class
		want  []string
	}{
		{name: "subject the end entity profile does not allow",
			req: func(t *testing.T) *ca.Request {
				return requestWith(t, "OU1", &csr.Request{Subject: pkix.Name{CommonName: "d", OrganizationalUnit: []string{"Devices"}}})
			},
			class: ca.ClassPermanent, want: []string{"HTTP 422", "end entity profile ChromeOSDevices", "OU"}},
		{name: "name the end entity profile does not allow",
			req: func(t *testing.T) *ca.Request {
				return requestWith(t, "URI1", &csr.Request{Subject: pkix.Name{CommonName: "d"}, URIs: []*url.URL{uri}})
			},
			class: ca.ClassPermanent, want: []string{"HTTP 422", "UNIFORMRESOURCEID"}},
		{name: "unknown certificate profile",
			setup: func(*testing.T, *fakeEJBCA) ca.Settings {
				return ca.Settings{"certificateProfileName": "NoSuchProfile"}
			},
			class: ca.ClassPermanent, want: []string{"HTTP 404", "NoSuchProfile", "check certificateAuthorityName, certificateProfileName"}},
		{name: "unknown end entity profile",
			setup: func(*testing.T, *fakeEJBCA) ca.Settings { return ca.Settings{"endEntityProfileName": "NoSuchEEP"} },
			class: ca.ClassPermanent, want: []string{"HTTP 404", "NoSuchEEP"}},
		{name: "unknown CA",
			setup: func(*testing.T, *fakeEJBCA) ca.Settings { return ca.Settings{"certificateAuthorityName": "NoSuchCA"} },
			class: ca.ClassPermanent, want: []string{`no CA named "NoSuchCA"`, "ChromeOSIssuingCA"}},
		{name: "CA offline",
			setup: func(_ *testing.T, f *fakeEJBCA) ca.Settings { f.offline = 1; return nil },
			class: ca.ClassRetryable, want: []string{"HTTP 503", "Device was unavailable."}},
		{name: "administrator not in the role",
			setup: func(t *testing.T, f *fakeEJBCA) ca.Settings {
				cert, key := adminFiles(t, t.TempDir(), f.adminCA, "someone-else")
				return ca.Settings{"tls": map[string]any{"caFile": f.settings(t, nil)["tls"].(map[string]any)["caFile"], "certFile": cert, "keyFile": key}}
			},
			class: ca.ClassPermanent, want: []string{"HTTP 403", "not authorized", "CN=someone-else", "access rules in docs/ca-ejbca.md"}},
		{name: "client certificate from a CA EJBCA does not trust",
			setup: func(t *testing.T, f *fakeEJBCA) ca.Settings {
				cert, key := adminFiles(t, t.TempDir(), catest.NewRoot(t, "Other CA"), fakeAdminName)
				return ca.Settings{"tls": map[string]any{"caFile": f.settings(t, nil)["tls"].(map[string]any)["caFile"], "certFile": cert, "keyFile": key}}
			},
			// Go sends no certificate the listener's CAs did not sign: EJBCA sees none.
			class: ca.ClassPermanent, want: []string{"HTTP 403", "Client certificate"}},
		{name: "server certificate not trusted",
			setup: func(t *testing.T, f *fakeEJBCA) ca.Settings {
				tls := f.settings(t, nil)["tls"].(map[string]any)
				delete(tls, "caFile")
				return ca.Settings{"tls": tls}
			},
			class: ca.ClassPermanent, want: []string{"EJBCA's TLS certificate does not verify"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEJBCA(t)
			var over ca.Settings
			if tt.setup != nil {
				f.mu.Lock()
				over = tt.setup(t, f)
				f.mu.Unlock()
			}
			c, _ := f.newConnector(t, over)
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "REFUSED")
			if tt.req != nil {
				req = tt.req(t)
			}
			issued, err := c.Issue(ctxTimeout(t), req)
			if err == nil || issued != nil {
				t.Fatalf("Issue: %s, %v", describe(issued), err)
			}
			if got, _ := ca.Classify(err); got != tt.class {
				t.Errorf("class %v, want %v: %v", got, tt.class, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if n := f.issuedCount(); n != 0 {
				t.Errorf("EJBCA issued %d certificates", n)
			}
		})
	}
}

// TestNoClientCertificate: EJBCA answers 403 to a request without a client certificate (the
// settings demand one, so the test takes it out of a built connection).
func TestNoClientCertificate(t *testing.T) {
	f := newFakeEJBCA(t)
	c, _ := f.newConnector(t, nil)
	tr := c.cl.http.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	tr.TLSClientConfig.Certificates = nil
	c.cl.http = &http.Client{Transport: tr}
	_, err := c.Issue(ctxTimeout(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "NOCERT"))
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "HTTP 403") || !strings.Contains(err.Error(), "Client certificate") {
		t.Errorf("%v", err)
	}
}

// TestClientCertificateRefusedInHandshake: a listener that requires a client certificate
// refuses the handshake; that is permanent and says which setting to look at.
func TestClientCertificateRefusedInHandshake(t *testing.T) {
	f := newFakeEJBCAWith(t, tls.RequireAndVerifyClientCert)
	cert, key := adminFiles(t, t.TempDir(), catest.NewRoot(t, "Other CA"), fakeAdminName)
	c, _ := f.newConnector(t, ca.Settings{"tls": map[string]any{"caFile": f.settings(t, nil)["tls"].(map[string]any)["caFile"], "certFile": cert, "keyFile": key}})
	err := c.Ping(ctxTimeout(t))
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "EJBCA refused the TLS client certificate") || !strings.Contains(err.Error(), "tls.certFile") {
		t.Errorf("%v", err)
	}
}

func pemCert(c *x509.Certificate) []byte { return pemutil.Encode(c) }

// approvalFlow issues req through a held enrollment answered in style, then approves it.
func approvalFlow(t *testing.T, style string) {
	f := newFakeEJBCA(t)
	f.hold, f.approvalStyle = true, style
	c, _ := f.newConnector(t, nil)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "APPROVAL"+style)
	var p *ca.PendingError
	_, err := c.Issue(ctxTimeout(t), req)
	if !errors.As(err, &p) {
		t.Fatalf("held enrollment: %v", err)
	}
	tk, err := decodeTicket(p.Ticket)
	if err != nil || tk.RequestID != 1001 || tk.Code == "" {
		t.Fatalf("ticket %+v, %v; want approval request 1001 and the random code", tk, err)
	}
	if strings.Contains(p.Error(), tk.Code) {
		t.Error("the pending error shows the enrollment code")
	}
	req.Ticket = p.Ticket
	if _, err := c.Issue(ctxTimeout(t), req); !errors.As(err, &p) || p.Ticket != req.Ticket {
		t.Fatalf("finalize while waiting: %v", err)
	}
	f.approve(t)
	// Another instance (a restart) finalizes with the journaled ticket.
	c2, _ := f.newConnector(t, nil)
	issued, err := c2.Issue(ctxTimeout(t), req)
	if err != nil {
		t.Fatalf("finalize after approval: %v", err)
	}
	catest.CheckIssued(t, req, issued, f.rootPool())
	if n, fin := f.count("enroll"), f.count("finalize"); n != 1 || fin != 2 {
		t.Errorf("%d enrollments, %d finalizes; want 1 and 2", n, fin)
	}
}

// TestApprovalAnswers: every form EJBCA answers a held enrollment in leads to the approval
// request id: 202 with request_id, 202 with the finalize link alone, and a 400 whose message says
// it waits for approval; one that names no id is refused, since it could never be finalized.
func TestApprovalAnswers(t *testing.T) {
	for _, style := range []string{"202", "202-link", "400"} {
		t.Run(style, func(t *testing.T) { approvalFlow(t, style) })
	}
	t.Run("400 without an id", func(t *testing.T) {
		f := newFakeEJBCA(t)
		f.hold, f.approvalStyle = true, "400-noid"
		c, _ := f.newConnector(t, nil)
		_, err := c.Issue(ctxTimeout(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "NOID"))
		if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "names no approval request id") {
			t.Errorf("%v", err)
		}
	})
}

// TestApprovalOutcomes: a request an administrator rejects, or that expires, fails with the
// reason; one finalized before (its answer lost) is found by search; a derived code lets another
// instance finalize without the ticket carrying it.
func TestApprovalOutcomes(t *testing.T) {
	for _, tt := range []struct{ status, want string }{
		{"REJECTED", "rejected"}, {"EXPIRED", "expired before an administrator approved it"}, {"EXECUTIONFAILED", "could not be executed"},
	} {
		t.Run(tt.status, func(t *testing.T) {
			f := newFakeEJBCA(t)
			f.hold = true
			c, _ := f.newConnector(t, nil)
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "OUTCOME")
			var p *ca.PendingError
			if _, err := c.Issue(ctxTimeout(t), req); !errors.As(err, &p) {
				t.Fatal(err)
			}
			f.setApprovals(tt.status)
			req.Ticket = p.Ticket
			_, err := c.Issue(ctxTimeout(t), req)
			if !ca.IsPermanent(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%v", err)
			}
		})
	}
	t.Run("already finalized", func(t *testing.T) {
		f := newFakeEJBCA(t)
		f.hold = true
		c, _ := f.newConnector(t, ca.Settings{"enrollmentCodeSecretFile": secretFile(t)})
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "FINALIZED")
		var p *ca.PendingError
		if _, err := c.Issue(ctxTimeout(t), req); !errors.As(err, &p) {
			t.Fatal(err)
		}
		if tk, _ := decodeTicket(p.Ticket); tk.Code != "" {
			t.Error("a derived code went into the ticket")
		}
		f.approve(t)
		req.Ticket = p.Ticket
		first, err := c.Issue(ctxTimeout(t), req)
		if err != nil {
			t.Fatal(err)
		}
		// The answer was lost; the engine asks again with the same ticket.
		again, err := c.Issue(ctxTimeout(t), req)
		if err != nil || !again.Leaf.Equal(first.Leaf) {
			t.Fatalf("second finalize: %s, %v", describe(again), err)
		}
		if n := f.issuedCount(); n != 1 {
			t.Errorf("%d certificates", n)
		}
	})
	t.Run("random code without a ticket code", func(t *testing.T) {
		f := newFakeEJBCA(t)
		c, _ := f.newConnector(t, nil)
		req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "NOCODE")
		req.Ticket = ticket{RequestID: 5}.encode()
		if _, err := c.Issue(ctxTimeout(t), req); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "enrollmentCodeSecretFile") {
			t.Errorf("%v", err)
		}
	})
}

// TestLostAnswer: EJBCA issues but its answer is lost; the next attempt finds the certificate
// by search and enrolls no second time.
func TestLostAnswer(t *testing.T) {
	f := newFakeEJBCA(t)
	f.loseEnroll = 1
	c, _ := f.newConnector(t, nil)
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "LOST")
	_, err := c.Issue(ctxTimeout(t), req)
	if c, after := ca.Classify(err); c != ca.ClassRetryable || after != lostRetry || !strings.Contains(err.Error(), "answer was lost") {
		t.Fatalf("lost answer: %v %s %v", c, after, err)
	}
	issued, err := c.Issue(ctxTimeout(t), req)
	if err != nil {
		t.Fatal(err)
	}
	catest.CheckIssued(t, req, issued, f.rootPool())
	if n, e := f.issuedCount(), f.count("enroll"); n != 1 || e != 1 {
		t.Errorf("%d certificates after %d enrollments", n, e)
	}
	rec, err := c.Recover(ctxTimeout(t), req.Key)
	if err != nil || rec == nil || !rec.Leaf.Equal(issued.Leaf) {
		t.Errorf("Recover: %s, %v", describe(rec), err)
	}
}

// TestSearchForbidden: a role that may not search still issues, but cannot recover, refuses to
// repeat a request this run already sent, and fails an enrollment whose answer was lost.
func TestSearchForbidden(t *testing.T) {
	f := newFakeEJBCA(t)
	f.searchForbidden = true
	c, logs := f.newConnector(t, nil)
	req, issued := issueOne(t, c, "NOSEARCH")
	catest.CheckIssued(t, req, issued, f.rootPool())
	if logs.FilterMessageSnippet("refuses this connection's role a certificate search").Len() != 1 {
		t.Error("no warning about the search")
	}
	_, err := c.Issue(ctxTimeout(t), req)
	if !ca.IsPermanent(err) || !strings.Contains(err.Error(), "not asking again") {
		t.Errorf("repeat: %v", err)
	}
	if _, err := c.Recover(ctxTimeout(t), req.Key); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "cannot be known") {
		t.Errorf("Recover: %v", err)
	}
	f.mu.Lock()
	f.loseEnroll = 1
	f.mu.Unlock()
	lost := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "NOSEARCHLOST")
	if _, err := c.Issue(ctxTimeout(t), lost); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "answer was lost") {
		t.Errorf("lost answer: %v", err)
	}
	if n := f.count("enroll"); n != 2 {
		t.Errorf("%d enrollments, want 2", n)
	}
}

// TestRevoke: the reason EJBCA records is the one asked for, certificateHold included; a
// certificate of another CA is refused before any call.
func TestRevoke(t *testing.T) {
	f := newFakeEJBCA(t)
	c, _ := f.newConnector(t, nil)
	_, issued := issueOne(t, c, "HOLD")
	if err := c.Revoke(ctxTimeout(t), &ca.RevokeRequest{Serial: issued.Leaf.SerialNumber, Reason: ca.ReasonCertificateHold}); err != nil {
		t.Fatal(err)
	}
	if revoked, reason := f.revocation(issued.Leaf); !revoked || reason != ca.ReasonCertificateHold {
		t.Errorf("revoked %v reason %v", revoked, reason)
	}
	other := catest.NewRoot(t, "Other")
	foreign := other.Sign(t, &x509.Certificate{SerialNumber: issued.Leaf.SerialNumber}, issued.Leaf.PublicKey)
	before := f.count("revoke")
	if err := c.Revoke(ctxTimeout(t), &ca.RevokeRequest{Serial: foreign.SerialNumber, Certificate: foreign}); !ca.IsPermanent(err) {
		t.Errorf("foreign: %v", err)
	}
	if f.count("revoke") != before {
		t.Error("a foreign certificate was sent to EJBCA")
	}
}

// TestPing: a working EJBCA pings; one whose REST resource is disabled or that does not list the
// CA does not.
func TestPing(t *testing.T) {
	f := newFakeEJBCA(t)
	c, _ := f.newConnector(t, nil)
	if err := c.Ping(ctxTimeout(t)); err != nil {
		t.Fatal(err)
	}
	if n := f.count("status") + f.count("calist") + f.count("download"); n != 3 {
		t.Errorf("%d calls, want status, CA list and download", n)
	}
	wrong, _ := f.newConnector(t, ca.Settings{"certificateAuthorityName": "ManagementCA2"})
	if err := wrong.Ping(ctxTimeout(t)); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "ManagementCA, ChromeOSIssuingCA") {
		t.Errorf("unknown CA: %v", err)
	}
	bad, _ := f.newConnector(t, ca.Settings{"url": f.srv.URL + "/somewhere"})
	if err := bad.Ping(ctxTimeout(t)); !ca.IsPermanent(err) || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("wrong path: %v", err)
	}
}

// TestCertificates: the client certificate, and once read, the issuing CA and the root.
func TestCertificates(t *testing.T) {
	f := newFakeEJBCA(t)
	c, _ := f.newConnector(t, nil)
	if got := c.Certificates(); len(got) != 1 || got[0].Role != ca.RoleClient || got[0].Cert.Subject.CommonName != fakeAdminName {
		t.Fatalf("before any call: %v", got)
	}
	issueOne(t, c, "HELD")
	roles := map[string]string{}
	for _, h := range c.Certificates() {
		roles[h.Cert.Subject.CommonName] = h.Role
	}
	if roles["Fake EJBCA Issuing CA"] != ca.RoleIssuer || roles["Fake EJBCA Root CA"] != ca.RoleRoot || roles[fakeAdminName] != ca.RoleClient {
		t.Errorf("%v", roles)
	}
}

// TestUsername: a process's end entity is the prefix, the customer and the process id; any
// other key keeps what EJBCA allows and a hash, within EJBCA's length; distinct keys never share
// an end entity.
func TestUsername(t *testing.T) {
	c := &Connector{prefix: DefaultUsernamePrefix}
	if got := c.username(process.Name("C01abc", "7f3e9a")); got != "certprov-C01abc-7f3e9a" {
		t.Errorf("%q", got)
	}
	seen := map[string]string{}
	for _, key := range []string{
		"verifiedaccess/machine/ab+cd", "verifiedaccess/machine/ab_cd", "verifiedaccess/machine/ab;cd",
		process.Name("C01abc", strings.Repeat("x", 300)), process.Name("C01abc", strings.Repeat("x", 301)),
		process.Name("C01abc", "a/b"), process.Name("C01abc", "a-b"),
	} {
		u := c.username(key)
		if len(u) > maxUsername || !usernameChars.MatchString(u) || !strings.HasPrefix(u, DefaultUsernamePrefix) {
			t.Errorf("%q → %q", key, u)
		}
		if prev, dup := seen[u]; dup {
			t.Errorf("%q and %q share end entity %q", prev, key, u)
		}
		seen[u] = key
	}
}

// TestSettings: each problem is reported at its key; defaults apply.
func TestSettings(t *testing.T) {
	good := ca.Settings{"url": "https://ejbca.example.com", "certificateAuthorityName": "CA", "certificateProfileName": "CP",
		"endEntityProfileName": "EEP", "tls": map[string]any{"certFile": "a.crt", "keyFile": "a.key"}}
	s, base, err := decodeSettings(good)
	if err != nil || base != "https://ejbca.example.com/ejbca/ejbca-rest-api" || s.UsernamePrefix != DefaultUsernamePrefix {
		t.Fatalf("%v %q %+v", err, base, s)
	}
	with := func(k string, v any) ca.Settings {
		out := ca.Settings{}
		for key, val := range good {
			out[key] = val
		}
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	for _, tt := range []struct {
		s    ca.Settings
		keys []string
	}{
		{with("url", "http://ejbca.example.com"), []string{"url"}},
		{with("url", "https://u:p@ejbca.example.com"), []string{"url"}},
		{with("url", "https://ejbca.example.com/ejbca/ejbca-rest-api/v1/certificate"), []string{"url"}},
		{with("certificateAuthorityName", nil), []string{"certificateAuthorityName"}},
		{with("certificateProfileName", " CP"), []string{"certificateProfileName"}},
		{with("endEntityProfileName", nil), []string{"endEntityProfileName"}},
		{with("usernamePrefix", "a/b"), []string{"usernamePrefix"}},
		{with("tls", map[string]any{"caFile": "ca.pem"}), []string{"tls.certFile"}},
		{with("tls", map[string]any{"certFile": "a.crt"}), []string{"tls.keyFile"}},
		{with("profile", "x"), []string{"profile"}},
	} {
		_, _, err := decodeSettings(tt.s)
		var keys []string
		for _, e := range flatten(err) {
			var se *ca.SettingError
			if errors.As(e, &se) {
				keys = append(keys, se.Key)
			}
		}
		if strings.Join(keys, ",") != strings.Join(tt.keys, ",") {
			t.Errorf("%v: problems at %v, want %v: %v", tt.s, keys, tt.keys, err)
		}
	}
	if _, base, _ := decodeSettings(with("url", "https://proxy.example.com:8443/pki/rest/")); base != "https://proxy.example.com:8443/pki/rest" {
		t.Errorf("base %q", base)
	}
	// Files are read by New: a missing key file or a short secret stops the adapter at startup.
	f := newFakeEJBCA(t)
	short := filepath.Join(t.TempDir(), "short")
	writeFile(t, short, []byte("short\n"))
	if _, err := New(f.settings(t, ca.Settings{"enrollmentCodeSecretFile": short}), ca.Env{}); err == nil || !strings.Contains(err.Error(), "enrollmentCodeSecretFile") {
		t.Errorf("short secret: %v", err)
	}
	if _, err := New(f.settings(t, ca.Settings{"caCertsFile": "/nonexistent"}), ca.Env{}); err == nil || !strings.Contains(err.Error(), "caCertsFile") {
		t.Errorf("missing caCertsFile: %v", err)
	}
}

func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// TestPinnedRoots: with caCertsFile the roots are those, not the CA download's.
func TestPinnedRoots(t *testing.T) {
	f := newFakeEJBCA(t)
	p := filepath.Join(t.TempDir(), "roots.pem")
	writeFile(t, p, pemCert(f.root.Cert))
	c, _ := f.newConnector(t, ca.Settings{"caCertsFile": p})
	_, issued := issueOne(t, c, "PINNED")
	catest.CheckRoots(t, issued)
	other, _ := f.newConnector(t, ca.Settings{"caCertsFile": writeRoot(t, catest.NewRoot(t, "Unrelated").Cert)})
	_, unrelated := issueOne(t, other, "PINNED2")
	if _, err := unrelated.Leaf.Verify(x509.VerifyOptions{Roots: unrelated.Roots, Intermediates: pool(unrelated.Chain)}); err == nil {
		t.Error("a certificate verified to pinned roots it does not chain to")
	}
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func writeRoot(t *testing.T, c *x509.Certificate) string {
	p := filepath.Join(t.TempDir(), "roots.pem")
	writeFile(t, p, pemCert(c))
	return p
}

// TestNoSecretInLogs: the enrollment code reaches neither the log nor an error, even when EJBCA
// echoes it.
func TestNoSecretInLogs(t *testing.T) {
	f := newFakeEJBCA(t)
	f.hold = true
	c, logs := f.newConnector(t, ca.Settings{"enrollmentCodeSecretFile": secretFile(t)})
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "SECRET")
	code, _ := c.enrollmentCode(c.username(req.Key))
	var errs []error
	_, err := c.Issue(ctxTimeout(t), req)
	errs = append(errs, err)
	f.mu.Lock()
	f.hold, f.echoPassword = false, true
	f.mu.Unlock()
	_, err = c.Issue(ctxTimeout(t), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "SECRET"))
	errs = append(errs, err)
	for _, e := range errs {
		if e == nil || strings.Contains(e.Error(), code) {
			t.Errorf("error %v", e)
		}
	}
	if !strings.Contains(errs[1].Error(), "[redacted]") {
		t.Errorf("the echoed code was not redacted: %v", errs[1])
	}
	for _, e := range logs.All() {
		if strings.Contains(e.Message, code) || strings.Contains(formatFields(e), code) {
			t.Errorf("log %q carries the code", e.Message)
		}
	}
}

func formatFields(e observer.LoggedEntry) string {
	var b strings.Builder
	for k, v := range e.ContextMap() {
		b.WriteString(k + "=" + toString(v) + " ")
	}
	return b.String()
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := yaml.Marshal(v)
	return string(b)
}

// TestExampleConfig: the commented ejbca connection in configs/example.yaml, uncommented, passes
// the offline check.
func TestExampleConfig(t *testing.T) {
	if err := Check(catest.ExampleSettings(t, "corp-ejbca", Type)); err != nil {
		t.Errorf("the example fails the check: %v", err)
	}
}

// TestEnrollmentCode: a derived code is the same for one username in every instance (a restart
// can finalize), differs between usernames and secrets; a random one differs every time.
func TestEnrollmentCode(t *testing.T) {
	f := newFakeEJBCA(t)
	secret := secretFile(t)
	a, _ := f.newConnector(t, ca.Settings{"enrollmentCodeSecretFile": secret})
	b, _ := f.newConnector(t, ca.Settings{"enrollmentCodeSecretFile": secret})
	other := filepath.Join(t.TempDir(), "other")
	writeFile(t, other, []byte("another secret of enough length"))
	o, _ := f.newConnector(t, ca.Settings{"enrollmentCodeSecretFile": other})
	r, _ := f.newConnector(t, nil)
	ca1, d1 := a.enrollmentCode("certprov-C0-1")
	cb1, _ := b.enrollmentCode("certprov-C0-1")
	ca2, _ := a.enrollmentCode("certprov-C0-2")
	co1, _ := o.enrollmentCode("certprov-C0-1")
	r1, d2 := r.enrollmentCode("certprov-C0-1")
	r2, _ := r.enrollmentCode("certprov-C0-1")
	if !d1 || d2 || ca1 != cb1 || ca1 == ca2 || ca1 == co1 || r1 == r2 || len(ca1) != 32 || len(r1) != 32 {
		t.Errorf("derived %v %q %q %q %q; random %v %q %q", d1, ca1, cb1, ca2, co1, d2, r1, r2)
	}
	// The code EJBCA stored for the end entity is the derived one.
	req, _ := issueOne(t, a, "CODE")
	want, _ := a.enrollmentCode(a.username(req.Key))
	if got := f.endEntity(a.username(req.Key)); got == nil || got.password != want {
		t.Errorf("EJBCA holds another code")
	}
}
