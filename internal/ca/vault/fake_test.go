package vault

// A fake Vault that follows Vault's published HTTP API (developer.hashicorp.com/vault/api-docs)
// for what the connector uses: the /v1/ prefix, X-Vault-Token and X-Vault-Namespace, tokens with
// TTLs, max TTLs and renewal, ACL policies, AppRole and Kubernetes logins, sys/health with its
// status-code parameters, sys/capabilities-self, and a PKI mount whose sign, sign-verbatim,
// issuer and revoke endpoints apply a role's rules the way Vault's PKI engine does. Answers use
// Vault's envelopes: {request_id, lease_id, renewable, lease_duration, data, warnings, auth} on
// success, {"errors": [...]} otherwise. A request real Vault refuses (no or a bad token, a
// path the token's policies do not grant, a body that is not JSON, an unknown mount or role,
// a sealed Vault) is refused here with Vault's status and message.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
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

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

type fakeToken struct {
	id          string
	namespace   string
	policies    []string
	created     time.Time
	renewed     time.Time
	ttl         time.Duration // current lease, from renewed; 0 never expires
	creationTTL time.Duration
	maxTTL      time.Duration // from created; 0: none
	renewable   bool
	revoked     bool
}

func (t *fakeToken) expiry() time.Time { return t.renewed.Add(t.ttl) }

type fakeAppRole struct {
	roleID, secretID string
	policies         []string
	ttl, maxTTL      time.Duration
}

type fakeK8sRole struct {
	jwt         string // the service-account token the TokenReview API accepts now
	policies    []string
	ttl, maxTTL time.Duration
}

// fakeRole is a PKI role, with Vault's defaults from newRole.
type fakeRole struct {
	allowedDomains     []string
	allowSubdomains    bool
	allowBareDomains   bool
	allowGlobDomains   bool
	allowAnyName       bool
	allowIPSANs        bool
	allowedURISANs     []string
	allowedOtherSANs   []string
	useCSRCommonName   bool
	useCSRSANs         bool
	requireCN          bool
	cnValidationsOff   bool
	serverFlag         bool
	clientFlag         bool
	keyUsage           x509.KeyUsage
	ttl, maxTTL        time.Duration
	organization       []string
	noStore            bool
	issuerRef          string
	notBeforeDuration  time.Duration
	enforceHostnames   bool
	emailProtectionEKU bool
	keyType            string // rsa (Vault's default), ec, ed25519 or any
}

func newRole() *fakeRole {
	return &fakeRole{
		allowIPSANs: true, useCSRCommonName: true, useCSRSANs: true, requireCN: true,
		serverFlag: true, clientFlag: true, enforceHostnames: true, keyType: "rsa",
		keyUsage:          x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement | x509.KeyUsageKeyEncipherment,
		notBeforeDuration: 30 * time.Second,
	}
}

type fakeIssuer struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain []*x509.Certificate // from the issuer up to the root
}

type fakeCert struct {
	cert    *x509.Certificate
	revoked time.Time
}

type fakeMount struct {
	issuers       map[string]*fakeIssuer // by name; "default" is an alias
	defaultIssuer string
	roles         map[string]*fakeRole
	certs         map[string]*fakeCert // by colon-hex serial
}

// seen is a request the fake received.
type seen struct {
	method, path, namespace, token string
}

type fakeVault struct {
	t     testing.TB
	srv   *httptest.Server
	clock *clocktest.Clock

	mu        sync.Mutex
	namespace string // where the mounts, auth methods and tokens live ("" is root)
	mounts    map[string]*fakeMount
	tokens    map[string]*fakeToken
	approles  map[string]*fakeAppRole // by auth mount/role name
	k8sRoles  map[string]*fakeK8sRole
	policies  map[string][]policyRule
	sealed    bool
	requests  []seen
	root      *x509.Certificate

	// Faults, each for the next matching request.
	crlNumber int64
	failSign  []fakeFailure
	loseSign  int // sign, store, then cut the connection without an answer
	// gatewayAfterSign, when set, makes the next sign sign and store, then answers this status
	// as a proxy in front of Vault would whose upstream answer was lost (502, 504).
	gatewayAfterSign int
	nextTokens       int
}

type fakeFailure struct {
	status     int
	retryAfter string
	errors     []string
}

type policyRule struct {
	pattern string
	caps    []string
}

