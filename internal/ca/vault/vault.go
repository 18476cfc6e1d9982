// Package vault connects the adapter to the PKI secrets engine of HashiCorp Vault or OpenBao,
// through Vault's official Go client (github.com/hashicorp/vault/api; OpenBao serves the same
// HTTP API).
//
// Every Issue posts the device's CSR to `<mount>/sign/<role>` (Vault applies the role's name,
// usage and lifetime rules) or, where the adapter profile owns the subject, to
// `<mount>/sign-verbatim[/<role>]`. The connector authenticates with a token file, AppRole or a
// Kubernetes service-account JWT, renews its token before it expires and logs in again when the
// token can be renewed no further. It revokes by serial (`<mount>/revoke`) and checks its
// connection, token and policy with sys/health and sys/capabilities-self.
//
// It registers the connector type "vault". Settings (under caConnections.<name>):
//
//	address      https://host:port of Vault (http only to a loopback address)
//	namespace    optional Vault Enterprise / OpenBao namespace
//	mount        path of the PKI secrets engine (default "pki")
//	role         the PKI role; required for endpoint "sign"
//	issuer       optional issuer reference; default: the mount's default issuer
//	endpoint     "sign" (default) or "sign-verbatim"
//	caCertsFile  optional PEM trust anchors; default: the issuer's chain read from Vault
//	auth         method (token, approle, kubernetes) and its files
//	tls          catls.Options: caFile, certFile/keyFile, serverName
//
// Vault records no request key, so it cannot say what it issued for one: the connector is no
// ca.Recoverer, and a sign request whose answer is lost after Vault received it is not sent again
// (the process fails rather than risk a second certificate).
package vault

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
	"github.com/certprov/certprov-adapter/internal/cleartext"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Type is the connector type name used in caConnections.<name>.type.
const Type = "vault"

func init() {
	ca.RegisterNew(Type, New)
	ca.RegisterCheck(Type, Check)
}

// httpTimeout is a backstop for one HTTP exchange. The engine bounds each call with the
// connection's own caConnections.<name>.timeout through the context, which is normally shorter.
const httpTimeout = 2 * time.Minute

// The endpoints a connection may sign with.
const (
	EndpointSign         = "sign"
	EndpointSignVerbatim = "sign-verbatim"
)

// Authentication methods.
const (
	MethodToken      = "token"
	MethodAppRole    = "approle"
	MethodKubernetes = "kubernetes"
)

// DefaultJWTFile is where Kubernetes mounts a pod's service-account token.
const DefaultJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// settings is the decoded caConnections.<name> block.
type settings struct {
	Address     string        `mapstructure:"address"`
	Namespace   string        `mapstructure:"namespace"`
	Mount       string        `mapstructure:"mount"`
	Role        string        `mapstructure:"role"`
	Issuer      string        `mapstructure:"issuer"`
	Endpoint    string        `mapstructure:"endpoint"`
	CACertsFile string        `mapstructure:"caCertsFile"`
	Auth        authSettings  `mapstructure:"auth"`
	TLS         catls.Options `mapstructure:"tls"`
}

// authSettings is the auth block.
type authSettings struct {
	Method string `mapstructure:"method"`
	// Mount is the auth method's path (default: the method's name).
	Mount        string `mapstructure:"mount"`
	TokenFile    string `mapstructure:"tokenFile"`
	RoleID       string `mapstructure:"roleID"`
	RoleIDFile   string `mapstructure:"roleIDFile"`
	SecretIDFile string `mapstructure:"secretIDFile"`
	Role         string `mapstructure:"role"`
	JWTFile      string `mapstructure:"jwtFile"`
}

// Connector issues certificates from one PKI mount of one Vault. It is safe for concurrent use.
type Connector struct {
	name     string
	log      *zap.Logger
	base     *vaultapi.Client // carries no token: each call sets the current one
	address  string           // for messages
	mount    string
	role     string
	issuer   string // "" for the mount's default issuer
	endpoint string
	signPath string // e.g. pki/sign/devices, without /v1/
	auth     *authenticator

	// pinned are the roots from caCertsFile; without them the issuer's chain is fetched from
	// Vault once, and again when a certificate does not chain to what was fetched (a rotated
	// root).
	pinned      *x509.CertPool
	pinnedCerts []*x509.Certificate
	fetched     atomic.Pointer[issuerChain]
	fetchMu     sync.Mutex

	tlsClient *http.Client // for the client certificate's expiry (Certificates)
}

