package stepca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// fakeCA is an httptest stand-in for step-ca's API, for what a real step-ca cannot be made to do
// (rate limiting, a tampered root, odd answers) and to look inside the tokens the connector sends.
// It serves /root/{sha}, /provisioners (paginated, pageSize entries per page), /health and
// /1.0/sign. Like step-ca, it has one root and an intermediate under it that signs both its TLS
// certificate and the certificates it issues.
type fakeCA struct {
	t           testing.TB
	srv         *httptest.Server
	fingerprint string // of the root
	rootCert    *x509.Certificate
	issuer      *x509.Certificate // the intermediate
	issuerKey   crypto.Signer
	issuerRoots *x509.CertPool   // the root
	provKey     *jose.JSONWebKey // private
	password    string
	pageSize    int
	// signAnswer, when set, answers /1.0/sign instead of signing.
	signAnswer func(w http.ResponseWriter, r *http.Request, ott string)
	// wrongRoot makes /root/{sha} answer with another certificate.
	wrongRoot bool
	// provisionerType overrides the type of the adapter's provisioner entry.
	provisionerType string
	// noEncryptedKey leaves encryptedKey out of the provisioner entry.
	noEncryptedKey bool

	mu         sync.Mutex
	rootCalls  int
	pageCalls  int
	tokens     []verifiedToken
	signBodies []signRequest
}

type verifiedToken struct {
	header jose.Header
	claims tokenClaims
}

const fakeProvisioner = "certprov"

// newFakeCA starts a fake whose provisioner key is key (nil: a P-256 key with alg ES256).
func newFakeCA(t testing.TB, key crypto.Signer, alg string) *fakeCA {
	t.Helper()
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
		alg = string(jose.ES256)
	}
	f := &fakeCA{t: t, password: "fake password", pageSize: 2}
	f.provKey = &jose.JSONWebKey{Key: key, Algorithm: alg, Use: "sig"}
	tp, err := f.provKey.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	f.provKey.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	root := catest.NewRoot(t, "fake step-ca root")
	issuer := root.NewIntermediate(t, "fake step-ca issuer")
	f.rootCert, f.issuer, f.issuerKey, f.issuerRoots = root.Cert, issuer.Cert, issuer.Key, root.Pool()
	tlsKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tlsCert := issuer.Sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, tlsKey.Public())

	mux := http.NewServeMux()
	mux.HandleFunc("GET /root/{sha}", f.root)
	mux.HandleFunc("GET /provisioners", f.provisioners)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("POST /1.0/sign", f.sign)
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{tlsCert.Raw, issuer.Cert.Raw}, PrivateKey: tlsKey, Leaf: tlsCert}}}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	sum := sha256.Sum256(root.Cert.Raw)
	f.fingerprint = hex.EncodeToString(sum[:])
	return f
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func stepErr(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"status": status, "message": msg})
}

func (f *fakeCA) root(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.rootCalls++
	wrongRoot := f.wrongRoot
	f.mu.Unlock()
	if r.PathValue("sha") != f.fingerprint {
		stepErr(w, http.StatusNotFound, fmt.Sprintf("root certificate with fingerprint %q was not found", r.PathValue("sha")))
		return
	}
	cert := f.rootCert
	if wrongRoot {
		cert = f.issuer
	}
	writeJSON(w, http.StatusOK, map[string]string{"ca": string(pemutil.Encode(cert))})
}

// provisioners serves decoys first and the adapter's provisioner last, pageSize to a page.
func (f *fakeCA) provisioners(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.pageCalls++
	typ, noEncryptedKey, pageSize := f.provisionerType, f.noEncryptedKey, f.pageSize
	f.mu.Unlock()
	all := []map[string]any{
		{"type": "OIDC", "name": "google", "clientID": "x"},
		{"type": "ACME", "name": "acme"},
		{"type": "JWK", "name": "other", "key": f.provKey.Public()},
	}
	pub := f.provKey.Public()
	entry := map[string]any{"type": "JWK", "name": fakeProvisioner, "key": pub}
	if typ != "" {
		entry["type"] = typ
	}
	if !noEncryptedKey {
		entry["encryptedKey"] = encryptJWK(f.t, f.provKey, f.password)
	}
	all = append(all, entry)
	start := 0
	if c := r.URL.Query().Get("cursor"); c != "" {
		var err error
		if start, err = strconv.Atoi(c); err != nil {
			stepErr(w, http.StatusBadRequest, "bad cursor")
			return
		}
	}
	end := min(start+pageSize, len(all))
	next := ""
	if end < len(all) {
		next = strconv.Itoa(end)
	}
	writeJSON(w, http.StatusOK, map[string]any{"provisioners": all[start:end], "nextCursor": next})
}

