// Package est is the EST connector (Enrollment over Secure Transport, RFC 7030): it sends the
// CSR the device signed to an EST server's /simpleenroll and returns the certificate issued for
// the device key.
//
// It registers the connector type "est". Settings (under caConnections.<name>):
//
//	url           the server, e.g. https://est.example.com (https only; a path prefix is kept)
//	label         optional: enroll under /.well-known/est/<label>/ (the server's CA or profile)
//	tls           caFile, certFile, keyFile, serverName (package catls); a client certificate
//	              authenticates the adapter to the server
//	username      HTTP basic authentication user, with
//	passwordFile  a file holding the password (a trailing newline is ignored)
//	caCertsFile   optional PEM trust anchors for the issued certificates; without it they are
//	              fetched from /cacerts, which the TLS server authentication vouches for
//	timeout       bound on one call; in the adapter's configuration this is the connection's own
//	              timeout, which the engine applies through the context (default 30s)
//
// Channel binding (the tls-unique value in a challengePassword, RFC 7030 3.5) cannot work here:
// the device signs the CSR long before the adapter opens the TLS session that carries it. The
// server must authenticate the adapter itself, by basic authentication or a client certificate.
package est

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
	"github.com/certprov/certprov-adapter/internal/ca/leafcheck"
	"github.com/certprov/certprov-adapter/internal/logging"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Type is the connector type name used in caConnections.<name>.type.
const Type = "est"

// DefaultTimeout bounds one exchange with the server when the caller's context has no deadline
// and the settings name no timeout (the engine always passes a deadline: the connection's
// timeout).
const DefaultTimeout = 30 * time.Second

// wellKnown is the path every EST operation lives under (RFC 7030 3.2.2).
const wellKnown = "/.well-known/est"

func init() {
	ca.RegisterNew(Type, New)
	ca.RegisterCheck(Type, Check)
}

// Check validates settings without reading the password, trust anchor or TLS files (ca.Check).
func Check(raw ca.Settings) error {
	_, _, err := decodeSettings(raw)
	return err
}

// decodeSettings decodes and checks the settings, and joins url and label into the operations'
// common prefix. It reads no file.
func decodeSettings(raw ca.Settings) (*settings, string, error) {
	var s settings
	if err := ca.Decode(raw, &s); err != nil {
		return nil, "", err
	}
	base, err := baseURL(s.URL, s.Label)
	errs := []error{err}
	if s.Timeout != nil && *s.Timeout <= 0 {
		errs = append(errs, ca.SettingErrorf("timeout", "%v: must be positive", *s.Timeout))
	}
	switch {
	case s.Username != "" && s.PasswordFile == "":
		errs = append(errs, ca.SettingErrorf("passwordFile", "required with username"))
	case s.Username == "" && s.PasswordFile != "":
		errs = append(errs, ca.SettingErrorf("username", "required with passwordFile"))
	case strings.Contains(s.Username, ":"):
		// RFC 7617: the user-id ends at the first colon, so the server would read another user.
		errs = append(errs, ca.SettingErrorf("username", "must not contain a colon"))
	}
	errs = append(errs, s.TLS.Check())
	if err := errors.Join(errs...); err != nil {
		return nil, "", err
	}
	return &s, base, nil
}

// settings is the decoded caConnections.<name> block.
type settings struct {
	URL          string         `mapstructure:"url"`
	Label        string         `mapstructure:"label"`
	TLS          catls.Options  `mapstructure:"tls"`
	Username     string         `mapstructure:"username"`
	PasswordFile string         `mapstructure:"passwordFile"`
	CACertsFile  string         `mapstructure:"caCertsFile"`
	Timeout      *time.Duration `mapstructure:"timeout"`
}