// issuerChain is the issuer's chain as read from Vault, and the roots taken from it.
type issuerChain struct {
	pool  *x509.CertPool
	certs []*x509.Certificate // from the issuer up
	roots []*x509.Certificate // those of certs in pool
}

var (
	_ ca.Connector = (*Connector)(nil)
	_ ca.Pinger    = (*Connector)(nil)
	_ ca.Revoker   = (*Connector)(nil)

	_ ca.CertificateHolder = (*Connector)(nil)
)

// Certificates returns the TLS client certificate, the caCertsFile roots or, once read from
// Vault, the issuer's chain: its issuer, intermediates and roots.
func (c *Connector) Certificates() []ca.HeldCertificate {
	out := catls.Held(catls.ClientTLS(c.tlsClient))
	for _, r := range c.pinnedCerts {
		out = append(out, ca.HeldCertificate{Role: ca.RoleRoot, Cert: r})
	}
	if ch := c.fetched.Load(); ch != nil && c.pinned == nil {
		for i, cert := range ch.certs {
			role := ca.RoleIntermediate
			switch {
			case slices.Contains(ch.roots, cert):
				role = ca.RoleRoot
			case i == 0:
				role = ca.RoleIssuer
			}
			out = append(out, ca.HeldCertificate{Role: role, Cert: cert})
		}
	}
	return out
}

// New builds the connector from its settings. It reads the local files (token, AppRole and
// Kubernetes credentials, CA certificates, TLS material) so that a wrong path stops the adapter
// at startup, but does not contact Vault: a Vault that is down or sealed at startup only delays
// issuance.
func New(raw ca.Settings, env ca.Env) (*Connector, error) {
	s, err := decodeSettings(raw)
	if err != nil {
		return nil, err
	}
	log := env.Logger
	if log == nil {
		log = zap.NewNop()
	}
	var errs []error
	var (
		pinned      *x509.CertPool
		pinnedCerts []*x509.Certificate
	)
	if s.CACertsFile != "" {
		certs, err := pemutil.ReadCertificates(env.Path(s.CACertsFile))
		if err != nil {
			errs = append(errs, ca.SettingErrorf("caCertsFile", "%w", err))
		} else {
			pinned, pinnedCerts = x509.NewCertPool(), certs
			for _, c := range certs {
				pinned.AddCert(c)
			}
		}
	}
	httpClient, err := s.TLS.HTTPClient(env, httpTimeout)
	if err != nil {
		errs = append(errs, err)
	}
	files, err := readAuthFiles(s.Auth, env)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Redirects are Vault's own (a standby pointing at the active node): the client follows one
	// itself, keeping the token on it, which net/http would drop.
	httpClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	base, err := vaultapi.NewClient(&vaultapi.Config{
		Address:    s.Address,
		HttpClient: httpClient,
		// The engine retries with its own backoff and deadline; the client's retries would
		// repeat a sign whose answer was lost, which could issue twice.
		MaxRetries: 0,
	})
	if err != nil {
		return nil, ca.SettingErrorf("address", "%w", err)
	}
	// NewClient reads VAULT_TOKEN and VAULT_NAMESPACE from the environment; this connection uses
	// exactly what its settings say.
	base.ClearToken()
	base.ClearNamespace()
	if s.Namespace != "" {
		base.SetNamespace(s.Namespace)
	}
	c := &Connector{
		name:        env.Name,
		log:         log,
		base:        base,
		address:     s.Address,
		mount:       s.Mount,
		role:        s.Role,
		issuer:      s.Issuer,
		endpoint:    s.Endpoint,
		signPath:    signPath(s),
		pinned:      pinned,
		pinnedCerts: pinnedCerts,
		tlsClient:   httpClient,
	}
	c.auth = newAuthenticator(s.Auth, files, base, c.name, c.label(), log)
	return c, nil
}

// Close stops the background token renewal.
func (c *Connector) Close() error {
	c.auth.close()
	return nil
}

// Check validates settings without reading any file (ca.Check).
func Check(raw ca.Settings) error {
	_, err := decodeSettings(raw)
	return err
}

