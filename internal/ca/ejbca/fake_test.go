package ejbca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// fakeEJBCA follows EJBCA's REST API (the OpenAPI description and what EJBCA CE's resources do):
// the paths below /ejbca/ejbca-rest-api, the JSON field names, the status codes and error bodies,
// and the behaviour an adapter depends on: mTLS administrators, end entities created or updated
// by pkcs10enroll (a second enroll for one username issues a second certificate), the end entity
// profile's rules on the subject and names, approvals with finalize, search, revocation.
type fakeEJBCA struct {
	t       testing.TB
	srv     *httptest.Server
	root    *catest.CA
	issuing *catest.CA
	caName  string
	adminCA *catest.CA

	mu           sync.Mutex
	admins       map[string]bool // subject CNs of the administrators in the adapter's role
	certProfiles map[string]*fakeCertProfile
	eeProfiles   map[string]*fakeEEProfile
	endEntities  map[string]*fakeEndEntity
	certs        []*fakeCert
	approvals    map[int64]*fakeApproval
	nextApproval int64

	hold            bool   // new enrollments wait for approval
	approvalStyle   string // how a held enrollment is answered: "202", "202-link", "400", "400-noid"
	offline         int    // the next n enrollments find the CA's crypto token offline
	searchForbidden bool   // the role lacks view access for search
	loseEnroll      int    // the answers of the next n enrollments are lost after EJBCA issued
	echoPassword    bool   // enrollments are refused with a message that repeats the password
	hangEnroll      int    // the next n enrollments issue, then never answer (until the client gives up)
	calls           map[string]int
	lastEnroll      fakeEnroll // the body of the last enrollment, as EJBCA read it
}

type fakeCertProfile struct {
	validity time.Duration
	usage    x509.KeyUsage
	ext      []x509.ExtKeyUsage
}

type fakeEEProfile struct {
	dn           map[string]bool // subject DN attributes it allows
	sans         map[string]bool // subject alternative name types it allows
	certProfiles []string
	cas          []string
}

type fakeEndEntity struct {
	password string
	status   string // NEW, GENERATED
	eep, cp  string
}

type fakeCert struct {
	cert      *x509.Certificate
	username  string
	cp, eep   string
	revoked   bool
	reason    string
	revokedAt time.Time
}

type fakeApproval struct {
	id       int64
	status   string // WAITING, APPROVED, REJECTED, EXPIRED, EXECUTIONFAILED, FINALIZED
	req      fakeEnroll
	csr      *x509.CertificateRequest
	username string
}

// fakeEnroll is the enroll body as EJBCA reads it: unknown fields are ignored.
type fakeEnroll struct {
	CertificateRequest       string `json:"certificate_request"`
	CertificateProfileName   string `json:"certificate_profile_name"`
	EndEntityProfileName     string `json:"end_entity_profile_name"`
	CertificateAuthorityName string `json:"certificate_authority_name"`
	Username                 string `json:"username"`
	Password                 string `json:"password"`
	IncludeChain             bool   `json:"include_chain"`
	Email                    string `json:"email"`
	AccountBindingID         string `json:"account_binding_id"`
}

const (
	fakeBase      = "/ejbca/ejbca-rest-api"
	fakeCAName    = "ChromeOSIssuingCA"
	fakeCP        = "ChromeOSClient"
	fakeEEP       = "ChromeOSDevices"
	fakeAdminName = "certprov-adapter"
)

func newFakeEJBCA(t testing.TB) *fakeEJBCA {
	t.Helper()
	return newFakeEJBCAWith(t, tls.VerifyClientCertIfGiven)
}

