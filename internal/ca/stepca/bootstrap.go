package stepca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// session is what a successful bootstrap established; it never changes afterwards.
type session struct {
	client *http.Client // trusts only the pinned root (or tls.caFile)
	// roots are what issued certificates must chain to: the root matching rootFingerprint, or
	// without one the roots of tls.caFile.
	roots  *x509.CertPool
	root   *x509.Certificate // the pinned root; nil without rootFingerprint
	signer jose.Signer       // the provisioner key, with kid and alg set
	kid    string
	sha    string // the root fingerprint for the token's sha claim; may be empty
}

// session returns the established session, bootstrapping first when there is none. Failed
// bootstraps are not remembered: a CA that was down, or a provisioner that an operator fixes,
// works on the next call.
func (c *Connector) session(ctx context.Context) (*session, error) {
	if s := c.sess.Load(); s != nil {
		return s, nil
	}
	select {
	case c.bootLock <- struct{}{}:
	case <-ctx.Done():
		return nil, ca.Retryable(fmt.Errorf("connect to step-ca: %w", ctx.Err()), 0)
	}
	defer func() { <-c.bootLock }()
	if s := c.sess.Load(); s != nil { // bootstrapped while this call waited
		return s, nil
	}
	s, err := c.bootstrap(ctx)
	if err != nil {
		return nil, err
	}
	c.sess.Store(s)
	return s, nil
}

// bootstrap pins the root, then finds the provisioner and makes its signer.
func (c *Connector) bootstrap(ctx context.Context) (_ *session, err error) {
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("connect to step-ca: %w", err), 0)
	}
	cfg := c.tlsConfig.Clone()
	roots := cfg.RootCAs
	var pinned *x509.Certificate
	if c.fingerprint != "" {
		root, err := c.fetchRoot(ctx)
		if err != nil {
			return nil, err
		}
		roots, pinned = x509.NewCertPool(), root
		roots.AddCert(root)
		if cfg.RootCAs == nil {
			// Pin: from now on the CA must present a chain to exactly this root.
			cfg.RootCAs = roots
		}
	}
	s := &session{client: newClient(cfg), roots: roots, root: pinned, sha: c.fingerprint}
	defer func() {
		if err != nil { // the next attempt makes its own client: free this one's connections
			s.client.CloseIdleConnections()
		}
	}()
	jwk, err := c.findProvisioner(ctx, s.client)
	if err != nil {
		return nil, err
	}
	if c.x5c != nil {
		return c.x5cSession(s)
	}
	priv, err := c.privateKey(jwk)
	if err != nil {
		return nil, err
	}
	alg, err := signatureAlgorithm(priv)
	if err != nil {
		return nil, ca.Permanentf("provisioner %q: %w", c.provisioner, err)
	}
	s.kid = jwk.publicKey.KeyID
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: priv.Key, KeyID: s.kid, Algorithm: string(alg)}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, ca.Permanentf("provisioner %q: signer: %w", c.provisioner, err)
	}
	s.signer = signer
	c.log.Info("step-ca connection ready",
		zap.String("connector", c.name), zap.String("url", c.base.String()),
		zap.String("provisioner", c.provisioner), zap.String("kid", s.kid), zap.String("alg", string(alg)))
	return s, nil
}

// x5cSession completes s for an X5C provisioner: tokens are signed with the key of x5cCertFile
// and carry its chain in the x5c header, which step-ca verifies against the provisioner's roots.
func (c *Connector) x5cSession(s *session) (*session, error) {
	key := jose.JSONWebKey{Key: c.x5c.PrivateKey}
	alg, err := signatureAlgorithm(&key)
	if err != nil {
		return nil, ca.Permanentf("x5cKeyFile: %w", err)
	}
	chain := make([]string, len(c.x5c.Certificate))
	for i, der := range c.x5c.Certificate {
		chain[i] = base64.StdEncoding.EncodeToString(der)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: c.x5c.PrivateKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("x5c", chain))
	if err != nil {
		return nil, ca.Permanentf("provisioner %q: signer: %w", c.provisioner, err)
	}
	s.signer = signer
	c.log.Info("step-ca connection ready",
		zap.String("connector", c.name), zap.String("url", c.base.String()), zap.String("provisioner", c.provisioner),
		zap.String("x5c_subject", c.x5c.Leaf.Subject.String()), zap.Time("x5c_not_after", c.x5c.Leaf.NotAfter), zap.String("alg", string(alg)))
	return s, nil
}

