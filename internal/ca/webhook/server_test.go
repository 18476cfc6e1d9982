package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/ca/webhook"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// The test server implements docs/ca-webhook.md from the document, not from the connector's
// types, so that a mistake on one side does not hide behind the same mistake on the other.

// Files the test server writes for connectors, relative to its directory.
const (
	serverCAFile   = "server-ca.pem" // trust for the server's TLS certificate
	clientCertFile = "client.crt"    // a client certificate the server accepts
	clientKeyFile  = "client.key"
	secretFile     = "hmac.secret"
	wrongSecret    = "wrong.secret"
	apiKeyFile     = "api.key"
	caCertsFile    = "issuing-ca.pem" // the CA the server issues from: the connection's roots
	otherCAFile    = "other-ca.pem"   // a CA the server does not issue from

	apiKey      = "api-key-5a1e7c0d9b"
	hmacSecret  = "0123456789abcdef0123456789abcdef"
	tenant      = "corp"
	replayLimit = 5 * time.Minute
)

// Scripted answers, given as the comma-separated URL path: "/pending,retryable" answers the
// first issue call of every requestId with pending, the second with a retryable error, and
// issues from the third on. Everything after the script issues.
const (
	actPending   = "pending"   // 202 pending with a ticket
	actRetryable = "retryable" // 503 {"status":"error","retryable":true}
	actPermanent = "permanent" // 403 {"status":"error","retryable":false}
	actWrongKey  = "wrongkey"  // 200 issued, for a key that is not the CSR's
	actBadJSON   = "badjson"   // 200 with a body that is not JSON
	actHTML502   = "html502"   // 502 from a proxy, HTML body
	actSlow      = "slow"      // issue, record, then answer only after the client gave up
	actIssue     = "issue"
)

const permanentMessage = "template DeviceAuth is not allowed for this requester"

// webhookCA is a webhook CA server on a real local CA: mutual TLS, HMAC and API key checks, an
// idempotency table keyed by requestId, lookup and ping.
type webhookCA struct {
	srv     *httptest.Server
	dir     string
	ca      *local.Connector
	roots   *x509.CertPool
	wrongPM string // an issued certificate for another key, PEM
	closing chan struct{}

	mu          sync.Mutex
	entries     map[string]*entry
	authRefused int // requests refused for their signature, API key or headers
	pings       int
	problems    []string                 // contract violations by the client
	holding     bool                     // answer every new issue request pending, as an approval queue does
	revoked     map[string]srvRevocation // by lower-case hex serial
}

// srvRevocation is what the server recorded of a revocation.
type srvRevocation struct {
	reasonCode int
	reason     string
	requestID  string
}

// entry is one requestId in the idempotency table, with what the server saw of it.
type entry struct {
	req       srvIssue // the first issue request
	calls     int      // issue calls
	pending   int      // answered pending
	errors    int      // answered with a scripted error (or bad answer)
	issued    int      // answered with a certificate (the first issuance and replays)
	lookups   int
	ticket    string // the last ticket handed out, expected back on the next call
	leafPEM   string
	chainPEMs []string
}

type srvProcess struct {
	Name      string `json:"name"`
	Customer  string `json:"customer"`
	ID        string `json:"id"`
	ProfileID string `json:"profileId"`
	Scope     string `json:"scope"`
	Device    *struct {
		SerialNumber string `json:"serialNumber"`
		DirectoryID  string `json:"directoryId"`
	} `json:"device"`
	User *struct {
		Email       string `json:"email"`
		DirectoryID string `json:"directoryId"`
	} `json:"user"`
}

type srvIssue struct {
	APIVersion      string     `json:"apiVersion"`
	RequestID       string     `json:"requestId"`
	CSR             string     `json:"csr"`
	Profile         string     `json:"profile"`
	TemplateName    string     `json:"templateName"`
	ValiditySeconds int64      `json:"validitySeconds"`
	Ticket          string     `json:"ticket"`
	Process         srvProcess `json:"process"`
}