func encryptJWK(t testing.TB, k *jose.JSONWebKey, password string) string {
	t.Helper()
	plain, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := jose.NewEncrypter(jose.A256GCM,
		jose.Recipient{Algorithm: jose.PBES2_HS256_A128KW, Key: []byte(password), PBES2Count: 1000},
		(&jose.EncrypterOptions{}).WithContentType("jwk+json"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := enc.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sign verifies the token as step-ca would (signature, issuer, audience, one use per jti) and
// signs the CSR, unless signAnswer takes over.
func (f *fakeCA) sign(w http.ResponseWriter, r *http.Request) {
	var body signRequest
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		stepErr(w, http.StatusBadRequest, "bad body")
		return
	}
	tok, err := jwt.ParseSigned(body.OTT, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.EdDSA})
	if err != nil {
		stepErr(w, http.StatusUnauthorized, "parse token: "+err.Error())
		return
	}
	var claims tokenClaims
	if err := tok.Claims(f.provKey.Public().Key, &claims); err != nil {
		stepErr(w, http.StatusUnauthorized, "token signature: "+err.Error())
		return
	}
	f.mu.Lock()
	for _, prev := range f.tokens {
		if prev.claims.ID == claims.ID {
			f.mu.Unlock()
			stepErr(w, http.StatusUnauthorized, "token already used")
			return
		}
	}
	f.tokens = append(f.tokens, verifiedToken{header: tok.Headers[0], claims: claims})
	f.signBodies = append(f.signBodies, body)
	answer := f.signAnswer
	f.mu.Unlock()
	if answer != nil {
		answer(w, r, body.OTT)
		return
	}
	block, _ := pem.Decode([]byte(body.CSR))
	if block == nil {
		stepErr(w, http.StatusBadRequest, "missing csr")
		return
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		stepErr(w, http.StatusBadRequest, "invalid csr")
		return
	}
	leaf := f.issue(csr.PublicKey)
	writeJSON(w, http.StatusCreated, map[string]any{
		"crt": pemCert(leaf), "ca": pemCert(f.issuer), "certChain": []string{pemCert(leaf), pemCert(f.issuer)},
	})
}

func (f *fakeCA) issue(pub any) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.issuer, pub, f.issuerKey)
	if err != nil {
		f.t.Error(err)
		return nil
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func pemCert(c *x509.Certificate) string {
	return string(pemutil.Encode(c))
}

// settings for a connector to the fake, with the password written to a file.
func (f *fakeCA) settings(t *testing.T) ca.Settings {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte(f.password+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca.Settings{"url": f.srv.URL, "rootFingerprint": f.fingerprint, "provisioner": fakeProvisioner, "provisionerPasswordFile": pw}
}

func (f *fakeCA) connector(t *testing.T) *Connector {
	t.Helper()
	c, err := New(f.settings(t), ca.Env{Name: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// set changes the fake's behaviour under its lock (handlers run on other goroutines).
func (f *fakeCA) set(change func(f *fakeCA)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *fakeCA) counts() (root, pages, tokens int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rootCalls, f.pageCalls, len(f.tokens)
}

// provisionerKeys are the key types a JWK provisioner may have, with the alg the connector must
// choose (from the JWK, or from the key when the JWK has none).
func provisionerKeys(t *testing.T) []struct {
	name string
	key  crypto.Signer
	alg  string // in the JWK
	want jose.SignatureAlgorithm
} {
	t.Helper()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return []struct {
		name string
		key  crypto.Signer
		alg  string
		want jose.SignatureAlgorithm
	}{
		{"P-256 ES256 (step's default)", nil, "", jose.ES256},
		{"P-384 without alg", p384, "", jose.ES384},
		{"RSA without alg", rsaKey, "", jose.RS256},
		{"Ed25519 EdDSA", edKey, "EdDSA", jose.EdDSA},
	}
}