// newFakeVault starts a fake Vault over TLS with a PKI mount "pki" whose default issuer is an
// intermediate below a root, and a role "devices" that allows the names the conformance suite
// asks for.
func newFakeVault(t testing.TB) *fakeVault {
	t.Helper()
	f := &fakeVault{
		t:        t,
		clock:    clocktest.New(time.Now()),
		mounts:   map[string]*fakeMount{},
		tokens:   map[string]*fakeToken{},
		approles: map[string]*fakeAppRole{},
		k8sRoles: map[string]*fakeK8sRole{},
		policies: map[string][]policyRule{
			"default": {
				{"auth/token/lookup-self", []string{"read"}},
				{"auth/token/renew-self", []string{"update"}},
				{"sys/capabilities-self", []string{"update"}},
			},
			"root": {{"*", []string{"root"}}},
		},
	}
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := selfSigned(t, rootKey, "Fake Vault Root")
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	inter := signCA(t, root, rootKey, interKey.Public(), "Fake Vault Intermediate")
	f.root = root
	role := newRole()
	role.allowedDomains = []string{"example.com", "corp.example.com"}
	role.allowSubdomains = true
	role.allowBareDomains = true // the e-mail addresses' domain
	role.allowedOtherSANs = []string{csr.OIDUPN().String() + ";UTF8:*"}
	role.allowedURISANs = []string{"urn:chromeos:*", "spiffe://example.com/*"}
	role.maxTTL = 720 * time.Hour
	role.keyType = "any"
	role.organization = []string{"Vault Role Org"}
	f.mounts["pki"] = &fakeMount{
		issuers:       map[string]*fakeIssuer{"intermediate": {cert: inter, key: interKey, chain: []*x509.Certificate{inter, root}}},
		defaultIssuer: "intermediate",
		roles:         map[string]*fakeRole{"devices": role},
		certs:         map[string]*fakeCert{},
	}
	f.policies["certprov"] = []policyRule{
		{"pki/sign/devices", []string{"update"}},
		{"pki/issuer/+/sign/devices", []string{"update"}},
		{"pki/sign-verbatim/*", []string{"update"}},
		{"pki/sign-verbatim", []string{"update"}},
		{"pki/revoke", []string{"update"}},
	}
	f.approles["approle/certprov"] = &fakeAppRole{roleID: "role-id-0001", secretID: "secret-id-s3cr3t-0001",
		policies: []string{"default", "certprov"}, ttl: time.Hour, maxTTL: 4 * time.Hour}
	f.k8sRoles["kubernetes/certprov"] = &fakeK8sRole{jwt: "eyJ.k8s-jwt-one.sig",
		policies: []string{"default", "certprov"}, ttl: time.Hour, maxTTL: 4 * time.Hour}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// caFile writes the fake's TLS certificate as a PEM file and returns its path.
func (f *fakeVault) caFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vault-tls-ca.pem")
	if err := os.WriteFile(p, pemutil.EncodeCertificateDER(f.srv.Certificate().Raw), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// rootPool is the pool of the fake PKI's root.
func (f *fakeVault) rootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(f.root)
	return p
}

// leafPool holds the root and the intermediate: what verifies a leaf uploaded alone, without
// its chain.
func (f *fakeVault) leafPool() *x509.CertPool {
	p := f.rootPool()
	m := f.mounts["pki"]
	p.AddCert(m.issuer("").cert)
	return p
}

// revocationStatus fetches the mount's CRL from the fake as a relying party would (GET
// /v1/pki/crl/pem), checks its signature by the issuer, and reports whether it lists cert, and
// its reason (Vault's CRL entries carry none: unspecified).
func (f *fakeVault) revocationStatus(t testing.TB, cert *x509.Certificate) (bool, ca.Reason) {
	t.Helper()
	resp, err := f.srv.Client().Get(f.srv.URL + "/v1/pki/crl/pem")
	if err != nil {
		t.Fatalf("fetch the CRL: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	block, _ := pem.Decode(raw)
	if resp.StatusCode != http.StatusOK || block == nil || block.Type != "X509 CRL" {
		t.Fatalf("CRL: HTTP %d, %q", resp.StatusCode, raw)
	}
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatalf("parse the CRL: %v", err)
	}
	f.mu.Lock()
	issuer := f.mounts["pki"].issuer("").cert
	f.mu.Unlock()
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		t.Fatalf("the CRL is not signed by the issuer: %v", err)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(cert.SerialNumber) == 0 && bytes.Equal(cert.RawIssuer, crl.RawIssuer) {
			return true, ca.Reason(e.ReasonCode)
		}
	}
	return false, ca.ReasonUnspecified
}

// newToken creates a token in the fake's namespace, as `vault token create` would.
func (f *fakeVault) newToken(policies []string, ttl, maxTTL time.Duration, renewable bool) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.newTokenLocked(policies, ttl, maxTTL, renewable)
}

