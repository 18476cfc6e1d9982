// Package ejbca connects the adapter to Keyfactor EJBCA (Community or Enterprise) through its
// REST API, authenticated by the TLS client certificate of an EJBCA administrator (mTLS).
//
// Keyfactor's Go SDK (github.com/Keyfactor/ejbca-go-client-sdk) cannot be had in this build's
// module proxy, so the package holds a small typed client of its own (client.go), written from
// the SDK's source of truth, EJBCA's published OpenAPI description of the REST API: the paths,
// JSON field names and status codes below are that document's.
//
// Each request is `POST /v1/certificate/pkcs10enroll` with the device's CSR, the certificate
// profile, the end entity profile, the CA name, a username made from the request key (the
// process name) and an enrollment code, asking for the chain. EJBCA creates or updates that end
// entity and issues. A second enroll for one username issues a second certificate, so the
// connector first looks for what EJBCA already issued to the username for this key
// (`POST /v1/certificate/search`): a repeat after a lost answer, and Recover after a restart, find
// that certificate instead of issuing again. A profile whose approval profile holds enrollments for
// an administrator answers 202 (or, in some versions, 400 "waiting for approval"): a pending
// answer whose ticket carries the approval request id, which the engine journals; the connector
// then asks `POST /v1/certificate/{request_id}/finalize` until EJBCA issues or says no.
//
// It registers the connector type "ejbca". Settings (under caConnections.<name>):
//
//	url                       https://host[:port] of EJBCA; the REST API's path is
//	                          /ejbca/ejbca-rest-api unless the URL names another
//	certificateAuthorityName  the CA's name in EJBCA (required)
//	certificateProfileName    the certificate profile (required); a profile's templateName
//	                          overrides it
//	endEntityProfileName      the end entity profile (required)
//	usernamePrefix            prefix of the end entity usernames (default "certprov-")
//	enrollmentCodeSecretFile  optional: the end entities' enrollment codes are derived from
//	                          this secret; without it each enrollment gets a random one
//	caCertsFile               optional PEM roots; default: the CA's chain read from EJBCA
//	tls                       certFile and keyFile (the administrator's client certificate,
//	                          required), caFile, serverName
//
// Validity is not asked for: EJBCA takes it from the certificate profile.
package ejbca

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Type is the connector type name used in caConnections.<name>.type.
const Type = "ejbca"

func init() {
	ca.RegisterNew(Type, New)
	ca.RegisterCheck(Type, Check)
}

const (
	// DefaultPath is where EJBCA serves its REST API.
	DefaultPath = "/ejbca/ejbca-rest-api"
	// DefaultUsernamePrefix begins every end entity username the adapter makes.
	DefaultUsernamePrefix = "certprov-"

	// httpTimeout is a backstop for one HTTP exchange. The engine bounds each call with the
	// connection's own caConnections.<name>.timeout through the context, which is normally shorter.
	httpTimeout = 2 * time.Minute
	// maxUsername bounds a username; EJBCA stores up to 250 characters.
	maxUsername = 128
	// maxPrefix bounds usernamePrefix, leaving room for the request key.
	maxPrefix = 48
	// pendingRetry is when to ask again for an enrollment an administrator must approve.
	pendingRetry = time.Minute
	// lostRetry is how long to wait after an enrollment whose answer was lost before looking for
	// its certificate, so that EJBCA has finished what it was doing.
	lostRetry = 5 * time.Second
	// rememberFor is how long a key whose enrollment reached EJBCA is remembered, for a role that
	// may not search (repeats of it are refused).
	rememberFor = time.Hour
	// maxMessage bounds EJBCA's text inside an error: failure messages reach a user's device and
	// are at most 500 bytes in all.
	maxMessage = 300
)

// settings is the decoded caConnections.<name> block.
type settings struct {
	URL                      string        `mapstructure:"url"`
	CertificateAuthorityName string        `mapstructure:"certificateAuthorityName"`
	CertificateProfileName   string        `mapstructure:"certificateProfileName"`
	EndEntityProfileName     string        `mapstructure:"endEntityProfileName"`
	UsernamePrefix           string        `mapstructure:"usernamePrefix"`
	EnrollmentCodeSecretFile string        `mapstructure:"enrollmentCodeSecretFile"`
	CACertsFile              string        `mapstructure:"caCertsFile"`
	TLS                      catls.Options `mapstructure:"tls"`
}

// Connector issues certificates from one CA of one EJBCA. It is safe for concurrent use.
type Connector struct {
	name        string
	log         *zap.Logger
	cl          *client
	caName      string
	certProfile string
	eeProfile   string
	prefix      string
	// codeSecret derives enrollment codes; nil makes a random code per enrollment, carried in
	// the pending ticket when an administrator must approve.
	codeSecret []byte

	pinned      *x509.CertPool // from caCertsFile
	pinnedCerts []*x509.Certificate

	authority atomic.Pointer[authority] // the CA as last read from EJBCA
	authMu    sync.Mutex                // one read of the CA at a time

	// searchForbidden is set once EJBCA refused this role a search: what it issued for a key
	// cannot be looked up then.
	searchForbidden atomic.Bool
	mu              sync.Mutex
	asked           map[string]time.Time // keys whose enrollment reached EJBCA in this run
}