// Connector enrolls CSRs with one EST server. It is safe for concurrent use.
type Connector struct {
	name   string
	log    *zap.Logger
	client *http.Client // reads (/cacerts)
	// enrollClient sends enrollments, each on a new connection.
	enrollClient *http.Client
	base         string // https://host[/prefix]/.well-known/est[/label]
	username     string
	password     logging.Secret
	timeout      time.Duration
	// clientCert says whether tls.certFile is set, for messages about refused handshakes.
	clientCert bool

	// fixed holds the caCertsFile anchors; when nil, anchors come from /cacerts.
	fixed []*x509.Certificate

	mu      sync.Mutex
	fetched []*x509.Certificate // last /cacerts answer
}

var (
	_ ca.Connector = (*Connector)(nil)
	_ ca.Pinger    = (*Connector)(nil)

	_ ca.CertificateHolder = (*Connector)(nil)
)

// New builds the connector from its settings. Files (TLS material, password, trust anchors) are
// read once here, so that a wrong path or an unreadable file stops the adapter at startup and
// not on the first device.
func New(raw ca.Settings, env ca.Env) (*Connector, error) {
	s, base, err := decodeSettings(raw)
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(0)
	if s.Timeout != nil {
		timeout = *s.Timeout
	}
	var password logging.Secret
	if s.PasswordFile != "" {
		b, err := os.ReadFile(env.Path(s.PasswordFile))
		if err != nil {
			return nil, ca.SettingErrorf("passwordFile", "%w", err)
		}
		// Secret files written by editors and `echo` end with a newline that is not part of it.
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return nil, ca.SettingErrorf("passwordFile", "%q: empty", s.PasswordFile)
		}
		password = logging.Secret(p)
	}
	var fixed []*x509.Certificate
	if s.CACertsFile != "" {
		b, err := os.ReadFile(env.Path(s.CACertsFile))
		if err != nil {
			return nil, ca.SettingErrorf("caCertsFile", "%w", err)
		}
		if fixed, err = pemutil.ParseCertificates(b); err != nil {
			return nil, ca.SettingErrorf("caCertsFile", "%q: %w", s.CACertsFile, err)
		}
	}
	client, err := s.TLS.HTTPClient(env, 0) // bounded per call by the context instead
	if err != nil {
		return nil, err
	}
	// A redirect would re-send the CSR, and basic credentials, somewhere the operator did not
	// configure; the operator should configure the final location instead.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	tr, ok := client.Transport.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("tls: unexpected HTTP transport %T", client.Transport)
	}
	// HTTP/1.1, as RFC 7030 specifies; over HTTP/2 Go reports a refused client certificate only
	// as "client conn could not be established", without the TLS alert that says why.
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	// Enrollments go over a fresh connection each: on a reused one, a server closing it as idle
	// just as the request goes out looks exactly like a server that took the request and died,
	// which must not be retried (see transportError). Enrollments are rare enough to afford it.
	enrollTransport := tr.Clone()
	enrollTransport.DisableKeepAlives = true
	enrollClient := &http.Client{Transport: enrollTransport, CheckRedirect: client.CheckRedirect}
	log := env.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Connector{
		name:         env.Name,
		log:          log,
		client:       client,
		enrollClient: enrollClient,
		base:         base,
		username:     s.Username,
		password:     password,
		timeout:      timeout,
		clientCert:   s.TLS.CertFile != "",
		fixed:        fixed,
	}, nil
}