func (f *fakeVault) newTokenLocked(policies []string, ttl, maxTTL time.Duration, renewable bool) string {
	f.nextTokens++
	id := fmt.Sprintf("hvs.fake%04d%s", f.nextTokens, strings.Repeat("x", 20))
	now := f.clock.Now()
	f.tokens[id] = &fakeToken{id: id, namespace: f.namespace, policies: policies, created: now, renewed: now,
		ttl: ttl, creationTTL: ttl, maxTTL: maxTTL, renewable: renewable}
	return id
}

func (f *fakeVault) revokeToken(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[id].revoked = true
}

// count returns how many requests of method to path (below /v1/) the fake received.
func (f *fakeVault) count(method, p string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if r.method == method && r.path == p {
			n++
		}
	}
	return n
}

func (f *fakeVault) tokensUsed(p string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.requests {
		if r.path == p {
			out = append(out, r.token)
		}
	}
	return out
}

func (f *fakeVault) issuedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.mounts {
		n += len(m.certs)
	}
	return n
}

// vaultError writes Vault's error envelope.
func vaultError(w http.ResponseWriter, status int, errs ...string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if errs == nil {
		errs = []string{}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": errs})
}

// permissionDenied is the answer to a missing or invalid token, or a path no policy grants;
// Vault wraps the latter in go-multierror's frame.
func permissionDenied(w http.ResponseWriter) {
	vaultError(w, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
}

// vaultOK writes Vault's success envelope.
func vaultOK(w http.ResponseWriter, data map[string]any, auth map[string]any, warnings []string) {
	w.Header().Set("Content-Type", "application/json")
	var warn any
	if len(warnings) > 0 {
		warn = warnings
	}
	var a any
	if auth != nil {
		a = auth
	}
	var d any
	if data != nil {
		d = data
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"request_id": fmt.Sprintf("%x", randBytes(16)), "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": d, "wrap_info": nil, "warnings": warn, "auth": a, "mount_type": "",
	})
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// operation maps an HTTP method to Vault's operation, as Vault's HTTP layer does.
func operation(r *http.Request) (string, bool) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if v := r.URL.Query().Get("list"); v == "true" {
			return "list", true
		}
		return "read", true
	case http.MethodPut, http.MethodPost:
		return "update", true
	case http.MethodDelete:
		return "delete", true
	case "LIST":
		return "list", true
	}
	return "", false
}

func (f *fakeVault) serve(w http.ResponseWriter, r *http.Request) {
	p, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	ns := strings.Trim(r.Header.Get("X-Vault-Namespace"), "/")
	tok := r.Header.Get("X-Vault-Token")
	if tok == "" {
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			tok = b
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, seen{method: r.Method, path: p, namespace: ns, token: tok})
	op, ok := operation(r)
	if !ok {
		vaultError(w, http.StatusMethodNotAllowed)
		return
	}
	if p == "sys/health" {
		f.health(w, r)
		return
	}
	if f.sealed {
		vaultError(w, http.StatusServiceUnavailable, "Vault is sealed")
		return
	}
	body := map[string]any{}
	if op == "update" {
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			vaultError(w, http.StatusBadRequest, err.Error())
			return
		}
		if len(bytes.TrimSpace(raw)) > 0 {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			if err := dec.Decode(&body); err != nil {
				vaultError(w, http.StatusBadRequest, "failed to parse JSON input: "+err.Error())
				return
			}
		}
	}
	// Paths served without a token.
	if mount, rest, ok := f.splitMount(p); ok && ns == f.namespace {
		if ref, ok := strings.CutPrefix(rest, "issuer/"); ok && strings.HasSuffix(ref, "/json") && op == "read" {
			f.issuerJSON(w, mount, strings.TrimSuffix(ref, "/json"))
			return
		}
		if serial, ok := strings.CutPrefix(rest, "cert/"); ok && op == "read" {
			f.readCert(w, mount, serial)
			return
		}
		if rest == "crl/pem" && op == "read" {
			f.crl(w, mount)
			return
		}
	}
	if method, ok := strings.CutPrefix(p, "auth/"); ok && strings.HasSuffix(method, "/login") && op == "update" {
		f.login(w, ns, strings.TrimSuffix(method, "/login"), body)
		return
	}
	t := f.tokens[tok]
	now := f.clock.Now()
	if t == nil || t.revoked || (t.ttl > 0 && !now.Before(t.expiry())) || t.namespace != ns {
		permissionDenied(w)
		return
	}
	if !f.allowed(t, p, op) {
		permissionDenied(w)
		return
	}
	switch {
	case p == "auth/token/lookup-self" && op == "read":
		f.lookupSelf(w, t, now)
	case p == "auth/token/renew-self" && op == "update":
		f.renewSelf(w, t, now, body)
	case p == "sys/capabilities-self" && op == "update":
		f.capabilitiesSelf(w, t, body)
	default:
		mount, rest, ok := f.splitMount(p)
		if !ok {
			vaultError(w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", p))
			return
		}
		f.pki(w, r, mount, rest, op, body)
	}
}