// newFakeEJBCAWith is a fake whose TLS listener asks for client certificates as auth says.
func newFakeEJBCAWith(t testing.TB, auth tls.ClientAuthType) *fakeEJBCA {
	t.Helper()
	root := catest.NewRoot(t, "Fake EJBCA Root CA")
	f := &fakeEJBCA{
		t:       t,
		root:    root,
		issuing: root.NewIntermediate(t, "Fake EJBCA Issuing CA"),
		caName:  fakeCAName,
		adminCA: catest.NewRoot(t, "Fake EJBCA Management CA"),
		admins:  map[string]bool{fakeAdminName: true},
		certProfiles: map[string]*fakeCertProfile{
			fakeCP:         {validity: 30 * 24 * time.Hour, usage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ext: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
			"ChromeOSUser": {validity: 7 * 24 * time.Hour, usage: x509.KeyUsageDigitalSignature, ext: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
			"SERVER":       {validity: 365 * 24 * time.Hour, usage: x509.KeyUsageDigitalSignature, ext: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		},
		eeProfiles: map[string]*fakeEEProfile{
			fakeEEP: {
				dn:           map[string]bool{"CN": true, "O": true},
				sans:         map[string]bool{"DNSNAME": true, "RFC822NAME": true, "UPN": true},
				certProfiles: []string{fakeCP, "ChromeOSUser"},
				cas:          []string{fakeCAName},
			},
		},
		endEntities:   map[string]*fakeEndEntity{},
		approvals:     map[int64]*fakeApproval{},
		nextApproval:  1000,
		approvalStyle: "202",
		calls:         map[string]int{},
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	pool := x509.NewCertPool()
	pool.AddCert(f.adminCA.Cert)
	srv.TLS = &tls.Config{ClientAuth: auth, ClientCAs: pool}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests make
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.srv = srv
	return f
}

// subjectDN is the CA's subject DN as EJBCA writes it.
func (f *fakeEJBCA) subjectDN() string { return f.issuing.Cert.Subject.String() }

// rootPool is the pool of the fake PKI's root, which its certificates chain to.
func (f *fakeEJBCA) rootPool() *x509.CertPool { return f.root.Pool() }

// leafPool holds the root and the issuing CA: what verifies a leaf uploaded alone, without its
// chain.
func (f *fakeEJBCA) leafPool() *x509.CertPool {
	p := f.rootPool()
	p.AddCert(f.issuing.Cert)
	return p
}

// adminFiles writes a client certificate for cn, issued by issuer, and its key.
func adminFiles(t testing.TB, dir string, issuer *catest.CA, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := issuer.Sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, key.Public())
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	writeFile(t, certFile, pemutil.Encode(cert))
	writeFile(t, keyFile, pemutil.EncodePrivateKey(der))
	return certFile, keyFile
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// settings are the connection settings for the fake, with over's keys replacing them.
func (f *fakeEJBCA) settings(t testing.TB, over ca.Settings) ca.Settings {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := adminFiles(t, dir, f.adminCA, fakeAdminName)
	caFile := filepath.Join(dir, "tls-ca.pem")
	writeFile(t, caFile, pemutil.Encode(f.srv.Certificate()))
	s := ca.Settings{
		"url":                      f.srv.URL,
		"certificateAuthorityName": fakeCAName,
		"certificateProfileName":   fakeCP,
		"endEntityProfileName":     fakeEEP,
		"tls":                      map[string]any{"caFile": caFile, "certFile": certFile, "keyFile": keyFile},
	}
	for k, v := range over {
		if v == nil {
			delete(s, k)
			continue
		}
		s[k] = v
	}
	return s
}

// newConnector builds a connector for the fake, logging to the returned observer.
func (f *fakeEJBCA) newConnector(t testing.TB, over ca.Settings) (*Connector, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	c, err := New(f.settings(t, over), ca.Env{Name: "corp", Logger: zap.New(core)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, logs
}

func (f *fakeEJBCA) count(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[route]
}

// issuedFor lists the certificates issued to username.
func (f *fakeEJBCA) issuedFor(username string) []*x509.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*x509.Certificate
	for _, c := range f.certs {
		if c.username == username {
			out = append(out, c.cert)
		}
	}
	return out
}

// endEntity is a copy of the end entity username, or nil.
func (f *fakeEJBCA) endEntity(username string) *fakeEndEntity {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ee := f.endEntities[username]; ee != nil {
		c := *ee
		return &c
	}
	return nil
}

// sent is the body of the last enrollment.
func (f *fakeEJBCA) sent() fakeEnroll {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastEnroll
}

func (f *fakeEJBCA) issuedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.certs)
}

// revocationStatus asks the fake's REST API, as an operator's tool would
// (GET /v1/certificate/{issuer_dn}/{serial}/revocationstatus), whether cert is revoked and why.
func (f *fakeEJBCA) revocationStatus(t testing.TB, cert *x509.Certificate) (bool, ca.Reason) {
	t.Helper()
	certFile, keyFile := adminFiles(t, t.TempDir(), f.adminCA, fakeAdminName)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(f.srv.Certificate())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}}}
	defer client.CloseIdleConnections()
	u := f.srv.URL + fakeBase + "/v1/certificate/" + url.PathEscape(cert.Issuer.String()) + "/" + cert.SerialNumber.Text(16) + "/revocationstatus"
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var st struct {
		Revoked          bool   `json:"revoked"`
		RevocationReason string `json:"revocation_reason"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&st) != nil {
		t.Fatalf("revocation status of %X: HTTP %d", cert.SerialNumber, resp.StatusCode)
	}
	if !st.Revoked {
		return false, 0
	}
	for r, name := range reasons {
		if name == st.RevocationReason {
			return true, r
		}
	}
	t.Fatalf("revocation status: unknown reason %q", st.RevocationReason)
	return true, 0
}

// revocation reads the fake's records: whether cert is revoked, and why.
func (f *fakeEJBCA) revocation(cert *x509.Certificate) (bool, ca.Reason) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.certs {
		if c.cert.Equal(cert) {
			if !c.revoked {
				return false, 0
			}
			for r, name := range reasons {
				if name == c.reason {
					return true, r
				}
			}
			f.t.Errorf("fake: unknown reason %q recorded", c.reason)
			return true, ca.ReasonUnspecified
		}
	}
	return false, 0
}

// approve approves every waiting approval request and stops holding new ones.
func (f *fakeEJBCA) approve(testing.TB) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = false
	for _, a := range f.approvals {
		if a.status == "WAITING" {
			a.status = "APPROVED"
			f.endEntities[a.username] = &fakeEndEntity{password: a.req.Password, status: "NEW", eep: a.req.EndEntityProfileName, cp: a.req.CertificateProfileName}
		}
	}
}

// setApprovals sets the status of every approval request not finalized.
func (f *fakeEJBCA) setApprovals(status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.approvals {
		if a.status != "FINALIZED" {
			a.status = status
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ejbcaError writes EJBCA's error body.
func ejbcaError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]any{"error_code": status, "error_message": fmt.Sprintf(format, args...)})
}

func (f *fakeEJBCA) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), fakeBase+"/v1/")
	if !ok {
		http.NotFound(w, r) // WildFly's page, not EJBCA's JSON
		return
	}
	if len(r.TLS.PeerCertificates) == 0 {
		ejbcaError(w, http.StatusForbidden, "Authorization Denied. Client certificate or OAuth bearer token required.")
		return
	}
	if admin := r.TLS.PeerCertificates[0].Subject.CommonName; !f.admins[admin] {
		ejbcaError(w, http.StatusForbidden, "Not authorized to resource /administrator. Admin: CN=%s", admin)
		return
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		if u, err := url.PathUnescape(s); err == nil {
			segs[i] = u
		}
	}
	route := func(name string) { f.calls[name]++ }
	switch {
	case r.Method == http.MethodGet && rest == "certificate/status":
		route("status")
		writeJSON(w, 200, map[string]string{"status": "OK", "version": "1.0", "revision": "ALPHA"})
	case r.Method == http.MethodGet && rest == "ca":
		route("calist")
		writeJSON(w, 200, map[string]any{"certificate_authorities": []map[string]any{
			{"id": 1652389506, "name": "ManagementCA", "subject_dn": f.adminCA.Cert.Subject.String(), "issuer_dn": f.adminCA.Cert.Subject.String(),
				"expiration_date": f.adminCA.Cert.NotAfter.UTC().Format(time.RFC3339)},
			{"id": 233464412, "name": f.caName, "subject_dn": f.subjectDN(), "issuer_dn": f.root.Cert.Subject.String(),
				"expiration_date": f.issuing.Cert.NotAfter.UTC().Format(time.RFC3339)},
		}})
	case r.Method == http.MethodGet && len(segs) == 4 && segs[0] == "ca" && segs[2] == "certificate" && segs[3] == "download":
		route("download")
		if segs[1] != f.subjectDN() {
			ejbcaError(w, 404, "CA with DN: %s does not exist.", segs[1])
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(append(pemutil.Encode(f.issuing.Cert), pemutil.Encode(f.root.Cert)...))
	case r.Method == http.MethodPost && rest == "certificate/pkcs10enroll":
		route("enroll")
		f.enroll(w, r)
	case r.Method == http.MethodPost && len(segs) == 3 && segs[0] == "certificate" && segs[2] == "finalize":
		route("finalize")
		f.finalize(w, r, segs[1])
	case r.Method == http.MethodPost && rest == "certificate/search":
		route("search")
		f.search(w, r)
	case r.Method == http.MethodPut && len(segs) == 4 && segs[0] == "certificate" && segs[3] == "revoke":
		route("revoke")
		f.revoke(w, r, segs[1], segs[2])
	case r.Method == http.MethodGet && len(segs) == 4 && segs[0] == "certificate" && segs[3] == "revocationstatus":
		route("revocationstatus")
		f.serveRevocationStatus(w, segs[1], segs[2])
	default:
		ejbcaError(w, 404, "HTTP 404 Not Found")
	}
}

// decode reads a JSON body as Jackson does in EJBCA: unknown properties ignored, malformed
// JSON refused.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Header.Get("Content-Type") != "application/json" {
		ejbcaError(w, http.StatusUnsupportedMediaType, "HTTP 415 Unsupported Media Type")
		return false
	}
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		ejbcaError(w, 400, "Unable to process JSON: %v", err)
		return false
	}
	return true
}

var (
	oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
	dnName = map[string]string{"2.5.4.3": "CN", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
		"2.5.4.5": "SN", "1.2.840.113549.1.9.1": "E"}
)

// sanTypes lists the kinds of names in a subjectAltName extension, as EJBCA names them.
func sanTypes(ext []byte) ([]string, error) {
	var seq asn1.RawValue
	if rest, err := asn1.Unmarshal(ext, &seq); err != nil || len(rest) > 0 || seq.Tag != asn1.TagSequence {
		return nil, fmt.Errorf("malformed subjectAltName")
	}
	var out []string
	for b := seq.Bytes; len(b) > 0; {
		var gn asn1.RawValue
		var err error
		if b, err = asn1.Unmarshal(b, &gn); err != nil {
			return nil, err
		}
		switch gn.Tag {
		case 0:
			var oid asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(gn.Bytes, &oid); err == nil && oid.Equal(oidUPN) {
				out = append(out, "UPN")
			} else {
				out = append(out, "OTHERNAME")
			}
		case 1:
			out = append(out, "RFC822NAME")
		case 2:
			out = append(out, "DNSNAME")
		case 6:
			out = append(out, "UNIFORMRESOURCEID")
		case 7:
			out = append(out, "IPADDRESS")
		default:
			out = append(out, "OTHER"+strconv.Itoa(gn.Tag))
		}
	}
	return out, nil
}

func (f *fakeEJBCA) enroll(w http.ResponseWriter, r *http.Request) {
	var req fakeEnroll
	if !decode(w, r, &req) {
		return
	}
	f.lastEnroll = req
	for _, x := range []struct{ name, v string }{{"certificate_request", req.CertificateRequest}, {"certificate_profile_name", req.CertificateProfileName},
		{"end_entity_profile_name", req.EndEntityProfileName}, {"certificate_authority_name", req.CertificateAuthorityName}, {"username", req.Username}} {
		if x.v == "" {
			ejbcaError(w, 400, "Invalid request, %s is missing.", x.name)
			return
		}
	}
	if f.echoPassword {
		ejbcaError(w, 400, "Password %s does not match the end entity profile's password rules.", req.Password)
		return
	}
	block, _ := pem.Decode([]byte(req.CertificateRequest))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		ejbcaError(w, 400, "Invalid CSR format. Make sure it is a PEM encoded PKCS#10 request.")
		return
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		ejbcaError(w, 400, "Invalid CSR format: %v", err)
		return
	}
	if csr.CheckSignature() != nil {
		ejbcaError(w, 400, "POPO verification failed.")
		return
	}
	if req.CertificateAuthorityName != f.caName {
		ejbcaError(w, 404, "CA with name %s doesn't exist.", req.CertificateAuthorityName)
		return
	}
	eep := f.eeProfiles[req.EndEntityProfileName]
	if eep == nil {
		ejbcaError(w, 404, "End entity profile with name %s doesn't exist.", req.EndEntityProfileName)
		return
	}
	if f.certProfiles[req.CertificateProfileName] == nil {
		ejbcaError(w, 404, "Certificate profile with name %s doesn't exist.", req.CertificateProfileName)
		return
	}
	if !slices.Contains(eep.certProfiles, req.CertificateProfileName) {
		ejbcaError(w, 422, "Couldn't find certificate profile (%s) among available certificate profiles.", req.CertificateProfileName)
		return
	}
	if !slices.Contains(eep.cas, req.CertificateAuthorityName) {
		ejbcaError(w, 422, "Couldn't find CA (%s) among End Entity Profiles Available CAs.", req.CertificateAuthorityName)
		return
	}
	if strings.ContainsAny(req.Username, ";!%`?$~\\/\"") {
		ejbcaError(w, 400, "Username contains illegal characters.")
		return
	}
	if req.Password == "" {
		ejbcaError(w, 400, "Password cannot be empty or null.")
		return
	}
	for _, atv := range csr.Subject.Names {
		name := dnName[atv.Type.String()]
		if name == "" {
			name = atv.Type.String()
		}
		if !eep.dn[name] {
			ejbcaError(w, 422, "Wrong number of %s fields in Subject DN.", name)
			return
		}
	}
	if csr.Subject.CommonName == "" {
		ejbcaError(w, 422, "Subject DN field 'CN' must exist.")
		return
	}
	for _, e := range csr.Extensions {
		if !e.Id.Equal(oidSAN) {
			continue
		}
		types, err := sanTypes(e.Value)
		if err != nil {
			ejbcaError(w, 400, "Invalid CSR: %v", err)
			return
		}
		for _, typ := range types {
			if !eep.sans[typ] {
				ejbcaError(w, 422, "Wrong number of %s fields in Subject Alternative Name.", typ)
				return
			}
		}
	}
	if f.offline > 0 {
		f.offline--
		ejbcaError(w, 503, "Device was unavailable.")
		return
	}
	if f.hold {
		f.nextApproval++
		id := f.nextApproval
		f.approvals[id] = &fakeApproval{id: id, status: "WAITING", req: req, csr: csr, username: req.Username}
		link := f.srv.URL + fakeBase + "/v1/certificate/" + strconv.FormatInt(id, 10) + "/finalize"
		switch f.approvalStyle {
		case "202":
			writeJSON(w, 202, map[string]any{"status_code": 202, "info_message": "Request with Id '" + strconv.FormatInt(id, 10) + "' is waiting for approval",
				"link": link, "request_id": id})
		case "202-link":
			writeJSON(w, 202, map[string]any{"status_code": 202, "info_message": "Waiting for approval", "link": link})
		case "400":
			ejbcaError(w, 400, "Request with Id '%d' is waiting for approval.", id)
		case "400-noid":
			ejbcaError(w, 400, "Add End Entity Action have been added for approval by authorized administrators.")
		}
		return
	}
	// pkcs10enroll creates the end entity, or updates it back to NEW, and issues.
	f.endEntities[req.Username] = &fakeEndEntity{password: req.Password, status: "NEW", eep: req.EndEntityProfileName, cp: req.CertificateProfileName}
	cert := f.issue(req, csr)
	if f.loseEnroll > 0 {
		f.loseEnroll--
		f.dropConnection(w)
		return
	}
	if f.hangEnroll > 0 {
		f.hangEnroll--
		f.mu.Unlock() // serve's deferred Unlock needs it back
		<-r.Context().Done()
		f.mu.Lock()
		return
	}
	writeJSON(w, 201, f.certificateBody(cert, req.IncludeChain))
}