// Exact key sets of each request kind, as documented.
var (
	issueKeys  = []string{"apiVersion", "csr", "process", "profile", "requestId", "templateName", "validitySeconds"}
	lookupKeys = []string{"apiVersion", "lookup", "requestId"}
	pingKeys   = []string{"apiVersion", "ping"}
	revokeKeys = []string{"apiVersion", "certificate", "reason", "reasonCode", "requestId", "revoke", "serialNumber"}
)

// reasonNames are RFC 5280's CRLReason names, as the contract sends them.
var reasonNames = map[int]string{0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged",
	4: "superseded", 5: "cessationOfOperation", 6: "certificateHold", 9: "privilegeWithdrawn", 10: "aACompromise"}

// newWebhookCA starts a server and writes, into its directory, everything a connector needs.
func newWebhookCA(t *testing.T) *webhookCA {
	t.Helper()
	dir := t.TempDir()
	issuing := newLocalCA(t, filepath.Join(dir, "issuing"), "ecdsa")
	clientCA := newLocalCA(t, filepath.Join(dir, "client-ca"), "ecdsa")

	s := &webhookCA{dir: dir, ca: issuing, roots: x509.NewCertPool(), closing: make(chan struct{}), entries: map[string]*entry{}, revoked: map[string]srvRevocation{}}
	s.roots.AddCert(issuing.Certificate())

	// A certificate from the same CA, for a key the device does not have.
	foreign := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "FOREIGN")
	wrong, err := issuing.Issue(context.Background(), foreign)
	if err != nil {
		t.Fatal(err)
	}
	s.wrongPM = certPEM(wrong.Leaf)

	// The adapter's client certificate: a clientAuth leaf from the client CA.
	clientKey := catest.DeviceKey(t, catest.P256)
	client, err := clientCA.Issue(context.Background(), catest.NewRequest(t, clientKey, "ADAPTER"))
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, clientCertFile, certPEM(client.Leaf))
	writeFile(t, dir, clientKeyFile, string(pemutil.EncodePrivateKey(keyDER)))
	writeFile(t, dir, secretFile, hmacSecret+"\n")
	writeFile(t, dir, wrongSecret, "not-the-secret-the-server-knows\n")
	writeFile(t, dir, apiKeyFile, apiKey+"\n")
	writeFile(t, dir, caCertsFile, certPEM(issuing.Certificate()))
	writeFile(t, dir, otherCAFile, certPEM(clientCA.Certificate()))

	clientRoots := x509.NewCertPool()
	clientRoots.AddCert(clientCA.Certificate())
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientRoots}
	// Offer HTTP/2 as production servers do: a refused client certificate must still be named.
	s.srv.EnableHTTP2 = true
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are part of the tests
	s.srv.StartTLS()
	writeFile(t, dir, serverCAFile, certPEM(s.srv.Certificate()))
	t.Cleanup(func() {
		close(s.closing)
		s.srv.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range s.problems {
			t.Errorf("webhook server: the connector broke the contract: %s", p)
		}
	})
	return s
}