func newClient(cfg *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	tr.Proxy = http.ProxyFromEnvironment
	return &http.Client{Transport: tr, Timeout: httpTimeout}
}

// fetchRoot downloads the root named by rootFingerprint and checks that it is the one. Without
// tls.caFile the connection is not verified: nothing can be trusted before the root is known,
// and the hash check is what makes the answer trustworthy (as `step ca bootstrap` does).
func (c *Connector) fetchRoot(ctx context.Context) (*x509.Certificate, error) {
	cfg := c.tlsConfig.Clone()
	if cfg.RootCAs == nil {
		cfg.InsecureSkipVerify = true //nolint:gosec // the answer is verified by its SHA-256 below
	}
	client := newClient(cfg)
	defer client.CloseIdleConnections()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.JoinPath("/root", c.fingerprint).String(), nil)
	if err != nil {
		return nil, ca.Permanentf("fetch root: %w", err)
	}
	hreq.Header.Set("Accept", "application/json")
	var resp struct {
		CA string `json:"ca"`
	}
	if err := do(client, hreq, "GET /root", &resp, "", true); err != nil {
		var herr *httpError
		if errors.As(err, &herr) && herr.code == http.StatusNotFound {
			return nil, ca.Permanentf("step-ca %s has no root with fingerprint %s: check rootFingerprint (step certificate fingerprint root_ca.crt)", c.base, c.fingerprint)
		}
		return nil, fmt.Errorf("fetch the root of step-ca %s: %w", c.base, err)
	}
	block, _ := pem.Decode([]byte(resp.CA))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, ca.Permanentf("step-ca %s: GET /root/%s: the answer holds no PEM certificate", c.base, c.fingerprint)
	}
	sum := sha256.Sum256(block.Bytes)
	if got := hex.EncodeToString(sum[:]); got != c.fingerprint {
		return nil, ca.Permanentf("step-ca %s sent a root with fingerprint %s, not rootFingerprint %s: refusing to trust it", c.base, got, c.fingerprint)
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, ca.Permanentf("step-ca %s: root certificate: %w", c.base, err)
	}
	return root, nil
}

// provisionerEntry is the part of an entry of GET /provisioners the connector reads.
type provisionerEntry struct {
	Type         string          `json:"type"`
	Name         string          `json:"name"`
	Key          json.RawMessage `json:"key"`
	EncryptedKey string          `json:"encryptedKey"`
}

// jwkProvisioner is the provisioner the adapter signs tokens for.
type jwkProvisioner struct {
	publicKey    jose.JSONWebKey
	encryptedKey string
}

// maxProvisionerPages bounds the walk through GET /provisioners against a CA whose cursor never
// ends.
const maxProvisionerPages = 100

