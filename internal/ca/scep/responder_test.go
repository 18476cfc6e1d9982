package scep

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// responder is an httptest SCEP server for what scepserver cannot do: PENDING and CertPoll,
// FAILURE with each failInfo, GET-only PKIOperation, NDES-style RA certificates. It is built on
// this package's own PKCS#7 code, so that the request and answer paths test each other, while
// the conformance and end-to-end tests hold that code to a real server.
type responder struct {
	t      testing.TB
	ca     *testCert // issues the leaves
	root   *testCert // optional: ca's issuer, listed in GetCACert
	raSign *testCert // optional: signs CertReps (NDES's signing RA certificate)
	raEnc  *testCert // optional: requests are encrypted to it (NDES's encryption RA certificate)

	caps         string
	capsStatus   int    // non-zero: GetCACaps answers this status
	getOnly      bool   // PKIOperation by POST is refused (405)
	pendingPolls int    // PENDING answers per transaction before SUCCESS
	failInfo     string // non-empty: every request fails with it
	failInfoText string
	status       int           // non-zero: PKIOperation answers this HTTP status
	retryAfter   string        // with status
	tamperNonce  bool          // answer with a wrong recipientNonce
	signer       *testCert     // overrides who signs CertReps
	delay        time.Duration // before answering a PKIOperation
	dropAnswers  int           // close the connection instead of answering this many processed requests
	noPoll       bool          // CertPoll is answered with HTTP 500, as scepserver does
	arrived      chan struct{} // optional: closed when the first PKIOperation arrives
	arrivedOnce  sync.Once

	mu       sync.Mutex
	holding  bool // every request is PENDING until released, as an NDES manager-approval queue
	csrs     map[string]*x509.CertificateRequest
	pending  map[string]int
	methods  []string
	ciphers  []cipherAlg
	types    []string
	issued   map[string]int // per transaction
	leaves   map[string]*x509.Certificate
	failures int
}

func newResponder(t testing.TB, r *responder) (*responder, *httptest.Server) {
	t.Helper()
	r.t = t
	if r.ca == nil {
		r.ca = newTestCA(t, "responder CA")
	}
	if r.caps == "" {
		r.caps = "POSTPKIOperation\nSHA-256\nAES\nDES3\nRenewal"
	}
	r.csrs, r.pending, r.issued = map[string]*x509.CertificateRequest{}, map[string]int{}, map[string]int{}
	r.leaves = map[string]*x509.Certificate{}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

// hold makes every request PENDING until hold(false).
func (r *responder) hold(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holding = on
}

// ndesResponder mimics NDES: a root, an issuing CA, and separate signing and encryption RA
// certificates issued by the issuing CA.
func ndesResponder(t testing.TB, r *responder) (*responder, *httptest.Server) {
	t.Helper()
	r.root = newTestCA(t, "NDES test root")
	r.ca = newCert(t, "NDES test issuing CA", r.root, true, x509.KeyUsageCertSign|x509.KeyUsageCRLSign|x509.KeyUsageDigitalSignature)
	r.raSign = newCert(t, "NDES-MSCEP-RA (signing)", r.ca, false, x509.KeyUsageDigitalSignature)
	r.raEnc = newCert(t, "NDES-MSCEP-RA (Exchange)", r.ca, false, x509.KeyUsageKeyEncipherment)
	return newResponder(t, r)
}

func (r *responder) bundle() []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range []*testCert{r.raSign, r.raEnc, r.ca, r.root} {
		if c != nil {
			out = append(out, c.cert)
		}
	}
	return out
}

func (r *responder) roots() *x509.CertPool {
	if r.root != nil {
		return pool(r.root.cert)
	}
	return pool(r.ca.cert)
}

