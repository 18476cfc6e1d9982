package scep

import (
	"context"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestPendingThenCertPoll: the server holds the request, the connector hands the engine a ticket
// and, resumed with it, polls with CertPoll until the certificate comes.
func TestPendingThenCertPoll(t *testing.T) {
	for _, ndes := range []bool{false, true} {
		name := map[bool]string{false: "single CA", true: "NDES-style RA"}[ndes]
		t.Run(name, func(t *testing.T) {
			start := newResponder
			if ndes {
				start = ndesResponder
			}
			r, srv := start(t, &responder{pendingPolls: 2})
			c := newTestConnector(t, ca.Settings{"url": srv.URL + "/scep", "pollInterval": "7s"})
			req := newRequest(t, catest.DeviceKey(t, catest.RSA2048), "PENDING", nil)

			var issued *ca.Issued
			for round := 0; ; round++ {
				if round > 3 {
					t.Fatal("still pending after 3 polls")
				}
				var err error
				issued, err = c.Issue(ctxT(t), req)
				if err == nil {
					break
				}
				var p *ca.PendingError
				if !errors.As(err, &p) {
					t.Fatalf("round %d: %v, want pending", round, err)
				}
				if class, _ := ca.Classify(err); class != ca.ClassPending {
					t.Errorf("pending classified %v", class)
				}
				if p.RetryAfter != 7*time.Second {
					t.Errorf("RetryAfter %v, want the pollInterval 7s", p.RetryAfter)
				}
				tk, terr := decodeTicket(p.Ticket)
				if terr != nil {
					t.Fatalf("ticket %q: %v", p.Ticket, terr)
				}
				if tk.TransactionID != transactionID(req.CSR.RawSubjectPublicKeyInfo) {
					t.Errorf("ticket transaction %q", tk.TransactionID)
				}
				req.Ticket = p.Ticket
			}
			catest.CheckIssued(t, req, issued, r.roots())
			_, _, types, n := r.snapshot()
			if want := []string{msgPKCSReq, msgCertPoll, msgCertPoll}; !slices.Equal(types, want) {
				t.Errorf("message types %v, want %v", types, want)
			}
			if n != 1 {
				t.Errorf("responder issued %d certificates, want 1", n)
			}
		})
	}
}

// TestCapsVariants: POST when offered, else GET with the base64 message; the strongest cipher
// and digest offered, or the forced one.
func TestCapsVariants(t *testing.T) {
	tests := []struct {
		name       string
		caps       string
		capsStatus int
		getOnly    bool
		encryption string
		wantMethod string
		wantCipher cipherAlg
	}{
		{"POST and AES", "POSTPKIOperation\nAES\nSHA-256\nDES3", 0, false, "", "POST", cipherAES128},
		{"SCEPStandard implies POST and AES", "SCEPStandard", 0, false, "", "POST", cipherAES128},
		{"AES-256 named", "POSTPKIOperation\r\nAES256\r\nAES\r\n", 0, false, "", "POST", cipherAES256},
		{"lower case keywords", "postpkioperation\naes\n", 0, false, "", "POST", cipherAES128},
		{"GET only, 3DES", "DES3\nSHA-1", 0, true, "", "GET", cipher3DES},
		{"no keywords", "", 0, true, "", "GET", cipher3DES},
		{"no GetCACaps at all", "", 404, true, "", "GET", cipher3DES},
		{"forced AES-256", "POSTPKIOperation\nAES", 0, false, "aes256", "POST", cipherAES256},
		{"forced 3DES", "POSTPKIOperation\nAES", 0, false, "3des", "POST", cipher3DES},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			caps := tc.caps
			if caps == "" {
				caps = " " // the responder's default would offer POST
			}
			r, srv := newResponder(t, &responder{caps: caps, capsStatus: tc.capsStatus, getOnly: tc.getOnly})
			settings := ca.Settings{"url": srv.URL + "/scep"}
			if tc.encryption != "" {
				settings["encryption"] = tc.encryption
			}
			c := newTestConnector(t, settings)
			req := newRequest(t, catest.DeviceKey(t, catest.P256), "CAPS", nil)
			issued, err := c.Issue(ctxT(t), req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			catest.CheckIssued(t, req, issued, r.roots())
			methods, ciphers, _, _ := r.snapshot()
			if !slices.Equal(methods, []string{tc.wantMethod}) {
				t.Errorf("PKIOperation methods %v, want [%s]", methods, tc.wantMethod)
			}
			if !slices.Equal(ciphers, []cipherAlg{tc.wantCipher}) {
				t.Errorf("ciphers %v, want [%v]", ciphers, tc.wantCipher)
			}
		})
	}
}