// splitMount finds the PKI mount a path is under. Call with mu held.
func (f *fakeVault) splitMount(p string) (*fakeMount, string, bool) {
	for name, m := range f.mounts {
		if rest, ok := strings.CutPrefix(p, name+"/"); ok {
			return m, rest, true
		}
	}
	return nil, "", false
}

// health answers sys/health with the status codes its query parameters choose.
func (f *fakeVault) health(w http.ResponseWriter, r *http.Request) {
	code := http.StatusOK
	if f.sealed {
		code = http.StatusServiceUnavailable
		if c, err := strconv.Atoi(r.URL.Query().Get("sealedcode")); err == nil {
			code = c
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"initialized": true, "sealed": f.sealed, "standby": false, "performance_standby": false,
		"server_time_utc": time.Now().Unix(), "version": "1.21.0", "cluster_name": "fake",
	})
}

// allowed applies the token's ACL policies: Vault's path globs (a trailing * matches any rest,
// + one segment) and capabilities. Call with mu held.
func (f *fakeVault) allowed(t *fakeToken, p, op string) bool {
	caps := f.capabilities(t, p)
	return slices.Contains(caps, "root") || slices.Contains(caps, op)
}

func (f *fakeVault) capabilities(t *fakeToken, p string) []string {
	var caps []string
	for _, name := range t.policies {
		for _, rule := range f.policies[name] {
			if policyMatch(rule.pattern, p) {
				caps = append(caps, rule.caps...)
			}
		}
	}
	if slices.Contains(caps, "deny") {
		return []string{"deny"}
	}
	if len(caps) == 0 {
		return []string{"deny"}
	}
	slices.Sort(caps)
	return slices.Compact(caps)
}

func policyMatch(pattern, p string) bool {
	prefix, glob := strings.CutSuffix(pattern, "*")
	ps, xs := strings.Split(prefix, "/"), strings.Split(p, "/")
	if !glob && len(ps) != len(xs) {
		return false
	}
	if glob {
		// The last pattern segment is a prefix of the path's segment at that place.
		if len(xs) < len(ps) {
			return false
		}
		for i, s := range ps {
			switch {
			case s == "+":
			case i == len(ps)-1:
				if !strings.HasPrefix(strings.Join(xs[i:], "/"), s) {
					return false
				}
			case s != xs[i]:
				return false
			}
		}
		return true
	}
	for i, s := range ps {
		if s != "+" && s != xs[i] {
			return false
		}
	}
	return true
}

func (f *fakeVault) lookupSelf(w http.ResponseWriter, t *fakeToken, now time.Time) {
	ttl := int64(0)
	if t.ttl > 0 {
		ttl = int64(t.expiry().Sub(now) / time.Second)
	}
	vaultOK(w, map[string]any{
		"id": t.id, "policies": t.policies, "ttl": ttl, "creation_ttl": int64(t.creationTTL / time.Second),
		"renewable": t.renewable, "namespace_path": t.namespace + "/", "type": "service",
	}, nil, nil)
}

func (f *fakeVault) renewSelf(w http.ResponseWriter, t *fakeToken, now time.Time, body map[string]any) {
	if !t.renewable {
		vaultError(w, http.StatusBadRequest, "lease is not renewable")
		return
	}
	inc := t.creationTTL
	if v, ok := body["increment"]; ok {
		d, err := durationParam(v)
		if err != nil {
			vaultError(w, http.StatusBadRequest, err.Error())
			return
		}
		if d > 0 {
			inc = d
		}
	}
	var warnings []string
	if t.maxTTL > 0 {
		if left := t.created.Add(t.maxTTL).Sub(now); inc > left {
			inc = left
			warnings = append(warnings, fmt.Sprintf("TTL of %q exceeded the effective max_ttl of %q; TTL value is capped accordingly", inc, left))
		}
	}
	t.renewed, t.ttl = now, inc
	vaultOK(w, nil, f.authBlock(t), warnings)
}

func (f *fakeVault) authBlock(t *fakeToken) map[string]any {
	return map[string]any{
		"client_token": t.id, "accessor": "acc-" + t.id, "policies": t.policies, "token_policies": t.policies,
		"lease_duration": int64(t.ttl / time.Second), "renewable": t.renewable, "entity_id": "", "token_type": "service", "orphan": true,
	}
}

