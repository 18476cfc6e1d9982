package scep

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
)

// FuzzCertRep feeds arbitrary answers to a PKCSReq through the connector's whole answer path:
// parse and verify the PKCS#7, check signer, transaction and nonce, then decrypt and pick the
// certificate. The answer is an error classified permanent, retryable or pending (with a ticket
// that resumes the same transaction), with a message fit for a device; or a certificate for the
// device key that chains to the CA. Seeds are CertReps as the test responder (and so RFC 8894)
// builds them.
func FuzzCertRep(f *testing.F) {
	r, srv := newResponder(f, &responder{})
	c := newTestConnector(f, ca.Settings{"url": srv.URL})
	c.log = zap.NewNop() // a test logger may not be used inside the fuzz function
	ctx := context.Background()
	info, err := c.serverInfo(ctx, true)
	if err != nil {
		f.Fatal(err)
	}
	req := newRequest(f, catest.DeviceKey(f, catest.P256), "FUZZ", nil)
	tk := ticket{TransactionID: transactionID(req.CSR.RawSubjectPublicKeyInfo), Issuer: info.issuer.RawSubject, Subject: req.CSR.RawSubject}
	msg := &pkiMessage{MessageType: msgPKCSReq, TransactionID: tk.TransactionID, SenderNonce: []byte("0123456789abcdef")}

	stranger := newTestCA(f, "not the SCEP CA")
	leaf := r.issue(req.CSR)
	otherLeaf := r.issue(newRequest(f, catest.DeviceKey(f, catest.P256), "OTHER", nil).CSR)
	certRep := func(m pkiMessage, signer *testCert, certs ...*x509.Certificate) {
		m.MessageType, m.SenderNonce = msgCertRep, []byte("server nonce....")
		if m.TransactionID == "" {
			m.TransactionID = msg.TransactionID
		}
		if m.RecipientNonce == nil {
			m.RecipientNonce = msg.SenderNonce
		}
		if len(certs) > 0 {
			deg, err := degenerate(certs)
			if err != nil {
				f.Fatal(err)
			}
			if m.Content, err = envelope(deg, c.signerCert, cipherAES128); err != nil {
				f.Fatal(err)
			}
		}
		der, err := signPKIMessage(&m, signer.cert, signer.key, digestSHA256)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	certRep(pkiMessage{PKIStatus: statusSuccess}, r.ca, leaf, r.ca.cert)
	certRep(pkiMessage{PKIStatus: statusSuccess}, r.ca, otherLeaf)
	certRep(pkiMessage{PKIStatus: statusSuccess}, r.ca, r.ca.cert)
	certRep(pkiMessage{PKIStatus: statusPending}, r.ca)
	certRep(pkiMessage{PKIStatus: statusFailure, FailInfo: "2", FailInfoText: "challenge password\nexpired\x00"}, r.ca)
	certRep(pkiMessage{PKIStatus: "7"}, r.ca)
	certRep(pkiMessage{PKIStatus: statusPending, RecipientNonce: []byte("stale nonce.....")}, r.ca)
	certRep(pkiMessage{PKIStatus: statusPending, TransactionID: "another\ttransaction"}, r.ca)
	certRep(pkiMessage{PKIStatus: statusPending}, stranger)
	f.Add([]byte("<html><body>502 Bad Gateway</body></html>"))

	f.Fuzz(func(t *testing.T, der []byte) {
		rep, err := c.certRep(ctx, der, msg, info)
		if err != nil {
			checkSCEPError(t, err, tk)
			return
		}
		if rep.MessageType != msgCertRep || rep.TransactionID != msg.TransactionID || !bytes.Equal(rep.RecipientNonce, msg.SenderNonce) {
			t.Fatalf("accepted a CertRep that is not the answer to the request: %+v", rep)
		}
		if !info.trusts(rep.Signer, c.now()) {
			t.Fatalf("accepted a CertRep signed by %s", rep.Signer.Subject)
		}
		issued, err := c.outcome(rep, req, info, tk, "PKCSReq")
		if err != nil {
			checkSCEPError(t, err, tk)
			return
		}
		if rep.PKIStatus != statusSuccess {
			t.Fatalf("certificate from a CertRep with pkiStatus %q", rep.PKIStatus)
		}
		catest.CheckIssued(t, req, issued, r.roots())
	})
}

// checkSCEPError requires err to be classified, a pending one to resume the same transaction, and
// its text to be printable on one line (CA-supplied text is quoted or cleaned).
func checkSCEPError(t *testing.T, err error, tk ticket) {
	t.Helper()
	class, _ := ca.Classify(err)
	var pending *ca.PendingError
	switch {
	case errors.As(err, &pending):
		got, derr := decodeTicket(pending.Ticket)
		if derr != nil || got.TransactionID != tk.TransactionID || !bytes.Equal(got.Issuer, tk.Issuer) || !bytes.Equal(got.Subject, tk.Subject) {
			t.Fatalf("pending ticket %q does not resume the transaction (%v)", pending.Ticket, derr)
		}
	case class == ca.ClassPending:
		t.Fatalf("pending without a PendingError: %v", err)
	}
	checkMessage(t, err.Error())
}

// checkMessage fails unless s is valid UTF-8 without control characters.
func checkMessage(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		t.Fatalf("message not fit for a device: %q", s)
	}
}