// TestFailInfo: every FAILURE is permanent and names the server's failInfo (and text).
func TestFailInfo(t *testing.T) {
	tests := []struct {
		failInfo, text string
		want           []string
	}{
		{"0", "", []string{"failInfo badAlg"}},
		{"1", "", []string{"failInfo badMessageCheck"}},
		{"2", "Denied by Policy Module", []string{"failInfo badRequest", `"Denied by Policy Module"`, "challenge password"}},
		{"3", "", []string{"failInfo badTime", "clocks"}},
		{"4", "", []string{"failInfo badCertId"}},
	}
	for _, tc := range tests {
		t.Run(failInfoName(tc.failInfo), func(t *testing.T) {
			_, srv := ndesResponder(t, &responder{failInfo: tc.failInfo, failInfoText: tc.text})
			c := newTestConnector(t, ca.Settings{"url": srv.URL})
			_, err := c.Issue(ctxT(t), newRequest(t, catest.DeviceKey(t, catest.P256), "FAIL", nil))
			if err == nil || !ca.IsPermanent(err) {
				t.Fatalf("Issue: %v, want a permanent error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestTransportFailures: server errors and refused connections are retryable, configuration
// mistakes and untrustworthy answers permanent.
func TestTransportFailures(t *testing.T) {
	refused := "http://" + testservers.FreeAddr(t) + "/scep" // nothing listens there
	tests := []struct {
		name      string
		r         *responder
		url       string
		settings  ca.Settings
		wantClass ca.Class
		wantHint  time.Duration
		want      string
	}{
		{"connection refused", nil, refused, nil, ca.ClassRetryable, 0, "connection refused"},
		{"HTTP 500", &responder{status: 500}, "", nil, ca.ClassRetryable, 0, "HTTP 500"},
		{"HTTP 503 with Retry-After", &responder{status: 503, retryAfter: "120"}, "", nil, ca.ClassRetryable, 2 * time.Minute, "HTTP 503"},
		{"HTTP 404", &responder{status: 404}, "", nil, ca.ClassPermanent, 0, "check the url setting"},
		{"HTTP 403", &responder{status: 403}, "", nil, ca.ClassPermanent, 0, "HTTP 403"},
		{"answer signed by a stranger", &responder{signer: newTestCA(t, "stranger")}, "", nil, ca.ClassPermanent, 0, "not a certificate of the CA"},
		{"replayed nonce", &responder{tamperNonce: true}, "", nil, ca.ClassPermanent, 0, "recipientNonce"},
		{"pin mismatch", &responder{}, "", ca.Settings{"caCertFingerprint": strings.Repeat("ab", 32)}, ca.ClassPermanent, 0, "caCertFingerprint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url
			if tc.r != nil {
				_, srv := newResponder(t, tc.r)
				url = srv.URL + "/scep"
			}
			settings := ca.Settings{"url": url}
			for k, v := range tc.settings {
				settings[k] = v
			}
			c := newTestConnector(t, settings)
			issued, err := c.Issue(ctxT(t), newRequest(t, catest.DeviceKey(t, catest.P256), "TRANSPORT", nil))
			if err == nil || issued != nil {
				t.Fatalf("Issue: %v, %v; want an error", issued, err)
			}
			class, hint := ca.Classify(err)
			if class != tc.wantClass || hint != tc.wantHint || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: %v hint %v, want %v hint %v containing %q", err, class, hint, tc.wantClass, tc.wantHint, tc.want)
			}
		})
	}
}

// TestCancelledDuringRequest: a context cancelled while the server thinks is reported as such.
func TestCancelledDuringRequest(t *testing.T) {
	arrived := make(chan struct{})
	_, srv := newResponder(t, &responder{delay: time.Minute, arrived: arrived})
	c := newTestConnector(t, ca.Settings{"url": srv.URL})
	req := newRequest(t, catest.DeviceKey(t, catest.P256), "CANCEL", nil)
	if err := c.Ping(ctxT(t)); err != nil { // the cached server info leaves only PKIOperation
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Issue(ctx, req)
		done <- err
	}()
	<-arrived // the request is at the server, which takes its time
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || ca.IsPermanent(err) {
		t.Fatalf("error %v: want a non-permanent error wrapping context.Canceled", err)
	}
}

// TestBadTicket: a ticket that is not ours is a clear permanent error.
func TestBadTicket(t *testing.T) {
	_, srv := newResponder(t, &responder{})
	c := newTestConnector(t, ca.Settings{"url": srv.URL})
	req := newRequest(t, catest.DeviceKey(t, catest.P256), "TICKET", nil)
	req.Ticket = "est:123"
	_, err := c.Issue(ctxT(t), req)
	if err == nil || !ca.IsPermanent(err) || !strings.Contains(err.Error(), "not a SCEP ticket") {
		t.Fatalf("Issue: %v", err)
	}
}

// TestPingDown: Ping reports a down CA as retryable.
func TestPingDown(t *testing.T) {
	addr := testservers.FreeAddr(t)
	c := newTestConnector(t, ca.Settings{"url": "http://" + addr + "/scep"})
	err := c.Ping(ctxT(t))
	var op *net.OpError
	if err == nil || ca.IsPermanent(err) || !errors.As(err, &op) {
		t.Fatalf("Ping: %v, want a retryable network error", err)
	}
}

// TestLostAnswer: when the answer to a PKCSReq is lost, the next Issue asks for the certificate
// of that transaction with CertPoll instead of having a second one issued; a server that cannot
// poll gets the request again; a request that never left is simply sent again.
func TestLostAnswer(t *testing.T) {
	tests := []struct {
		name       string
		r          *responder
		wantTypes  []string
		wantIssued int
	}{
		{"server polls", &responder{dropAnswers: 1}, []string{msgPKCSReq, msgCertPoll}, 1},
		{"server cannot poll", &responder{dropAnswers: 1, noPoll: true}, []string{msgPKCSReq, msgCertPoll, msgPKCSReq}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, srv := newResponder(t, tc.r)
			c := newTestConnector(t, ca.Settings{"url": srv.URL})
			req := newRequest(t, catest.DeviceKey(t, catest.P256), "LOST", nil)
			if _, err := c.Issue(ctxT(t), req); err == nil || ca.IsPermanent(err) {
				t.Fatalf("first Issue: %v, want a retryable error", err)
			}
			issued, err := c.Issue(ctxT(t), req)
			if err != nil {
				t.Fatalf("second Issue: %v", err)
			}
			catest.CheckIssued(t, req, issued, r.roots())
			_, _, types, n := r.snapshot()
			if !slices.Equal(types, tc.wantTypes) || n != tc.wantIssued {
				t.Fatalf("messages %v, %d issued; want %v, %d", types, n, tc.wantTypes, tc.wantIssued)
			}
			if c.inDoubt(req.Key) {
				t.Error("the request is still in doubt after it was answered")
			}
		})
	}
	t.Run("never sent", func(t *testing.T) {
		r, srv := newResponder(t, &responder{})
		c := newTestConnector(t, ca.Settings{"url": srv.URL})
		if err := c.Ping(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		req := newRequest(t, catest.DeviceKey(t, catest.P256), "NEVERSENT", nil)
		good := c.url
		c.url = mustParseURL(t, "http://"+testservers.FreeAddr(t)+"/scep")
		if _, err := c.Issue(ctxT(t), req); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("Issue against a closed port: %v", err)
		}
		if c.inDoubt(req.Key) {
			t.Fatal("a refused connection left the request in doubt")
		}
		c.url = good
		if _, err := c.Issue(ctxT(t), req); err != nil {
			t.Fatal(err)
		}
		if _, _, types, _ := r.snapshot(); !slices.Equal(types, []string{msgPKCSReq}) {
			t.Fatalf("messages %v, want one PKCSReq", types)
		}
	})
}

func mustParseURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
