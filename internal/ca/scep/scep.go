// Package scep is the CA connector for SCEP servers (RFC 8894), Microsoft NDES among them.
//
// The device holds its private key, so the SCEP requester here is the adapter, not the device:
// the adapter owns an RSA key and a self-signed certificate (signerKeyFile, signerCertFile) with
// which it signs the PKCS#7 envelope around the device-signed CSR, and to which the server
// encrypts its answer. The challenge password, which SCEP expects inside the signed CSR, is
// handed to the engine before the device signs (ca.AttributeContributor).
//
// It registers the connector type "scep". Settings (under caConnections.<name>):
//
//	url                SCEP endpoint, e.g. https://ndes.example.com/certsrv/mscep/mscep.dll
//	tls                catls block (caFile, certFile, keyFile, serverName) for https
//	timeout            bound of one HTTP exchange, default 30s
//	challenge          static challenge password, or
//	challengeFile      file holding it (read for every request, so it can rotate), or
//	dynamicChallenge   NDES admin page fetched once per request:
//	                   {url, username, passwordFile, auth (basic, the default, or ntlm:
//	                   Windows authentication, IIS's default), tls (default: the tls block above),
//	                   insecureAllowCleartext (accept a plain-http url on a host that is not
//	                   loopback, which sends the account's password in clear; refused otherwise)}
//	signerKeyFile      adapter-owned RSA key (PEM); created with mode 0600 when absent
//	signerCertFile     its self-signed certificate (PEM); created when absent
//	caCertFingerprint  optional SHA-256 of the CA or RA certificate GetCACert must return
//	pollInterval       how long to wait before asking again about a PENDING request, default 1m
//	encryption         auto (default), aes256, aes128 or 3des
//	caIdentifier       optional CA name sent with GetCACaps/GetCACert (EJBCA and others)
//
// Relative paths resolve against the configuration file's directory. Exactly one of challenge,
// challengeFile and dynamicChallenge may be set; with none, the request carries no challenge.
package scep

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-ntlmssp"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
	"github.com/certprov/certprov-adapter/internal/cleartext"
	"github.com/certprov/certprov-adapter/internal/logging"
)

// Type is the connector type name used in caConnections.<name>.type.
const Type = "scep"

func init() {
	ca.RegisterNew(Type, New)
	ca.RegisterCheck(Type, Check)
}

// Check validates settings without reading the signer, challenge or TLS files (ca.Check).
func Check(raw ca.Settings) error {
	_, err := decodeSettings(raw)
	return err
}

// Defaults for optional settings.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultPollInterval = time.Minute
)

// serverInfoTTL is how long GetCACaps and GetCACert answers are reused: long enough to spare the
// server two round trips per device, short enough to follow a CA or RA certificate renewal.
const serverInfoTTL = time.Hour

// settings is the decoded caConnections.<name> block.
type settings struct {
	URL               string           `mapstructure:"url"`
	TLS               catls.Options    `mapstructure:"tls"`
	Timeout           time.Duration    `mapstructure:"timeout"`
	Challenge         logging.Secret   `mapstructure:"challenge"`
	ChallengeFile     string           `mapstructure:"challengeFile"`
	DynamicChallenge  *dynamicSettings `mapstructure:"dynamicChallenge"`
	SignerKeyFile     string           `mapstructure:"signerKeyFile"`
	SignerCertFile    string           `mapstructure:"signerCertFile"`
	CACertFingerprint string           `mapstructure:"caCertFingerprint"`
	PollInterval      time.Duration    `mapstructure:"pollInterval"`
	Encryption        string           `mapstructure:"encryption"`
	CAIdentifier      string           `mapstructure:"caIdentifier"`

	// dynamicCleartext is the exposure of dynamicChallenge.url that its opt-out accepted, for New
	// to log.
	dynamicCleartext *cleartext.Exposure
}

// Values of dynamicChallenge.auth.
const (
	// AuthBasic sends the account's credentials with HTTP Basic authentication.
	AuthBasic = "basic"
	// AuthNTLM authenticates with an NTLMv2 handshake (IIS's Windows authentication); the
	// password never travels, not even encoded.
	AuthNTLM = "ntlm"
)

// dynamicSettings is the dynamicChallenge block: where NDES hands out one-time passwords.
type dynamicSettings struct {
	URL          string         `mapstructure:"url"`
	Username     string         `mapstructure:"username"`
	PasswordFile string         `mapstructure:"passwordFile"`
	Auth         string         `mapstructure:"auth"` // AuthBasic (default) or AuthNTLM
	TLS          *catls.Options `mapstructure:"tls"`
	// InsecureAllowCleartext accepts a plain-http URL on a host that is not loopback.
	InsecureAllowCleartext bool `mapstructure:"insecureAllowCleartext"`
}