func (f *fakeVault) capabilitiesSelf(w http.ResponseWriter, t *fakeToken, body map[string]any) {
	var paths []string
	if list, ok := body["paths"].([]any); ok {
		for _, v := range list {
			if s, ok := v.(string); ok {
				paths = append(paths, s)
			}
		}
	}
	if s, ok := body["path"].(string); ok && s != "" {
		paths = append(paths, s)
	}
	if len(paths) == 0 {
		vaultError(w, http.StatusBadRequest, "'paths' must be supplied")
		return
	}
	data := map[string]any{}
	var all []string
	for _, p := range paths {
		caps := f.capabilities(t, p)
		data[p] = caps
		all = append(all, caps...)
	}
	data["capabilities"] = all
	vaultOK(w, data, nil, nil)
}

// login serves auth/<mount>/login for the AppRole and Kubernetes methods. Call with mu held.
func (f *fakeVault) login(w http.ResponseWriter, ns, mount string, body map[string]any) {
	if ns != f.namespace {
		permissionDenied(w) // no such auth mount in that namespace
		return
	}
	str := func(k string) string { s, _ := body[k].(string); return s }
	switch {
	case mount == "approle":
		if str("role_id") == "" {
			vaultError(w, http.StatusBadRequest, "missing role_id")
			return
		}
		for _, r := range f.approles {
			if r.roleID == str("role_id") && r.secretID == str("secret_id") {
				id := f.newTokenLocked(r.policies, r.ttl, r.maxTTL, true)
				vaultOK(w, nil, f.authBlock(f.tokens[id]), nil)
				return
			}
		}
		vaultError(w, http.StatusBadRequest, "invalid role or secret ID")
	case mount == "kubernetes":
		role := f.k8sRoles["kubernetes/"+str("role")]
		switch {
		case str("role") == "":
			vaultError(w, http.StatusBadRequest, "missing role")
		case str("jwt") == "":
			vaultError(w, http.StatusBadRequest, "missing jwt")
		case role == nil:
			vaultError(w, http.StatusBadRequest, fmt.Sprintf("invalid role name %q", str("role")))
		case role.jwt != str("jwt"):
			permissionDenied(w) // the TokenReview API did not authenticate the JWT
		default:
			id := f.newTokenLocked(role.policies, role.ttl, role.maxTTL, true)
			vaultOK(w, nil, f.authBlock(f.tokens[id]), nil)
		}
	default:
		permissionDenied(w)
	}
}

func (m *fakeMount) issuer(ref string) *fakeIssuer {
	if ref == "" || ref == "default" {
		ref = m.defaultIssuer
	}
	return m.issuers[ref]
}

func (f *fakeVault) issuerJSON(w http.ResponseWriter, m *fakeMount, ref string) {
	iss := m.issuer(ref)
	if iss == nil {
		vaultError(w, http.StatusBadRequest, fmt.Sprintf("unable to find PKI issuer for reference: %v", ref))
		return
	}
	chain := make([]string, len(iss.chain))
	for i, c := range iss.chain {
		chain[i] = string(pemCert(c))
	}
	vaultOK(w, map[string]any{"certificate": string(pemCert(iss.cert)), "ca_chain": chain, "issuer_name": ref}, nil, nil)
}

func (f *fakeVault) readCert(w http.ResponseWriter, m *fakeMount, serial string) {
	c := m.certs[strings.ReplaceAll(strings.ToLower(serial), "-", ":")]
	if c == nil {
		vaultError(w, http.StatusNotFound)
		return
	}
	rt := int64(0)
	if !c.revoked.IsZero() {
		rt = c.revoked.Unix()
	}
	vaultOK(w, map[string]any{"certificate": string(pemCert(c.cert)), "revocation_time": rt}, nil, nil)
}

// crl serves the default issuer's CRL as PEM (GET <mount>/crl/pem, a raw answer, not the JSON
// envelope). Like Vault's, its entries carry no reason code.
func (f *fakeVault) crl(w http.ResponseWriter, m *fakeMount) {
	iss := m.issuer("")
	var entries []x509.RevocationListEntry
	for _, c := range m.certs {
		if !c.revoked.IsZero() && bytes.Equal(c.cert.RawIssuer, iss.cert.RawSubject) {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: c.cert.SerialNumber, RevocationTime: c.revoked})
		}
	}
	f.crlNumber++
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(f.crlNumber), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(72 * time.Hour),
		RevokedCertificateEntries: entries,
	}, iss.cert, iss.key)
	if err != nil {
		vaultError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/pem-certificate-chain")
	_, _ = w.Write(pemutil.EncodeCRL(der))
}