// baseURL checks the url and label settings and joins them into the operations' common prefix.
func baseURL(raw, label string) (string, error) {
	if raw == "" {
		return "", ca.SettingErrorf("url", "required (e.g. https://est.example.com)")
	}
	u, err := ca.ParseURL(raw)
	if err != nil {
		return "", ca.SettingErrorf("url", "%w", err)
	}
	switch {
	case u.User != nil:
		// Credentials in a URL end up in logs and failure messages; checked first so that the
		// messages below, which quote the URL, never show them.
		return "", ca.SettingErrorf("url", "must not carry credentials; use username and passwordFile")
	case u.Scheme != "https":
		return "", ca.SettingErrorf("url", "%q: must start with https:// (EST runs over TLS only, RFC 7030 3.3)", raw)
	case u.Host == "":
		return "", ca.SettingErrorf("url", "%q: no host", raw)
	case u.RawQuery != "" || u.Fragment != "":
		return "", ca.SettingErrorf("url", "%q: must not have a query or fragment", raw)
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	// Accept the well-known prefix written out, since server manuals often print it that way.
	path = strings.TrimSuffix(path, wellKnown)
	if strings.Contains(path, wellKnown+"/") {
		return "", ca.SettingErrorf("url", "%q: give the server only and put the label in label", raw)
	}
	if label != "" {
		if strings.ContainsAny(label, "/?#%") || label == "." || label == ".." || strings.TrimSpace(label) != label {
			return "", ca.SettingErrorf("label", "%q: must be one path segment (no /, ?, #, %%, spaces at the ends)", label)
		}
		if strings.EqualFold(label, "cacerts") || strings.EqualFold(label, "simpleenroll") ||
			strings.EqualFold(label, "simplereenroll") || strings.EqualFold(label, "csrattrs") ||
			strings.EqualFold(label, "serverkeygen") {
			return "", ca.SettingErrorf("label", "%q: is an EST operation name, not a label", label)
		}
		path += wellKnown + "/" + url.PathEscape(label)
	} else {
		path += wellKnown
	}
	return u.Scheme + "://" + u.Host + path, nil
}

// Ping fetches /cacerts: it proves the server is reachable, trusted over TLS and serves the
// label. It cannot prove the credentials, because servers answer /cacerts without them.
func (c *Connector) Ping(ctx context.Context) error {
	certs, err := c.fetchCACerts(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.fetched = certs
	c.mu.Unlock()
	return nil
}

// Issue enrolls req's CSR with /simpleenroll. A 202 answer becomes a *ca.PendingError with the
// server's Retry-After; the engine then calls again with the same CSR, which is what RFC 7030
// 4.2.3 asks of a client, so no ticket is needed.
//
// Nothing is issued when Issue returns an error, with two exceptions that are permanent, so
// that the engine never asks again: a certificate that cannot be used (not for the device key,
// not chaining to the trust anchors), and a request the server received but never answered.
func (c *Connector) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	if req == nil {
		return nil, ca.Permanentf("EST enrollment: no request")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("EST enrollment for %s: %w", req.Key, err)
	}
	csrDER, pub, rawSPKI, err := requestKey(req)
	if err != nil {
		return nil, ca.Permanentf("EST enrollment for %s: %w", req.Key, err)
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()

	// Trust anchors first: a /cacerts failure after enrolling would waste a certificate.
	anchors, fromServer, err := c.anchors(ctx, false)
	if err != nil {
		return nil, err
	}
	certs, err := c.simpleEnroll(ctx, csrDER)
	if err != nil {
		return nil, err
	}
	leaf, others, err := selectLeaf(certs, pub, rawSPKI)
	if err != nil {
		return nil, ca.Permanentf("EST simpleenroll %s: %w", c.endpoint("simpleenroll"), err)
	}
	chain, roots, verr := buildChain(leaf, others, anchors, time.Now())
	if verr != nil && fromServer {
		// The CA may have rolled over to a new issuer since /cacerts was last read.
		if fresh, _, err := c.anchors(ctx, true); err == nil {
			chain, roots, verr = buildChain(leaf, others, fresh, time.Now())
		}
	}
	if verr != nil {
		source := "the server's /cacerts"
		if !fromServer {
			source = "caCertsFile"
		}
		return nil, ca.Permanentf("EST simpleenroll %s: the issued certificate (serial %s) does not chain to the CA certificates from %s: %w",
			c.endpoint("simpleenroll"), leaf.SerialNumber.Text(16), source, verr)
	}
	c.log.Info("issued certificate",
		zap.String("connector", c.name), zap.String("key", req.Key),
		zap.String("serial", leaf.SerialNumber.Text(16)), zap.Time("notAfter", leaf.NotAfter))
	return &ca.Issued{Leaf: leaf, Chain: chain, Roots: roots}, nil
}

// bound applies the connector's timeout, or the default one when the caller set no deadline,
// so that a silent server cannot hold a call forever.
func (c *Connector) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout > 0 {
		return context.WithTimeout(ctx, c.timeout)
	}
	if _, ok := ctx.Deadline(); !ok {
		return context.WithTimeout(ctx, DefaultTimeout)
	}
	return context.WithCancel(ctx)
}

// requestKey returns the CSR to send and the key the certificate must carry.
func requestKey(req *ca.Request) (der []byte, pub crypto.PublicKey, spki []byte, err error) {
	der, csr := req.CSRDER, req.CSR
	if csr == nil {
		if len(der) == 0 {
			return nil, nil, nil, errors.New("request has no CSR")
		}
		if csr, err = x509.ParseCertificateRequest(der); err != nil {
			return nil, nil, nil, fmt.Errorf("parse CSR: %w", err)
		}
	}
	if len(der) == 0 {
		der = csr.Raw
	}
	return der, csr.PublicKey, csr.RawSubjectPublicKeyInfo, nil
}

// anchors returns the certificates issued leaves must chain to, and whether they came from the
// server. refresh re-reads /cacerts even when an answer is cached.
func (c *Connector) anchors(ctx context.Context, refresh bool) ([]*x509.Certificate, bool, error) {
	if c.fixed != nil {
		return c.fixed, false, nil
	}
	c.mu.Lock()
	cached := c.fetched
	c.mu.Unlock()
	if cached != nil && !refresh {
		return cached, true, nil
	}
	certs, err := c.fetchCACerts(ctx)
	if err != nil {
		return nil, true, err
	}
	c.mu.Lock()
	c.fetched = certs
	c.mu.Unlock()
	return certs, true, nil
}

// selectLeaf picks the certificate for the device key out of an enrollment answer; the others
// are candidates for the chain. Some servers answer with the whole chain in any order.
func selectLeaf(certs []*x509.Certificate, pub crypto.PublicKey, spki []byte) (*x509.Certificate, []*x509.Certificate, error) {
	want, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, nil, fmt.Errorf("unsupported device key type %T", pub)
	}
	for i, cert := range certs {
		if !want.Equal(cert.PublicKey) {
			continue
		}
		// ChromeOS compares the key bytes, not the key.
		if !bytes.Equal(cert.RawSubjectPublicKeyInfo, spki) {
			return nil, nil, errors.New("the server's certificate carries the device key in a different encoding; devices compare keys byte for byte")
		}
		others := make([]*x509.Certificate, 0, len(certs)-1)
		others = append(others, certs[:i]...)
		others = append(others, certs[i+1:]...)
		return cert, others, nil
	}
	return nil, nil, fmt.Errorf("the server returned %d certificate(s), none for the device key", len(certs))
}