func (r *responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch op := req.URL.Query().Get("operation"); op {
	case "GetCACaps":
		if r.capsStatus != 0 {
			http.Error(w, "unknown operation", r.capsStatus)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, r.caps)
	case "GetCACert":
		if r.raEnc == nil && r.root == nil {
			w.Header().Set("Content-Type", "application/x-x509-ca-cert")
			_, _ = w.Write(r.ca.cert.Raw)
			return
		}
		der, err := degenerate(r.bundle())
		if err != nil {
			r.t.Errorf("responder: degenerate: %v", err)
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/x-x509-ca-ra-cert")
		_, _ = w.Write(der)
	case "PKIOperation":
		r.pkiOperation(w, req)
	default:
		http.Error(w, "unknown operation "+op, http.StatusBadRequest)
	}
}

func (r *responder) pkiOperation(w http.ResponseWriter, req *http.Request) {
	if r.arrived != nil {
		r.arrivedOnce.Do(func() { close(r.arrived) })
	}
	r.mu.Lock()
	r.methods = append(r.methods, req.Method)
	r.mu.Unlock()
	if r.status != 0 {
		if r.retryAfter != "" {
			w.Header().Set("Retry-After", r.retryAfter)
		}
		w.Header().Set("Content-Type", "text/plain")
		http.Error(w, "responder told to fail", r.status)
		return
	}
	var body []byte
	var err error
	switch req.Method {
	case http.MethodPost:
		if r.getOnly {
			http.Error(w, "POST not supported", http.StatusMethodNotAllowed)
			return
		}
		body, err = io.ReadAll(req.Body)
	case http.MethodGet:
		body, err = base64.StdEncoding.DecodeString(req.URL.Query().Get("message"))
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// Delay only once the body is read: from then on the server notices a client that hangs up.
	if r.delay > 0 {
		select {
		case <-time.After(r.delay):
		case <-req.Context().Done():
			return
		}
	}
	msg, err := parsePKIMessage(body, nil)
	if err != nil {
		r.t.Errorf("responder: parse request: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	enc := r.ca
	if r.raEnc != nil {
		enc = r.raEnc
	}
	alg, err := envelopeCipher(msg.Content)
	if err != nil {
		r.t.Errorf("responder: envelope cipher: %v", err)
	}
	plain, err := openEnvelope(msg.Content, enc.cert, enc.key)
	if err != nil {
		r.t.Errorf("responder: decrypt: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.ciphers = append(r.ciphers, alg)
	r.types = append(r.types, msg.MessageType)
	r.mu.Unlock()

	rep := &pkiMessage{MessageType: msgCertRep, TransactionID: msg.TransactionID, SenderNonce: nonce(r.t), RecipientNonce: msg.SenderNonce}
	if r.tamperNonce {
		rep.RecipientNonce = nonce(r.t)
	}
	var csr *x509.CertificateRequest
	switch msg.MessageType {
	case msgPKCSReq:
		csr, err = x509.ParseCertificateRequest(plain)
		if err != nil {
			r.t.Errorf("responder: CSR: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.csrs[msg.TransactionID] = csr
		r.pending[msg.TransactionID] = r.pendingPolls
		r.mu.Unlock()
	case msgCertPoll:
		if r.noPoll {
			http.Error(w, "scep: not implemented", http.StatusInternalServerError)
			return
		}
		var ias issuerAndSubject
		if _, err := asn1.Unmarshal(plain, &ias); err != nil || !bytes.Equal(ias.Issuer.FullBytes, r.ca.cert.RawSubject) {
			rep.PKIStatus, rep.FailInfo = statusFailure, "4"
			break
		}
		r.mu.Lock()
		csr = r.csrs[msg.TransactionID]
		r.mu.Unlock()
		if csr == nil || !bytes.Equal(ias.Subject.FullBytes, csr.RawSubject) {
			rep.PKIStatus, rep.FailInfo = statusFailure, "4"
		}
	default:
		rep.PKIStatus, rep.FailInfo = statusFailure, "2"
	}
	if rep.PKIStatus == "" {
		r.mu.Lock()
		left := r.pending[msg.TransactionID]
		if left > 0 {
			r.pending[msg.TransactionID] = left - 1
		}
		if r.holding {
			left = max(left, 1)
		}
		r.mu.Unlock()
		switch {
		case r.failInfo != "":
			rep.PKIStatus, rep.FailInfo, rep.FailInfoText = statusFailure, r.failInfo, r.failInfoText
		case left > 0:
			rep.PKIStatus = statusPending
		default:
			r.mu.Lock()
			leaf := r.leaves[msg.TransactionID]
			r.mu.Unlock()
			if leaf == nil || msg.MessageType == msgPKCSReq {
				leaf = r.issue(csr)
				r.mu.Lock()
				r.leaves[msg.TransactionID] = leaf
				r.issued[msg.TransactionID]++
				r.mu.Unlock()
			}
			deg, err := degenerate([]*x509.Certificate{leaf, r.ca.cert})
			if err != nil {
				r.t.Errorf("responder: degenerate: %v", err)
				return
			}
			if rep.Content, err = envelope(deg, msg.Signer, alg); err != nil {
				r.t.Errorf("responder: envelope: %v", err)
				return
			}
			rep.PKIStatus = statusSuccess
		}
	}
	if rep.PKIStatus == statusFailure {
		r.mu.Lock()
		r.failures++
		r.mu.Unlock()
	}
	signer := r.ca
	if r.raSign != nil {
		signer = r.raSign
	}
	if r.signer != nil {
		signer = r.signer
	}
	der, err := signPKIMessage(rep, signer.cert, signer.key, digestSHA256)
	if err != nil {
		r.t.Errorf("responder: sign: %v", err)
		return
	}
	r.mu.Lock()
	drop := r.dropAnswers > 0
	if drop {
		r.dropAnswers--
	}
	r.mu.Unlock()
	if drop {
		// The request was processed, but the answer is lost on the way.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			r.t.Errorf("responder: hijack: %v", err)
			return
		}
		_ = conn.Close()
		return
	}
	w.Header().Set("Content-Type", "application/x-pki-message")
	_, _ = w.Write(der)
}

func (r *responder) issue(csr *x509.CertificateRequest) *x509.Certificate {
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		r.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        csr.Subject,
		DNSNames:       csr.DNSNames,
		EmailAddresses: csr.EmailAddresses,
		NotBefore:      time.Now().Add(-time.Minute),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.ca.cert, csr.PublicKey, r.ca.key)
	if err != nil {
		r.t.Errorf("responder: issue: %v", err)
		return nil
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		r.t.Errorf("responder: parse leaf: %v", err)
	}
	return leaf
}

func (r *responder) snapshot() (methods []string, ciphers []cipherAlg, types []string, issued int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.issued {
		issued += n
	}
	return append([]string(nil), r.methods...), append([]cipherAlg(nil), r.ciphers...), append([]string(nil), r.types...), issued
}

func nonce(t testing.TB) []byte {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