// pki serves a PKI mount's authenticated paths. Call with mu held.
func (f *fakeVault) pki(w http.ResponseWriter, r *http.Request, m *fakeMount, rest, op string, body map[string]any) {
	segs := strings.Split(rest, "/")
	issuerRef := ""
	if len(segs) >= 3 && segs[0] == "issuer" {
		issuerRef, segs = segs[1], segs[2:]
	}
	switch {
	case op == "update" && len(segs) == 2 && segs[0] == "sign":
		f.sign(w, r, m, issuerRef, segs[1], false, body)
	case op == "update" && segs[0] == "sign-verbatim" && len(segs) <= 2:
		role := ""
		if len(segs) == 2 {
			role = segs[1]
		}
		f.sign(w, r, m, issuerRef, role, true, body)
	case op == "update" && len(segs) == 1 && segs[0] == "revoke" && issuerRef == "":
		f.revoke(w, m, body)
	default:
		vaultError(w, http.StatusNotFound, "1 error occurred:\n\t* unsupported path\n\n")
	}
}

func (f *fakeVault) sign(w http.ResponseWriter, r *http.Request, m *fakeMount, issuerRef, roleName string, verbatim bool, body map[string]any) {
	if len(f.failSign) > 0 {
		fail := f.failSign[0]
		f.failSign = f.failSign[1:]
		if fail.retryAfter != "" {
			w.Header().Set("Retry-After", fail.retryAfter)
		}
		vaultError(w, fail.status, fail.errors...)
		return
	}
	role := newRole()
	role.keyType = "any" // sign-verbatim without a role takes any key
	if roleName != "" || !verbatim {
		role = m.roles[roleName]
		if role == nil {
			vaultError(w, http.StatusBadRequest, fmt.Sprintf("unknown role: %s", roleName))
			return
		}
	}
	str := func(k string) string { s, _ := body[k].(string); return s }
	if format := str("format"); format != "" && format != "pem" {
		vaultError(w, http.StatusBadRequest, fmt.Sprintf(`unknown format for "format": %q (the fake serves pem)`, format))
		return
	}
	csrPEM := str("csr")
	if csrPEM == "" {
		vaultError(w, http.StatusBadRequest, "csr is required")
		return
	}
	block, _ := pem.Decode([]byte(csrPEM))
	if block == nil {
		vaultError(w, http.StatusBadRequest, "csr contains no data")
		return
	}
	cr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		vaultError(w, http.StatusBadRequest, "certificate request could not be parsed: "+err.Error())
		return
	}
	if err := cr.CheckSignature(); err != nil {
		vaultError(w, http.StatusBadRequest, "request signature invalid: "+err.Error())
		return
	}
	keyType := map[x509.PublicKeyAlgorithm]string{x509.RSA: "rsa", x509.ECDSA: "ec", x509.Ed25519: "ed25519"}[cr.PublicKeyAlgorithm]
	if role.keyType != "any" && role.keyType != keyType {
		vaultError(w, http.StatusBadRequest, fmt.Sprintf("role requires keys of type %s", role.keyType))
		return
	}
	if issuerRef == "" {
		issuerRef = role.issuerRef
	}
	iss := m.issuer(issuerRef)
	if iss == nil {
		vaultError(w, http.StatusBadRequest, fmt.Sprintf("unable to find PKI issuer for reference: %v", issuerRef))
		return
	}
	now := time.Now()
	ttl := role.ttl
	if ttl == 0 {
		ttl = 768 * time.Hour // the mount's default lease TTL
	}
	if v, ok := body["ttl"]; ok {
		if ttl, err = durationParam(v); err != nil {
			vaultError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	var warnings []string
	if role.maxTTL > 0 && ttl > role.maxTTL {
		warnings = append(warnings, fmt.Sprintf("TTL %q is longer than permitted maxTTL %q, so maxTTL is being used", ttl, role.maxTTL))
		ttl = role.maxTTL
	}
	notAfter := now.Add(ttl)
	if notAfter.After(iss.cert.NotAfter) {
		vaultError(w, http.StatusBadRequest, fmt.Sprintf("cannot satisfy request, as TTL would result in notAfter of %s that is beyond the expiration of the CA certificate at %s",
			notAfter.UTC().Format(time.RFC3339Nano), iss.cert.NotAfter.UTC().Format(time.RFC3339Nano)))
		return
	}
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(randBytes(20)),
		NotBefore:    now.Add(-role.notBeforeDuration),
		NotAfter:     notAfter,
	}
	if verbatim {
		tmpl.Subject = cr.Subject
		tmpl.Subject.ExtraNames = cr.Subject.Names
		tmpl.DNSNames, tmpl.EmailAddresses, tmpl.IPAddresses, tmpl.URIs = cr.DNSNames, cr.EmailAddresses, cr.IPAddresses, cr.URIs
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement | x509.KeyUsageKeyEncipherment
		// Vault copies the CSR's extensions (all but basicConstraints) into the certificate.
		for _, e := range cr.Extensions {
			if !e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 19}) {
				tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
			}
		}
	} else {
		msg, ok := f.applyRole(role, cr, body, tmpl)
		if !ok {
			vaultError(w, http.StatusBadRequest, msg)
			return
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, iss.cert, cr.PublicKey, iss.key)
	if err != nil {
		vaultError(w, http.StatusInternalServerError, "error signing certificate: "+err.Error())
		return
	}
	cert, _ := x509.ParseCertificate(der)
	serial := colonHex(cert.SerialNumber.Bytes())
	if !role.noStore {
		m.certs[serial] = &fakeCert{cert: cert}
	}
	if code := f.gatewayAfterSign; code != 0 {
		f.gatewayAfterSign = 0
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(code)
		_, _ = fmt.Fprintf(w, "<html><body><h1>%d %s</h1></body></html>", code, http.StatusText(code))
		return
	}
	if f.loseSign > 0 {
		f.loseSign--
		// Signed and stored; the answer never arrives.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	}
	chain := make([]string, len(iss.chain))
	for i, c := range iss.chain {
		chain[i] = string(pemCert(c))
	}
	vaultOK(w, map[string]any{
		"certificate": string(pemCert(cert)), "issuing_ca": string(pemCert(iss.cert)), "ca_chain": chain,
		"serial_number": serial, "expiration": cert.NotAfter.Unix(),
	}, nil, warnings)
}

// applyRole fills tmpl from the CSR and the body under the role's rules, as Vault's sign does.
// It returns Vault's message for a name the role does not allow.
func (f *fakeVault) applyRole(role *fakeRole, cr *x509.CertificateRequest, body map[string]any, tmpl *x509.Certificate) (string, bool) {
	str := func(k string) string { s, _ := body[k].(string); return s }
	split := func(s string) []string {
		var out []string
		for v := range strings.SplitSeq(s, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	cn := ""
	if role.useCSRCommonName {
		cn = cr.Subject.CommonName
	}
	if cn == "" {
		cn = str("common_name")
	}
	if cn == "" && role.requireCN {
		return `the common_name field is required, or must be provided in a CSR with "use_csr_common_name" set to true, unless "require_cn" is set to false`, false
	}
	var dns, emails []string
	var ips []net.IP
	var uris []*url.URL
	if role.useCSRSANs {
		dns, emails, ips, uris = cr.DNSNames, cr.EmailAddresses, cr.IPAddresses, cr.URIs
	} else {
		for _, n := range split(str("alt_names")) {
			if strings.Contains(n, "@") {
				emails = append(emails, n)
			} else {
				dns = append(dns, n)
			}
		}
		for _, s := range split(str("ip_sans")) {
			ip := net.ParseIP(s)
			if ip == nil {
				return fmt.Sprintf("the value %q is not a valid IP address", s), false
			}
			ips = append(ips, ip)
		}
		for _, s := range split(str("uri_sans")) {
			u, err := url.Parse(s)
			if err != nil {
				return fmt.Sprintf("the value %q is not a valid URI", s), false
			}
			uris = append(uris, u)
		}
	}
	exclude, _ := body["exclude_cn_from_sans"].(bool)
	if cn != "" && !exclude {
		if strings.Contains(cn, "@") {
			emails = append(emails, cn)
		} else {
			dns = append(dns, cn)
		}
	}
	if cn != "" && !role.cnValidationsOff && !role.nameAllowed(cn) {
		return fmt.Sprintf("common name %s not allowed by this role", cn), false
	}
	for _, n := range append(slices.Clone(dns), emails...) {
		if !role.nameAllowed(n) {
			return fmt.Sprintf("subject alternative name %s not allowed by this role", n), false
		}
	}
	if len(ips) > 0 && !role.allowIPSANs {
		return fmt.Sprintf("IP Subject Alternative Names are not allowed in this role, but was provided %s", ips[0]), false
	}
	for _, u := range uris {
		if len(role.allowedURISANs) == 0 {
			return "URI Subject Alternative Names are not allowed in this role, but were provided via the API", false
		}
		if !slices.ContainsFunc(role.allowedURISANs, func(g string) bool { return globMatch(g, u.String()) }) {
			return fmt.Sprintf("URI Subject Alternative Names %s not allowed by this role", u), false
		}
	}
	var upns []string
	for _, o := range split(str("other_sans")) {
		oid, rest, ok := strings.Cut(o, ";")
		typ, val, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 || (typ != "UTF8" && typ != "UTF-8") {
			return fmt.Sprintf("error parsing other_sans: invalid other SAN %q: the format is <oid>;UTF8:<value>", o), false
		}
		allowed := slices.ContainsFunc(role.allowedOtherSANs, func(a string) bool {
			if a == "*" {
				return true
			}
			aoid, arest, _ := strings.Cut(a, ";")
			_, aval, _ := strings.Cut(arest, ":")
			return aoid == oid && globMatch(aval, val)
		})
		if !allowed {
			return fmt.Sprintf("other SAN %s not allowed for OID %s by this role", val, oid), false
		}
		if oid != csr.OIDUPN().String() {
			return fmt.Sprintf("the fake serves only UPN other SANs, not %s", oid), false
		}
		upns = append(upns, val)
	}
	tmpl.Subject = pkix.Name{CommonName: cn, Organization: role.organization}
	tmpl.KeyUsage = role.keyUsage
	if role.serverFlag {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if role.clientFlag {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if role.emailProtectionEKU {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageEmailProtection)
	}
	if len(upns) == 0 {
		tmpl.DNSNames, tmpl.EmailAddresses, tmpl.IPAddresses, tmpl.URIs = dns, emails, ips, uris
		return "", true
	}
	ext, err := sanExtension(dns, emails, ips, uris, upns)
	if err != nil {
		return err.Error(), false
	}
	tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
	return "", true
}

// nameAllowed applies allow_any_name, allowed_domains, allow_bare_domains, allow_subdomains and
// allow_glob_domains to a DNS name or the domain of an e-mail address.
func (r *fakeRole) nameAllowed(name string) bool {
	if r.allowAnyName {
		return true
	}
	if _, domain, ok := strings.Cut(name, "@"); ok {
		name = domain
	}
	name = strings.ToLower(name)
	for _, d := range r.allowedDomains {
		switch {
		case r.allowBareDomains && name == d:
			return true
		case r.allowSubdomains && strings.HasSuffix(name, "."+d):
			return true
		case r.allowGlobDomains && strings.Contains(d, "*") && globMatch(d, name):
			return true
		}
	}
	return false
}

// globMatch matches Vault's globs: * for any run of characters.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// sanExtension encodes a subjectAltName with UPN otherNames, which crypto/x509 cannot write.
func sanExtension(dns, emails []string, ips []net.IP, uris []*url.URL, upns []string) (pkix.Extension, error) {
	var names []asn1.RawValue
	for _, u := range upns {
		oid, _ := asn1.Marshal(csr.OIDUPN())
		val, err := asn1.MarshalWithParams(u, "utf8")
		if err != nil {
			return pkix.Extension{}, err
		}
		explicit, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: val})
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(oid, explicit...)})
	}
	for _, e := range emails {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, Bytes: []byte(e)})
	}
	for _, d := range dns {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(d)})
	}
	for _, u := range uris {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u.String())})
	}
	for _, ip := range ips {
		b := ip.To4()
		if b == nil {
			b = ip.To16()
		}
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 7, Bytes: b})
	}
	v, err := asn1.Marshal(names)
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: oidSubjectAltName, Value: v}, nil
}