// authority is the connection's CA as EJBCA describes it.
type authority struct {
	subjectDN string              // as EJBCA writes it, for the paths that name the CA
	certs     []*x509.Certificate // the CA's chain, the CA first
	roots     *x509.CertPool      // the trust anchors leaves are checked against
	rootCerts []*x509.Certificate
}

var (
	_ ca.Connector = (*Connector)(nil)
	_ ca.Recoverer = (*Connector)(nil)
	_ ca.Pinger    = (*Connector)(nil)
	_ ca.Revoker   = (*Connector)(nil)

	_ ca.CertificateHolder = (*Connector)(nil)
	_ io.Closer            = (*Connector)(nil)
)

// New builds the connector from its settings. It reads the local files (the client certificate
// and key, the CA files, the enrollment code secret) so that a wrong path stops the adapter at
// startup, but does not contact EJBCA: an EJBCA that is down at startup only delays issuance.
func New(raw ca.Settings, env ca.Env) (*Connector, error) {
	s, base, err := decodeSettings(raw)
	if err != nil {
		return nil, err
	}
	log := env.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c := &Connector{
		name:        env.Name,
		log:         log,
		caName:      s.CertificateAuthorityName,
		certProfile: s.CertificateProfileName,
		eeProfile:   s.EndEntityProfileName,
		prefix:      s.UsernamePrefix,
		asked:       map[string]time.Time{},
	}
	var errs []error
	if s.EnrollmentCodeSecretFile != "" {
		b, err := os.ReadFile(env.Path(s.EnrollmentCodeSecretFile))
		switch {
		case err != nil:
			errs = append(errs, ca.SettingErrorf("enrollmentCodeSecretFile", "%w", err))
		case len(strings.TrimRight(string(b), "\r\n")) < 16:
			errs = append(errs, ca.SettingErrorf("enrollmentCodeSecretFile", "%q: at least 16 bytes of secret are needed (e.g. openssl rand -hex 32)", s.EnrollmentCodeSecretFile))
		default:
			c.codeSecret = []byte(strings.TrimRight(string(b), "\r\n"))
		}
	}
	if s.CACertsFile != "" {
		certs, err := pemutil.ReadCertificates(env.Path(s.CACertsFile))
		if err != nil {
			errs = append(errs, ca.SettingErrorf("caCertsFile", "%q: %w", s.CACertsFile, err))
		} else {
			c.pinned, c.pinnedCerts = x509.NewCertPool(), certs
			for _, cert := range certs {
				c.pinned.AddCert(cert)
			}
		}
	}
	httpClient, err := s.TLS.HTTPClient(env, httpTimeout)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// A redirect would re-send the CSR somewhere the operator did not configure (EJBCA's
	// REST API does not redirect; a proxy's login page would).
	httpClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.cl = &client{http: httpClient, base: base}
	return c, nil
}

// Close drops the kept-alive connections to EJBCA (io.Closer: a reload replaces the connector).
func (c *Connector) Close() error {
	c.cl.http.CloseIdleConnections()
	return nil
}

// Check validates settings without reading any file (ca.Check).
func Check(raw ca.Settings) error {
	_, _, err := decodeSettings(raw)
	return err
}

// usernameChars are the characters a username is made of: ones EJBCA keeps in a username (it
// strips others, which could make two keys one end entity).
var usernameChars = regexp.MustCompile(`^[A-Za-z0-9._@-]*$`)

// usernameRune reports whether r is one of usernameChars.
func usernameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._@-", r)
}

// decodeSettings decodes and checks the settings, applies defaults and returns the REST API's
// base URL. It reads no file.
func decodeSettings(raw ca.Settings) (*settings, string, error) {
	var s settings
	if err := ca.Decode(raw, &s); err != nil {
		return nil, "", err
	}
	base, err := baseURL(s.URL)
	errs := []error{err}
	for _, f := range []struct{ key, v, what string }{
		{"certificateAuthorityName", s.CertificateAuthorityName, "the CA's name in EJBCA (CA Functions > Certification Authorities)"},
		{"certificateProfileName", s.CertificateProfileName, "the certificate profile EJBCA issues with"},
		{"endEntityProfileName", s.EndEntityProfileName, "the end entity profile the adapter's end entities belong to"},
	} {
		switch {
		case f.v == "":
			errs = append(errs, ca.SettingErrorf(f.key, "required (%s)", f.what))
		case strings.ContainsFunc(f.v, func(r rune) bool { return !unicode.IsPrint(r) }) || strings.TrimSpace(f.v) != f.v:
			errs = append(errs, ca.SettingErrorf(f.key, "%q: no control characters or blanks at the ends", f.v))
		}
	}
	if s.UsernamePrefix == "" {
		s.UsernamePrefix = DefaultUsernamePrefix
	}
	if len(s.UsernamePrefix) > maxPrefix || !usernameChars.MatchString(s.UsernamePrefix) {
		errs = append(errs, ca.SettingErrorf("usernamePrefix", "%q: at most %d of the letters, digits and . _ @ -", s.UsernamePrefix, maxPrefix))
	}
	if s.TLS.CertFile == "" && s.TLS.KeyFile == "" {
		errs = append(errs, ca.SettingErrorf("tls.certFile", "required with tls.keyFile: EJBCA authenticates the adapter by the TLS client certificate of an administrator"))
	}
	errs = append(errs, s.TLS.Check())
	if err := errors.Join(errs...); err != nil {
		return nil, "", err
	}
	return &s, base, nil
}