// findProvisioner walks GET /provisioners (paginated) for the configured name.
func (c *Connector) findProvisioner(ctx context.Context, client *http.Client) (*jwkProvisioner, error) {
	var names []string
	cursor := ""
	for range maxProvisionerPages {
		u := c.base.JoinPath("/provisioners")
		q := url.Values{"limit": {"100"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		u.RawQuery = q.Encode()
		hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, ca.Permanentf("list provisioners: %w", err)
		}
		hreq.Header.Set("Accept", "application/json")
		var page struct {
			Provisioners []provisionerEntry `json:"provisioners"`
			NextCursor   string             `json:"nextCursor"`
		}
		if err := do(client, hreq, "GET /provisioners", &page, "", true); err != nil {
			return nil, fmt.Errorf("list the provisioners of step-ca %s: %w", c.base, err)
		}
		for _, p := range page.Provisioners {
			if p.Name != c.provisioner {
				names = append(names, p.Name)
				continue
			}
			switch {
			case c.x5c != nil && strings.EqualFold(p.Type, "X5C"):
				return &jwkProvisioner{}, nil // its trust is its roots, which step-ca keeps
			case c.x5c != nil:
				return nil, ca.Permanentf("step-ca provisioner %q is of type %s; x5cCertFile needs an X5C provisioner", c.provisioner, p.Type)
			case !strings.EqualFold(p.Type, "JWK"):
				return nil, ca.Permanentf("step-ca provisioner %q is of type %s; the adapter needs a JWK provisioner (or an X5C one with x5cCertFile)", c.provisioner, p.Type)
			}
			var pub jose.JSONWebKey
			if err := json.Unmarshal(p.Key, &pub); err != nil {
				return nil, ca.Permanentf("step-ca provisioner %q: key: %w", c.provisioner, err)
			}
			if !pub.IsPublic() {
				// GET /provisioners is public: a private key there is a CA misconfiguration the
				// adapter should not build on.
				return nil, ca.Permanentf("step-ca provisioner %q publishes a private key; fix the CA configuration", c.provisioner)
			}
			return &jwkProvisioner{publicKey: pub, encryptedKey: p.EncryptedKey}, nil
		}
		if page.NextCursor == "" || page.NextCursor == cursor || len(page.Provisioners) == 0 {
			break
		}
		cursor = page.NextCursor
	}
	sort.Strings(names)
	return nil, ca.Permanentf("step-ca %s has no provisioner named %q (it has: %s)", c.base, c.provisioner, strings.Join(names, ", "))
}

// keyAlgorithms and contentEncryptions are what step encrypts provisioner keys with
// (PBES2-HS256+A128KW, A256GCM) and their siblings.
var (
	keyAlgorithms      = []jose.KeyAlgorithm{jose.PBES2_HS256_A128KW, jose.PBES2_HS384_A192KW, jose.PBES2_HS512_A256KW}
	contentEncryptions = []jose.ContentEncryption{jose.A128GCM, jose.A192GCM, jose.A256GCM, jose.A128CBC_HS256, jose.A192CBC_HS384, jose.A256CBC_HS512}
)

// privateKey returns the provisioner's private key: decrypted from the CA's encryptedKey with the
// password, or the one from provisionerKeyFile. Either way it must belong to the provisioner's
// public key, or step-ca would refuse every token.
func (c *Connector) privateKey(p *jwkProvisioner) (*jose.JSONWebKey, error) {
	priv := c.fileKey
	if priv == nil {
		if p.encryptedKey == "" {
			return nil, ca.Permanentf("step-ca provisioner %q publishes no encrypted key; configure provisionerKeyFile with its decrypted JWK instead of provisionerPasswordFile", c.provisioner)
		}
		jwe, err := jose.ParseEncryptedCompact(p.encryptedKey, keyAlgorithms, contentEncryptions)
		if err != nil {
			return nil, ca.Permanentf("step-ca provisioner %q: encrypted key: %w", c.provisioner, err)
		}
		plain, err := jwe.Decrypt([]byte(c.password.Reveal()))
		if err != nil {
			return nil, ca.Permanentf("cannot decrypt the key of step-ca provisioner %q with the password in provisionerPasswordFile (wrong password?)", c.provisioner)
		}
		var k jose.JSONWebKey
		if err := json.Unmarshal(plain, &k); err != nil {
			return nil, ca.Permanentf("step-ca provisioner %q: decrypted key is not a JWK", c.provisioner)
		}
		if k.IsPublic() {
			return nil, ca.Permanentf("step-ca provisioner %q: the decrypted key is not a private key", c.provisioner)
		}
		priv = &k
	}
	if !sameKey(priv, &p.publicKey) {
		src := "the decrypted key"
		if c.fileKey != nil {
			src = "provisionerKeyFile"
		}
		return nil, ca.Permanentf("%s (kid %q) does not belong to step-ca provisioner %q (kid %q)", src, priv.KeyID, c.provisioner, p.publicKey.KeyID)
	}
	return priv, nil
}

// sameKey reports whether the private JWK belongs to the public one.
func sameKey(priv, pub *jose.JSONWebKey) bool {
	pp := priv.Public()
	a, err1 := pp.Thumbprint(crypto.SHA256)
	b, err2 := pub.Thumbprint(crypto.SHA256)
	return err1 == nil && err2 == nil && string(a) == string(b)
}

// signatureAlgorithm is the JWK's own alg, or the usual one for its key type (step creates
// P-256 keys, ES256).
func signatureAlgorithm(k *jose.JSONWebKey) (jose.SignatureAlgorithm, error) {
	if k.Algorithm != "" {
		return jose.SignatureAlgorithm(k.Algorithm), nil
	}
	switch key := k.Public().Key.(type) {
	case *ecdsa.PublicKey:
		switch key.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
	case ed25519.PublicKey:
		return jose.EdDSA, nil
	case *rsa.PublicKey:
		return jose.RS256, nil
	}
	return "", errors.New("unsupported provisioner key type (want EC P-256/384/521, Ed25519 or RSA)")
}