// FuzzGetCACert reads arbitrary GetCACert answers: no panic; a bundle that is accepted names an
// RSA certificate to encrypt to and an issuer with its chain, every RA certificate in it is
// signed by a CA certificate in it, and a pin matches exactly the certificates it holds.
func FuzzGetCACert(f *testing.F) {
	root := newTestCA(f, "root")
	issuing := newCert(f, "issuing", root, true, x509.KeyUsageCertSign)
	raSign := newCert(f, "NDES-MSCEP-RA (signing)", issuing, false, x509.KeyUsageDigitalSignature)
	raEnc := newCert(f, "NDES-MSCEP-RA (Exchange)", issuing, false, x509.KeyUsageKeyEncipherment)
	stray := newCert(f, "stray RA", newTestCA(f, "other root"), false, x509.KeyUsageKeyEncipherment)
	for _, certs := range [][]*x509.Certificate{
		{raSign.cert, raEnc.cert, issuing.cert, root.cert},
		{root.cert, issuing.cert},
		{raEnc.cert, stray.cert, root.cert},
	} {
		deg, err := degenerate(certs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(deg)
	}
	f.Add(root.cert.Raw)
	f.Add(append(pemCert(issuing.cert), pemCert(root.cert)...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n"))
	now := time.Now()
	f.Fuzz(func(t *testing.T, body []byte) {
		certs, err := parseCACerts(body)
		if err != nil {
			return
		}
		if len(certs) == 0 {
			t.Fatal("accepted an answer without certificates")
		}
		info, err := newServerInfo(parseCaps(nil), certs, now)
		if err != nil {
			return
		}
		if info.recipient == nil || info.issuer == nil || len(info.chain) == 0 || info.chain[0] != info.issuer {
			t.Fatalf("incomplete server info: %+v", info)
		}
		if _, ok := info.recipient.PublicKey.(*rsa.PublicKey); !ok {
			t.Fatalf("recipient key %T", info.recipient.PublicKey)
		}
		if len(certs) > 1 {
			var cas []*x509.Certificate
			for _, c := range certs {
				if isCA(c) {
					cas = append(cas, c)
				}
			}
			for _, c := range certs {
				if !isCA(c) && issuerOf(c, cas) == nil {
					t.Fatalf("RA certificate %q accepted without a CA of the bundle that signed it", c.Subject)
				}
			}
		}
		sum := sha256.Sum256(certs[len(certs)-1].Raw)
		if err := checkPin(sum[:], certs); err != nil {
			t.Fatalf("pin of a bundle certificate refused: %v", err)
		}
		other := sha256.Sum256(append([]byte("not"), body...))
		if err := checkPin(other[:], certs); !ca.IsPermanent(err) {
			t.Fatalf("foreign pin: %v", err)
		}
	})
}

// FuzzNDESAdminPage reads arbitrary NDES admin pages: no panic, every refusal is one of the
// recognised ones, and a challenge password found is a single printable token.
func FuzzNDESAdminPage(f *testing.F) {
	for _, name := range []string{"ndes_admin_en.html", "ndes_admin_en_utf16le.html", "ndes_admin_de.html",
		"ndes_admin_de_utf16le_nobom.html", "ndes_admin_cache_full.html", "ndes_admin_no_permission.html"} {
		f.Add(readTestdata(f, name), "text/html")
	}
	f.Add([]byte("<html>The enrollment challenge password is: <B> 7E2A&#x39;C41 </B></html>"), "text/html; charset=utf-8")
	f.Add([]byte("Service Unavailable"), "text/plain")
	known := []error{errNDESCacheFull, errNDESNoPermission, errNDESNoPassword, errNDESNotAPage, errNDESAmbiguous}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		pw, err := parseNDESAdminPage(body, contentType)
		if err != nil {
			for _, k := range known {
				if errors.Is(err, k) {
					return
				}
			}
			t.Fatalf("unrecognised error %v", err)
		}
		s := pw.Reveal()
		if s == "" || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) {
			t.Fatalf("challenge password %q", s)
		}
	})
}