// dropConnection closes the connection without an answer: EJBCA acted, the answer is lost.
func (f *fakeEJBCA) dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		f.t.Error("fake: cannot hijack the connection")
		return
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// issue signs csr with the request's certificate profile, for the request's end entity.
func (f *fakeEJBCA) issue(req fakeEnroll, csr *x509.CertificateRequest) *fakeCert {
	cp := f.certProfiles[req.CertificateProfileName]
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159))
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		RawSubject:   csr.RawSubject,
		NotBefore:    time.Now().Add(-10 * time.Minute),
		NotAfter:     time.Now().Add(cp.validity),
		KeyUsage:     cp.usage,
		ExtKeyUsage:  cp.ext,
	}
	for _, e := range csr.Extensions {
		if e.Id.Equal(oidSAN) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.issuing.Cert, csr.PublicKey, f.issuing.Key)
	if err != nil {
		f.t.Errorf("fake: sign: %v", err)
		return nil
	}
	cert, _ := x509.ParseCertificate(der)
	fc := &fakeCert{cert: cert, username: req.Username, cp: req.CertificateProfileName, eep: req.EndEntityProfileName}
	f.certs = append(f.certs, fc)
	if ee := f.endEntities[req.Username]; ee != nil {
		ee.status = "GENERATED"
	}
	return fc
}