// dynamicChallengeRule: the admin page is fetched with the account's password in an
// Authorization header, and answers with a password that enrolls a certificate.
func dynamicChallengeRule() cleartext.Rule {
	return cleartext.Rule{
		Setting: "dynamicChallenge.url",
		OptOut:  "dynamicChallenge.insecureAllowCleartext",
		Secret:  "the NDES account's password (HTTP basic authentication) and the challenge passwords",
	}
}

func decodeSettings(raw ca.Settings) (*settings, error) {
	var s settings
	if err := ca.Decode(raw, &s); err != nil {
		return nil, err
	}
	var errs []error
	if s.URL == "" {
		errs = append(errs, ca.SettingErrorf("url", "required"))
	} else if err := checkHTTPURL(s.URL); err != nil {
		errs = append(errs, ca.SettingErrorf("url", "%w", err))
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	} else if s.Timeout < 0 {
		errs = append(errs, ca.SettingErrorf("timeout", "%v: must be positive", s.Timeout))
	}
	if s.PollInterval == 0 {
		s.PollInterval = DefaultPollInterval
	} else if s.PollInterval < 0 {
		errs = append(errs, ca.SettingErrorf("pollInterval", "%v: must be positive", s.PollInterval))
	}
	n := 0
	if s.Challenge != "" {
		n++
	}
	if s.ChallengeFile != "" {
		n++
	}
	if s.DynamicChallenge != nil {
		n++
		d := s.DynamicChallenge
		if d.URL == "" {
			errs = append(errs, ca.SettingErrorf("dynamicChallenge.url", "required"))
		} else if err := checkHTTPURL(d.URL); err != nil {
			errs = append(errs, ca.SettingErrorf("dynamicChallenge.url", "%w", err))
		} else if warning, err := dynamicChallengeRule().URL(d.URL, d.InsecureAllowCleartext); err != nil {
			errs = append(errs, ca.SettingProblem("dynamicChallenge.url", err))
		} else {
			s.dynamicCleartext = warning
		}
		if d.Username == "" {
			errs = append(errs, ca.SettingErrorf("dynamicChallenge.username", "required (NDES admin pages need an account)"))
		}
		if d.PasswordFile == "" {
			errs = append(errs, ca.SettingErrorf("dynamicChallenge.passwordFile", "required"))
		}
		switch d.Auth {
		case "":
			d.Auth = AuthBasic
		case AuthBasic, AuthNTLM:
		default:
			errs = append(errs, ca.SettingErrorf("dynamicChallenge.auth", "%q: want %s or %s (Windows authentication)", d.Auth, AuthBasic, AuthNTLM))
		}
	}
	if n > 1 {
		errs = append(errs, ca.SettingErrorf("challenge", "challenge, challengeFile and dynamicChallenge: set at most one"))
	}
	if s.SignerKeyFile == "" {
		errs = append(errs, ca.SettingErrorf("signerKeyFile", "required (it is created when absent)"))
	}
	if s.SignerCertFile == "" {
		errs = append(errs, ca.SettingErrorf("signerCertFile", "required (it is created when absent)"))
	}
	if s.CACertFingerprint != "" {
		if _, err := parseFingerprint(s.CACertFingerprint); err != nil {
			errs = append(errs, ca.SettingErrorf("caCertFingerprint", "%q: %w", s.CACertFingerprint, err))
		}
	}
	if _, err := parseCipher(s.Encryption); err != nil {
		errs = append(errs, ca.SettingErrorf("encryption", "%q: %w", s.Encryption, err))
	}
	errs = append(errs, s.TLS.Check())
	if d := s.DynamicChallenge; d != nil && d.TLS != nil {
		errs = append(errs, ca.WithinSetting("dynamicChallenge", d.TLS.Check()))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &s, nil
}

// checkHTTPURL accepts an http or https URL without credentials. Its messages quote the URL only
// once it is known to carry none.
func checkHTTPURL(raw string) error {
	u, err := ca.ParseURL(raw)
	if err != nil {
		return err
	}
	switch {
	case u.User != nil:
		return errors.New("must not carry credentials")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: must be an http or https URL", raw)
	case u.Host == "":
		return fmt.Errorf("%q: has no host", raw)
	}
	return nil
}

// parseFingerprint accepts a SHA-256 fingerprint as hex, with or without colons or spaces, in
// either case (the forms openssl, certutil and browsers print).
func parseFingerprint(s string) ([]byte, error) {
	clean := strings.NewReplacer(":", "", " ", "", "-", "").Replace(strings.TrimSpace(s))
	clean = strings.TrimPrefix(strings.ToLower(clean), "sha256/")
	b, err := hex.DecodeString(clean)
	if err != nil {
		return nil, errors.New("not hexadecimal")
	}
	if len(b) != 32 {
		return nil, fmt.Errorf("%d bytes, a SHA-256 fingerprint has 32", len(b))
	}
	return b, nil
}

// Connector talks to one SCEP server. It is safe for concurrent use.
type Connector struct {
	name         string
	log          *zap.Logger
	url          *url.URL
	client       *http.Client
	challenge    challengeSource // nil: requests carry no challenge password
	signerKey    *rsa.PrivateKey
	signerCert   *x509.Certificate
	pin          []byte // SHA-256 of a GetCACert certificate, or nil
	pollInterval time.Duration
	encryption   cipherAlg
	caIdentifier string
	now          func() time.Time

	mu    sync.Mutex
	info  *serverInfo     // cached GetCACaps and GetCACert answers
	doubt map[string]bool // request keys whose PKCSReq may have arrived unanswered
}

var (
	_ ca.Connector            = (*Connector)(nil)
	_ ca.Pinger               = (*Connector)(nil)
	_ ca.AttributeContributor = (*Connector)(nil)
	_ ca.CertificateHolder    = (*Connector)(nil)
)

// New builds the connector. It loads (or creates) the signer key and certificate and checks the
// settings, but does not contact the server: a CA that is down at startup must not keep the
// adapter from serving its other CA connections. Use Ping for that.
func New(raw ca.Settings, env ca.Env) (*Connector, error) {
	s, err := decodeSettings(raw)
	if err != nil {
		return nil, err
	}
	log := env.Logger
	if log == nil {
		log = zap.NewNop()
	}
	u, _ := url.Parse(s.URL) // checked by decodeSettings
	client, err := s.TLS.HTTPClient(env, s.Timeout)
	if err != nil {
		return nil, err
	}
	s.dynamicCleartext.Warn(log)
	if u.Scheme == "http" && s.CACertFingerprint == "" {
		log.Warn("SCEP over plain http without caCertFingerprint: the CA certificate is not authenticated",
			zap.String("url", s.URL))
	}
	key, cert, err := loadOrCreateSigner(env.Path(s.SignerKeyFile), env.Path(s.SignerCertFile), env.Name, log)
	if err != nil {
		return nil, err
	}
	c := &Connector{
		name:         env.Name,
		log:          log,
		url:          u,
		client:       client,
		signerKey:    key,
		signerCert:   cert,
		pollInterval: s.PollInterval,
		caIdentifier: s.CAIdentifier,
		now:          time.Now,
	}
	c.encryption, _ = parseCipher(s.Encryption)
	if s.CACertFingerprint != "" {
		c.pin, _ = parseFingerprint(s.CACertFingerprint)
	}
	switch {
	case s.Challenge != "":
		c.challenge = staticChallenge(s.Challenge)
	case s.ChallengeFile != "":
		c.challenge = fileChallenge{path: env.Path(s.ChallengeFile), setting: s.ChallengeFile}
	case s.DynamicChallenge != nil:
		d := s.DynamicChallenge
		tlsOpts := s.TLS
		if d.TLS != nil {
			tlsOpts = *d.TLS
		}
		adminClient, err := tlsOpts.HTTPClient(env, s.Timeout)
		if err != nil {
			return nil, ca.WithinSetting("dynamicChallenge", err)
		}
		// Never follow a redirect with the credentials to another host; NDES does not redirect.
		adminClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		if d.Auth == AuthNTLM {
			// The negotiator turns the request's basic credentials into an NTLMv2 handshake on
			// one kept-alive connection, and never sends them as Basic.
			adminClient.Transport = ntlmssp.Negotiator{RoundTripper: adminClient.Transport}
		}
		c.challenge = &ndesChallenge{
			url:          d.URL,
			username:     d.Username,
			passwordFile: env.Path(d.PasswordFile),
			auth:         d.Auth,
			client:       adminClient,
		}
	}
	return c, nil
}

// SignerCertificate is the adapter's own SCEP requester certificate, for operators who register
// it with their server.
func (c *Connector) SignerCertificate() *x509.Certificate { return c.signerCert }