func (f *fakeVault) revoke(w http.ResponseWriter, m *fakeMount, body map[string]any) {
	serial, _ := body["serial_number"].(string)
	certPEM, _ := body["certificate"].(string)
	switch {
	case serial == "" && certPEM == "":
		vaultError(w, http.StatusBadRequest, "The serial number or certificate to revoke must be provided.")
		return
	case serial != "" && certPEM != "":
		vaultError(w, http.StatusBadRequest, "Must provide either the certificate or the serial to revoke; not both.")
		return
	case certPEM != "":
		vaultError(w, http.StatusBadRequest, "the fake revokes by serial_number only")
		return
	}
	serial = strings.ReplaceAll(strings.ToLower(serial), "-", ":")
	c := m.certs[serial]
	if c == nil {
		vaultError(w, http.StatusBadRequest, fmt.Sprintf("certificate with serial %s not found.", serial))
		return
	}
	if c.revoked.IsZero() {
		c.revoked = time.Now().Truncate(time.Second)
	}
	vaultOK(w, map[string]any{"revocation_time": c.revoked.Unix(), "revocation_time_rfc3339": c.revoked.UTC().Format(time.RFC3339Nano), "state": "revoked"}, nil, nil)
}

// durationParam reads a Vault duration parameter: a number of seconds or a Go duration string
// (parseutil.ParseDurationSecond).
func durationParam(v any) (time.Duration, error) {
	switch x := v.(type) {
	case json.Number:
		n, err := x.Int64()
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", x)
		}
		return time.Duration(n) * time.Second, nil
	case string:
		if n, err := strconv.ParseInt(x, 10, 64); err == nil {
			return time.Duration(n) * time.Second, nil
		}
		d, err := time.ParseDuration(x)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", x)
		}
		return d, nil
	}
	return 0, fmt.Errorf("invalid duration %v", v)
}

func pemCert(c *x509.Certificate) []byte {
	return pemutil.Encode(c)
}

func selfSigned(t testing.TB, key crypto.Signer, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func signCA(t testing.TB, parent *x509.Certificate, parentKey crypto.Signer, pub crypto.PublicKey, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}