// certificateBody is CertificateRestResponse for c.
func (f *fakeEJBCA) certificateBody(c *fakeCert, chain bool) map[string]any {
	body := map[string]any{
		"certificate":         base64.StdEncoding.EncodeToString(c.cert.Raw),
		"serial_number":       strings.ToUpper(c.cert.SerialNumber.Text(16)),
		"response_format":     "DER",
		"certificate_profile": c.cp,
		"end_entity_profile":  c.eep,
	}
	if chain {
		body["certificate_chain"] = []string{base64.StdEncoding.EncodeToString(f.issuing.Cert.Raw), base64.StdEncoding.EncodeToString(f.root.Cert.Raw)}
	}
	return body
}

func (f *fakeEJBCA) finalize(w http.ResponseWriter, r *http.Request, idText string) {
	id, err := strconv.ParseInt(idText, 10, 32)
	if err != nil {
		ejbcaError(w, 404, "HTTP 404 Not Found")
		return
	}
	var req struct {
		ResponseFormat string `json:"response_format"`
		Password       string `json:"password"`
		KeyAlg         string `json:"key_alg"`
		KeySpec        string `json:"key_spec"`
	}
	if !decode(w, r, &req) {
		return
	}
	if !slices.Contains([]string{"P12", "BCFKS", "JKS", "DER"}, req.ResponseFormat) {
		ejbcaError(w, 400, "Invalid response format: %s", req.ResponseFormat)
		return
	}
	a := f.approvals[id]
	if a == nil {
		ejbcaError(w, 404, "Could not find request with Id '%d'", id)
		return
	}
	switch a.status {
	case "WAITING":
		ejbcaError(w, 202, "Request with Id '%d' is still waiting for approval", id)
	case "REJECTED":
		ejbcaError(w, 400, "Request with Id '%d' has been rejected", id)
	case "EXPIRED":
		ejbcaError(w, 400, "Request with Id '%d' has expired", id)
	case "EXECUTIONFAILED":
		ejbcaError(w, 400, "Request with Id '%d' could not be executed", id)
	case "FINALIZED":
		ejbcaError(w, 400, "Request with Id '%d' has already been finalized", id)
	case "APPROVED":
		ee := f.endEntities[a.username]
		if ee == nil || ee.password != req.Password {
			ejbcaError(w, 403, "Wrong username or password")
			return
		}
		cert := f.issue(a.req, a.csr)
		a.status = "FINALIZED"
		writeJSON(w, 201, f.certificateBody(cert, true))
	}
}