// buildChain verifies leaf against the anchors, with the enrollment answer's other certificates
// and the non-self-signed anchors as intermediates, and returns the path above the leaf without
// its self-signed root, and the roots it verified to (which go with the certificate, for the
// engine's own check). Anchors with no self-signed certificate among them are all trusted as
// they are (trust anchored at an issuing CA). Whether the leaf is valid now is the engine's
// check, so a leaf dated ahead is verified as of its notBefore.
func buildChain(leaf *x509.Certificate, others, anchors []*x509.Certificate, now time.Time) ([]*x509.Certificate, *x509.CertPool, error) {
	roots := x509.NewCertPool()
	var inters []*x509.Certificate
	haveRoot := false
	for _, a := range anchors {
		if selfSigned(a) {
			roots.AddCert(a)
			haveRoot = true
		} else {
			inters = append(inters, a)
		}
	}
	if !haveRoot {
		for _, a := range anchors {
			roots.AddCert(a)
		}
	}
	inters = append(inters, others...)
	chains, err := leafcheck.VerifyChain(leaf, inters, roots, now)
	if err != nil {
		return nil, nil, err
	}
	path := chains[0][1:]
	if n := len(path); n > 0 && selfSigned(path[n-1]) {
		path = path[:n-1]
	}
	return append([]*x509.Certificate(nil), path...), roots, nil
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}