// baseURL checks the url setting and returns the REST API's base: the URL's path, or
// DefaultPath when it has none.
func baseURL(raw string) (string, error) {
	if raw == "" {
		return "", ca.SettingErrorf("url", "required (e.g. https://ejbca.example.com)")
	}
	u, err := ca.ParseURL(raw)
	if err != nil {
		return "", ca.SettingErrorf("url", "%w", err)
	}
	switch {
	case u.User != nil:
		return "", ca.SettingErrorf("url", "must not carry credentials; EJBCA authenticates the adapter by tls.certFile")
	case u.Scheme != "https":
		return "", ca.SettingErrorf("url", "%q: must start with https:// (the REST API authenticates by TLS client certificate)", raw)
	case u.Host == "" || u.Hostname() == "":
		return "", ca.SettingErrorf("url", "%q: no host", raw)
	case u.RawQuery != "" || u.Fragment != "":
		return "", ca.SettingErrorf("url", "%q: must not have a query or fragment", raw)
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	if path == "" {
		path = DefaultPath
	}
	if strings.HasSuffix(path, "/v1") || strings.Contains(path, "/v1/") {
		return "", ca.SettingErrorf("url", "%q: name the REST API's root (…/ejbca/ejbca-rest-api), not a version or resource below it", raw)
	}
	return "https://" + u.Host + path, nil
}

// username is the end entity the request key's certificates belong to: the prefix, then the
// customer and process id when they are made of characters EJBCA keeps, or else the key's
// characters that are and a hash of the whole key, so that two keys are never one end entity.
func (c *Connector) username(key string) string {
	readable := key
	if customer, id, err := process.ParseName(key); err == nil {
		readable = customer + "-" + id
	}
	if usernameChars.MatchString(readable) && len(c.prefix)+len(readable) <= maxUsername {
		return c.prefix + readable
	}
	sum := sha256.Sum256([]byte(key))
	tag := "-" + hex.EncodeToString(sum[:8])
	kept := strings.Map(func(r rune) rune {
		if usernameRune(r) {
			return r
		}
		return '_'
	}, readable)
	if room := maxUsername - len(c.prefix) - len(tag); len(kept) > room {
		kept = kept[:room]
	}
	return c.prefix + kept + tag
}

// enrollmentCode is the password the end entity is enrolled with. Derived from the secret it can
// be made again after a restart, so that a pending ticket need not carry it; otherwise it is
// random, and the ticket carries it.
func (c *Connector) enrollmentCode(username string) (code string, derived bool) {
	if c.codeSecret != nil {
		m := hmac.New(sha256.New, c.codeSecret)
		m.Write([]byte("certprov ejbca enrollment code\x00" + username))
		return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:24]), true
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b), false
}

// remember notes that an enrollment for key reached EJBCA while the role may not search, and
// forgets old ones.
func (c *Connector) remember(key string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, at := range c.asked {
		if now.Sub(at) > rememberFor {
			delete(c.asked, k)
		}
	}
	c.asked[key] = now
}

// askedBefore reports whether an enrollment for key reached EJBCA in this run, as remembered.
func (c *Connector) askedBefore(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.asked[key]
	return ok && time.Since(at) <= rememberFor
}

// Certificates returns the TLS client certificate, the caCertsFile roots or, once read from
// EJBCA, the CA's chain.
func (c *Connector) Certificates() []ca.HeldCertificate {
	out := catls.Held(catls.ClientTLS(c.cl.http))
	for _, r := range c.pinnedCerts {
		out = append(out, ca.HeldCertificate{Role: ca.RoleRoot, Cert: r})
	}
	if a := c.authority.Load(); a != nil {
		for i, cert := range a.certs {
			role := ca.RoleIntermediate
			switch {
			case c.pinned == nil && isSelfSigned(cert):
				role = ca.RoleRoot
			case isSelfSigned(cert):
				continue // listed as a pinned root, or not trusted
			case i == 0:
				role = ca.RoleIssuer
			}
			out = append(out, ca.HeldCertificate{Role: role, Cert: cert})
		}
	}
	return out
}

// label names the connector in messages.
func (c *Connector) label() string {
	if c.name == "" {
		return "EJBCA"
	}
	return fmt.Sprintf("EJBCA %s", c.name)
}