func (f *fakeEJBCA) search(w http.ResponseWriter, r *http.Request) {
	var req struct {
		MaxNumberOfResults int `json:"max_number_of_results"`
		Criteria           []struct {
			Property, Value, Operation string
		} `json:"criteria"`
	}
	if !decode(w, r, &req) {
		return
	}
	if req.MaxNumberOfResults < 1 || req.MaxNumberOfResults > 400 {
		ejbcaError(w, 400, "Invalid search criteria content, max_number_of_results must be between 1 and 400.")
		return
	}
	if len(req.Criteria) == 0 {
		ejbcaError(w, 400, "Invalid search criteria content, criteria must not be empty.")
		return
	}
	if f.searchForbidden {
		ejbcaError(w, 403, "Not authorized to resource /ra_functionality/view_end_entity.")
		return
	}
	groups := map[string][]func(*fakeCert) bool{}
	for _, c := range req.Criteria {
		var match func(*fakeCert) bool
		v := c.Value
		switch c.Property {
		case "QUERY":
			switch c.Operation {
			case "EQUAL":
				match = func(fc *fakeCert) bool {
					return fc.username == v || fc.cert.Subject.String() == v || strings.EqualFold(fc.cert.SerialNumber.Text(16), v)
				}
			case "LIKE":
				match = func(fc *fakeCert) bool {
					return strings.Contains(fc.username, v) || strings.Contains(fc.cert.Subject.String(), v)
				}
			}
		case "CA":
			match = func(*fakeCert) bool { return v == f.caName }
		case "END_ENTITY_PROFILE":
			match = func(fc *fakeCert) bool { return fc.eep == v }
		case "CERTIFICATE_PROFILE":
			match = func(fc *fakeCert) bool { return fc.cp == v }
		case "STATUS":
			switch v {
			case "CERT_ACTIVE":
				match = func(fc *fakeCert) bool { return !fc.revoked }
			case "CERT_REVOKED":
				match = func(fc *fakeCert) bool { return fc.revoked }
			}
		}
		if match == nil || (c.Property != "QUERY" && c.Operation != "EQUAL") {
			ejbcaError(w, 400, "Invalid search criteria content: %s %s %s", c.Property, c.Operation, c.Value)
			return
		}
		groups[c.Property] = append(groups[c.Property], match)
	}
	var found []map[string]any
	more := false
	for _, fc := range f.certs {
		ok := true
		for _, ms := range groups {
			ok = ok && slices.ContainsFunc(ms, func(m func(*fakeCert) bool) bool { return m(fc) })
		}
		if !ok {
			continue
		}
		if len(found) == req.MaxNumberOfResults {
			more = true
			break
		}
		body := f.certificateBody(fc, false)
		delete(body, "certificate_profile") // search answers carry the certificate and its serial
		delete(body, "end_entity_profile")
		found = append(found, body)
	}
	writeJSON(w, 200, map[string]any{"certificates": found, "more_results": more})
}