// pathSegment is what the connector accepts in a mount, namespace, role or issuer name: Vault's
// path characters, without anything that would change the path's meaning.
var pathSegment = regexp.MustCompile(`^[A-Za-z0-9_.@-]+$`)

// decodeSettings decodes and checks the settings, applying defaults. It reads no file.
func decodeSettings(raw ca.Settings) (*settings, error) {
	var s settings
	if err := ca.Decode(raw, &s); err != nil {
		return nil, err
	}
	var errs []error
	if err := checkAddress(s.Address); err != nil {
		errs = append(errs, err)
	}
	if s.Mount == "" {
		s.Mount = "pki"
	}
	var err error
	if s.Mount, err = cleanPath("mount", s.Mount); err != nil {
		errs = append(errs, err)
	}
	if s.Namespace != "" {
		if s.Namespace, err = cleanPath("namespace", s.Namespace); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Endpoint == "" {
		s.Endpoint = EndpointSign
	}
	switch s.Endpoint {
	case EndpointSign:
		if s.Role == "" {
			errs = append(errs, ca.SettingErrorf("role", "required with endpoint %q (the PKI role whose rules Vault applies)", EndpointSign))
		}
	case EndpointSignVerbatim:
	default:
		errs = append(errs, ca.SettingErrorf("endpoint", "%q: must be %q or %q%s", s.Endpoint, EndpointSign, EndpointSignVerbatim,
			didYouMean(s.Endpoint, EndpointSign, EndpointSignVerbatim)))
	}
	for _, f := range []struct{ key, v string }{{"role", s.Role}, {"issuer", s.Issuer}} {
		if f.v != "" && !pathSegment.MatchString(f.v) {
			errs = append(errs, ca.SettingErrorf(f.key, "%q: use only letters, digits and _ . @ -", f.v))
		}
	}
	errs = append(errs, ca.WithinSetting("auth", checkAuth(&s.Auth)), s.TLS.Check())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &s, nil
}

// checkAddress checks Vault's address: https, or http to this machine (a local Vault Agent or
// a test server), since the token travels in every request.
func checkAddress(raw string) error {
	if raw == "" {
		return ca.SettingErrorf("address", "required (e.g. https://vault.example.com:8200)")
	}
	u, err := ca.ParseURL(raw)
	if err != nil {
		return ca.SettingErrorf("address", "%w", err)
	}
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
	switch {
	case u.User != nil:
		return ca.SettingErrorf("address", "must not carry credentials; the token comes from auth")
	case u.Host == "" || u.Hostname() == "":
		return ca.SettingErrorf("address", "%q: no host", shown)
	case u.RawQuery != "" || u.Fragment != "":
		return ca.SettingErrorf("address", "%q: must not have a query or fragment", shown)
	case u.Path != "" && u.Path != "/":
		return ca.SettingErrorf("address", "%q: a path is not supported; Vault serves its API at /v1/ on the host (put the mount in mount)", shown)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !cleartext.LoopbackHost(u.Hostname()) {
			return ca.SettingErrorf("address", "%q: http is allowed only to a loopback address (the Vault token would travel in clear); use https", shown)
		}
	default:
		return ca.SettingErrorf("address", "%q: the scheme must be https", shown)
	}
	return nil
}

// cleanPath trims the slashes around a mount or namespace path and checks every segment.
func cleanPath(key, p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", ca.SettingErrorf(key, "must not be empty")
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." || !pathSegment.MatchString(seg) {
			return "", ca.SettingErrorf(key, "%q: a path of names made of letters, digits and _ . @ -, separated by /", p)
		}
	}
	return p, nil
}

// signPath is the path the connection signs with, below /v1/.
func signPath(s *settings) string {
	base := s.Mount
	if s.Issuer != "" {
		base = path.Join(base, "issuer", s.Issuer)
	}
	if s.Endpoint == EndpointSignVerbatim {
		if s.Role == "" {
			return path.Join(base, "sign-verbatim")
		}
		return path.Join(base, "sign-verbatim", s.Role)
	}
	return path.Join(base, "sign", s.Role)
}

// label names the connector in messages.
func (c *Connector) label() string {
	if c.name == "" {
		return "vault"
	}
	return fmt.Sprintf("vault %s", c.name)
}