func newLocalCA(t *testing.T, dir, keyType string) *local.Connector {
	t.Helper()
	certPath, keyPath, err := local.CreateCA(dir, keyType, "webhook test CA "+filepath.Base(dir), 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := local.New(ca.Settings{"certificateFile": certPath, "keyFile": keyPath}, ca.Env{Name: filepath.Base(dir)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certPEM(c *x509.Certificate) string {
	return string(pemutil.Encode(c))
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// settings are a connector's settings for this server, complete with mutual TLS, HMAC, the
// headers it requires and the CA it issues from as roots; path selects a script.
func (s *webhookCA) settings(path string) ca.Settings {
	return ca.Settings{
		"url":            s.srv.URL + path,
		"tls":            map[string]any{"caFile": serverCAFile, "certFile": clientCertFile, "keyFile": clientKeyFile},
		"hmacSecretFile": secretFile,
		"headers":        map[string]any{"X-Tenant": tenant},
		"headerFiles":    map[string]any{"X-Api-Key": apiKeyFile},
		"caCertsFile":    caCertsFile,
	}
}

// connector builds a connector for this server through the registry, as the adapter does.
func (s *webhookCA) connector(t testing.TB, name string, settings ca.Settings) ca.Connector {
	t.Helper()
	c, err := ca.New(webhook.Type, settings, ca.Env{Name: name, BaseDir: s.dir, Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))})
	if err != nil {
		t.Fatalf("webhook connector %s: %v", name, err)
	}
	return c
}

func (s *webhookCA) problem(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

// entry returns a copy of what the server knows of requestID (zero when nothing).
func (s *webhookCA) entry(requestID string) entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[requestID]; e != nil {
		return *e
	}
	return entry{}
}

func (s *webhookCA) counts() (authRefused, pings int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authRefused, s.pings
}

type answer struct {
	code int
	body any // JSON; a string is written as is
}

func reply(w http.ResponseWriter, a answer) {
	if a.code == 0 {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		a = answer{http.StatusServiceUnavailable, "hung up"}
	}
	if raw, ok := a.body.(string); ok {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(a.code)
		_, _ = io.WriteString(w, raw)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.code)
	_ = json.NewEncoder(w).Encode(a.body)
}

func refuse(code int, message string, retryable bool) answer {
	return answer{code, map[string]any{"status": "error", "message": message, "retryable": retryable}}
}

func (s *webhookCA) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		reply(w, refuse(http.StatusMethodNotAllowed, "POST only", false))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		reply(w, refuse(http.StatusBadRequest, "unreadable body", false))
		return
	}
	if msg := checkAuth(r, body); msg != "" {
		s.mu.Lock()
		s.authRefused++
		s.mu.Unlock()
		reply(w, refuse(http.StatusUnauthorized, msg, false))
		return
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(body, &keys); err != nil {
		s.problem("body is not a JSON object: %v", err)
		reply(w, refuse(http.StatusBadRequest, "body is not a JSON object", false))
		return
	}
	var version string
	_ = json.Unmarshal(keys["apiVersion"], &version)
	if version != "certprov.webhook/v1" {
		s.problem("apiVersion %q", version)
		reply(w, refuse(http.StatusBadRequest, "unsupported apiVersion", false))
		return
	}
	switch {
	case has(keys, "ping"):
		s.checkKeys(keys, pingKeys, nil)
		s.mu.Lock()
		s.pings++
		s.mu.Unlock()
		reply(w, answer{http.StatusOK, map[string]any{"status": "ok"}})
	case has(keys, "revoke"):
		s.checkKeys(keys, revokeKeys, nil)
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		var req srvRevoke
		if err := dec.Decode(&req); err != nil || !req.Revoke {
			s.problem("revoke request %s: %v", body, err)
			reply(w, refuse(http.StatusBadRequest, "bad revoke request", false))
			return
		}
		if req.RequestID != "" {
			s.checkRequestIDHeader(r, req.RequestID)
		}
		reply(w, s.revoke(req))
	case has(keys, "lookup"):
		s.checkKeys(keys, lookupKeys, nil)
		var req struct {
			RequestID string `json:"requestId"`
			Lookup    bool   `json:"lookup"`
		}
		if err := json.Unmarshal(body, &req); err != nil || !req.Lookup || req.RequestID == "" {
			s.problem("lookup request %s", body)
			reply(w, refuse(http.StatusBadRequest, "bad lookup request", false))
			return
		}
		s.checkRequestIDHeader(r, req.RequestID)
		reply(w, s.lookup(req.RequestID))
	default:
		s.checkKeys(keys, issueKeys, []string{"ticket"})
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		var req srvIssue
		if err := dec.Decode(&req); err != nil {
			s.problem("issue request: %v", err)
			reply(w, refuse(http.StatusBadRequest, "bad issue request", false))
			return
		}
		s.checkRequestIDHeader(r, req.RequestID)
		reply(w, s.issue(r, req))
	}
}

// checkAuth verifies what every request must carry; it returns the refusal message, if any.
func checkAuth(r *http.Request, body []byte) string {
	if r.Header.Get("X-Api-Key") != apiKey {
		return "bad API key"
	}
	if r.Header.Get("X-Tenant") != tenant {
		return "unknown tenant"
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return "content type " + ct
	}
	var ts, sig string
	for _, part := range strings.Split(r.Header.Get("X-Certprov-Signature"), ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	if ts == "" || sig == "" {
		return "missing X-Certprov-Signature"
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "bad signature timestamp"
	}
	if d := time.Since(time.Unix(unix, 0)); d > replayLimit || d < -replayLimit {
		return "signature timestamp outside the replay window"
	}
	mac := hmac.New(sha256.New, []byte(hmacSecret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	got, err := hex.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return "signature mismatch"
	}
	return ""
}

func has(keys map[string]json.RawMessage, k string) bool { _, ok := keys[k]; return ok }

func (s *webhookCA) checkKeys(keys map[string]json.RawMessage, want, optional []string) {
	var got []string
	for k := range keys {
		if !slices.Contains(optional, k) {
			got = append(got, k)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		s.problem("request keys %v, want %v (optionally %v)", got, want, optional)
	}
}

func (s *webhookCA) checkRequestIDHeader(r *http.Request, id string) {
	if got := r.Header.Get("X-Certprov-Request-Id"); got != id {
		s.problem("X-Certprov-Request-Id %q, body requestId %q", got, id)
	}
}

type srvRevoke struct {
	APIVersion   string `json:"apiVersion"`
	Revoke       bool   `json:"revoke"`
	SerialNumber string `json:"serialNumber"`
	RequestID    string `json:"requestId"`
	Certificate  string `json:"certificate"`
	Reason       string `json:"reason"`
	ReasonCode   int    `json:"reasonCode"`
}

// revoke revokes a certificate the server issued, found by its serial; a certificate sent
// along must be that one. A second revocation answers "revoked" and keeps the first reason.
func (s *webhookCA) revoke(req srvRevoke) answer {
	if name, ok := reasonNames[req.ReasonCode]; !ok || name != req.Reason {
		s.problem("revoke %s: reason %q with reasonCode %d", req.SerialNumber, req.Reason, req.ReasonCode)
		return refuse(http.StatusBadRequest, "reason and reasonCode disagree", false)
	}
	serial, ok := new(big.Int).SetString(req.SerialNumber, 16)
	if !ok || serial.Text(16) != req.SerialNumber {
		s.problem("revoke: serialNumber %q is not lower-case hex", req.SerialNumber)
		return refuse(http.StatusBadRequest, "serialNumber is not hex", false)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var issued *entry
	for id, e := range s.entries {
		block, _ := pem.Decode([]byte(e.leafPEM))
		if block == nil {
			continue
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil || leaf.SerialNumber.Cmp(serial) != 0 {
			continue
		}
		if req.Certificate != "" && strings.TrimSpace(req.Certificate) != strings.TrimSpace(e.leafPEM) {
			continue // the same serial, but not the certificate this server issued
		}
		if req.RequestID != "" && req.RequestID != id {
			s.problems = append(s.problems, fmt.Sprintf("revoke %s: requestId %q, issued for %q", req.SerialNumber, req.RequestID, id))
		}
		issued = e
	}
	if issued == nil {
		return answer{http.StatusNotFound, map[string]any{"status": "notFound"}}
	}
	if _, done := s.revoked[req.SerialNumber]; !done {
		s.revoked[req.SerialNumber] = srvRevocation{reasonCode: req.ReasonCode, reason: req.Reason, requestID: req.RequestID}
	}
	return answer{http.StatusOK, map[string]any{"status": "revoked"}}
}

// revocation is what the server recorded for serial.
func (s *webhookCA) revocation(serial *big.Int) (srvRevocation, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.revoked[serial.Text(16)]
	return r, ok
}

// hold makes the server answer new issue requests pending until approve.
func (s *webhookCA) hold(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holding = on
}

func (s *webhookCA) lookup(id string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[id]
	if e != nil {
		e.lookups++
	}
	if e == nil || e.leafPEM == "" {
		return answer{http.StatusNotFound, map[string]any{"status": "notFound"}}
	}
	return answer{http.StatusOK, map[string]any{"status": "issued", "certificate": e.leafPEM, "chain": e.chainPEMs}}
}

// issue answers an issue request: from the idempotency table when the requestId was issued
// before, else as the script says.
func (s *webhookCA) issue(r *http.Request, req srvIssue) answer {
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		s.problem("%s: csr is not a PEM CERTIFICATE REQUEST", req.RequestID)
		return refuse(http.StatusBadRequest, "csr is not a PEM CERTIFICATE REQUEST", false)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return refuse(http.StatusBadRequest, "csr: "+err.Error(), false)
	}
	if err := csr.CheckSignature(); err != nil {
		return refuse(http.StatusBadRequest, "the CSR signature does not verify", false)
	}
	if req.Process.Name != req.RequestID || (req.Process.Scope != "device" && req.Process.Scope != "user") {
		s.problem("%s: process name %q scope %q", req.RequestID, req.Process.Name, req.Process.Scope)
	}

	s.mu.Lock()
	e := s.entries[req.RequestID]
	if e == nil {
		e = &entry{req: req}
		s.entries[req.RequestID] = e
	}
	e.calls++
	if e.req.CSR != req.CSR {
		s.mu.Unlock()
		// The same idempotency key for another request: never hand out the first one's certificate.
		return refuse(http.StatusConflict, "requestId reused for a different CSR", false)
	}
	if e.ticket != "" && req.Ticket != e.ticket {
		s.problems = append(s.problems, fmt.Sprintf("%s: resumed with ticket %q, want %q", req.RequestID, req.Ticket, e.ticket))
	}
	if e.leafPEM != "" {
		e.issued++
		a := answer{http.StatusOK, map[string]any{"status": "issued", "certificate": e.leafPEM, "chain": e.chainPEMs}}
		s.mu.Unlock()
		return a
	}
	script := scriptOf(r.URL.Path)
	act := actIssue
	if n := e.calls - 1; n < len(script) {
		act = script[n]
	}
	if s.holding {
		act = actPending
	}
	switch act {
	case actPending:
		e.pending++
		e.ticket = fmt.Sprintf("ticket-%d", e.calls)
		s.mu.Unlock()
		return answer{http.StatusAccepted, map[string]any{"status": "pending", "ticket": e.ticket, "message": "waiting for approval"}}
	case actRetryable:
		e.errors++
		s.mu.Unlock()
		return refuse(http.StatusServiceUnavailable, "CA database busy", true)
	case actPermanent:
		e.errors++
		s.mu.Unlock()
		return refuse(http.StatusForbidden, permanentMessage, false)
	case actBadJSON:
		e.errors++
		s.mu.Unlock()
		return answer{http.StatusOK, "<html>maintenance</html>"}
	case actHTML502:
		e.errors++
		s.mu.Unlock()
		return answer{http.StatusBadGateway, "<html><body><h1>502 Bad Gateway</h1></body></html>"}
	case actWrongKey:
		e.issued++
		s.mu.Unlock()
		return answer{http.StatusOK, map[string]any{"status": "issued", "certificate": s.wrongPM}}
	}
	e.ticket = ""
	s.mu.Unlock()

	// Sign outside the lock; the adapter never sends one requestId twice at once.
	issued, err := s.ca.Issue(r.Context(), &ca.Request{
		Key: req.RequestID, CSR: csr, CSRDER: block.Bytes, ProfileName: req.Profile,
		TemplateName: req.TemplateName, Validity: time.Duration(req.ValiditySeconds) * time.Second,
	})
	if err != nil {
		return refuse(http.StatusInternalServerError, "local CA: "+err.Error(), !ca.IsPermanent(err))
	}
	var chain []string
	for _, c := range issued.Chain {
		chain = append(chain, certPEM(c))
	}
	s.mu.Lock()
	e.leafPEM, e.chainPEMs = certPEM(issued.Leaf), chain
	e.issued++
	s.mu.Unlock()
	if act == actSlow {
		// The certificate exists, but the answer never arrives: the client's deadline ends the call.
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		return answer{} // hang up: a late answer could still reach a client closing the connection
	}
	return answer{http.StatusOK, map[string]any{"status": "issued", "certificate": certPEM(issued.Leaf), "chain": chain}}
}

func scriptOf(path string) []string {
	path = strings.Trim(path, "/")
	if path == "" {
		return nil
	}
	return strings.Split(path, ",")
}