// findCert is the certificate of the CA named by issuerDN with the hex serial.
func (f *fakeEJBCA) findCert(w http.ResponseWriter, issuerDN, serialHex string) *fakeCert {
	if issuerDN != f.subjectDN() && issuerDN != f.adminCA.Cert.Subject.String() {
		ejbcaError(w, 404, "CA with DN: %s does not exist.", issuerDN)
		return nil
	}
	serial, ok := new(big.Int).SetString(serialHex, 16)
	if !ok {
		ejbcaError(w, 400, "Invalid serial number format. Should be HEX encoded (optionally with '0x' prefix) e.g. '0x1a2b3c'.")
		return nil
	}
	for _, fc := range f.certs {
		if fc.cert.SerialNumber.Cmp(serial) == 0 && fc.cert.Issuer.String() == issuerDN {
			return fc
		}
	}
	ejbcaError(w, 404, "Could not find certificate with serial number 0x%s issued by CA with DN %s", serialHex, issuerDN)
	return nil
}

var fakeReasons = []string{"UNSPECIFIED", "KEY_COMPROMISE", "CA_COMPROMISE", "AFFILIATION_CHANGED", "SUPERSEDED",
	"CESSATION_OF_OPERATION", "CERTIFICATE_HOLD", "PRIVILEGES_WITHDRAWN", "AA_COMPROMISE"}

func (f *fakeEJBCA) revoke(w http.ResponseWriter, r *http.Request, issuerDN, serialHex string) {
	reason := r.URL.Query().Get("reason")
	if reason == "" {
		reason = "UNSPECIFIED"
	}
	if !slices.Contains(fakeReasons, reason) {
		ejbcaError(w, 400, "Invalid revocation reason.")
		return
	}
	fc := f.findCert(w, issuerDN, serialHex)
	if fc == nil {
		return
	}
	if fc.revoked {
		ejbcaError(w, 409, "Certificate is already revoked.")
		return
	}
	fc.revoked, fc.reason, fc.revokedAt = true, reason, time.Now().UTC()
	writeJSON(w, 200, map[string]any{"issuer_dn": issuerDN, "serial_number": strings.ToUpper(serialHex), "revocation_reason": reason,
		"revocation_date": fc.revokedAt.Format(time.RFC3339), "revoked": true, "message": "Successfully revoked"})
}

func (f *fakeEJBCA) serveRevocationStatus(w http.ResponseWriter, issuerDN, serialHex string) {
	fc := f.findCert(w, issuerDN, serialHex)
	if fc == nil {
		return
	}
	body := map[string]any{"issuer_dn": issuerDN, "serial_number": strings.ToUpper(serialHex), "revoked": fc.revoked,
		"message": "Certificate is not revoked", "revocation_reason": "NOT_REVOKED"}
	if fc.revoked {
		body["message"], body["revocation_reason"], body["revocation_date"] = "Certificate is revoked", fc.reason, fc.revokedAt.Format(time.RFC3339)
	}
	writeJSON(w, 200, body)
}
