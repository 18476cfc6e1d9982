// Package webhook is the CA connector for in-house CAs: it posts each signed request, as JSON, to
// an HTTPS service the company writes itself, following the versioned contract in
// docs/ca-webhook.md ("certprov.webhook/v1"). Whatever CA sits behind that service, the adapter
// needs no code of its own for it.
//
// It registers the connector type "webhook". Settings (under caConnections.<name>):
//
//	url             https URL every call is POSTed to (http only to a loopback address)
//	tls             catls.Options: caFile, certFile/keyFile for mutual TLS, serverName
//	hmacSecretFile  optional: sign every body with HMAC-SHA256 (X-Certprov-Signature)
//	headers         optional static headers, e.g. {X-Tenant: corp}
//	headerFiles     optional headers whose values are read from files, e.g. {X-Api-Key: /run/secrets/key}
//	caCertsFile     optional PEM trust anchors the issued certificates must chain to
//
// The connection's own `timeout` key (read by the adapter) bounds every call; header values and
// the HMAC secret are never logged nor put in error messages.
package webhook

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
	"github.com/certprov/certprov-adapter/internal/cleartext"
	"github.com/certprov/certprov-adapter/internal/logging"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Type is the connector type name used in caConnections.<name>.type.
const Type = "webhook"

func init() {
	ca.RegisterNew(Type, New)
	ca.RegisterCheck(Type, Check)
}

// Check validates settings without reading the secret, header or TLS files (ca.Check): the URL,
// the header names, the static header values and the tls block.
func Check(raw ca.Settings) error {
	var s settings
	if err := ca.Decode(raw, &s); err != nil {
		return err
	}
	_, _, urlErr := checkURL(s.URL)
	_, headerErr := readHeaders(s.Headers, s.HeaderFiles, nil)
	return errors.Join(urlErr, headerErr, s.TLS.Check())
}

const (
	// DefaultTimeout bounds a call whose context has no deadline. The engine and
	// `validate --check-connections` always set one from caConnections.<name>.timeout.
	DefaultTimeout = 30 * time.Second
	// MinSecretLen refuses HMAC secrets short enough to guess ("secret", "changeme").
	MinSecretLen = 16
)

// reservedHeaders are set by the connector itself; configuring them would break the contract.
var reservedHeaders = map[string]bool{
	"Content-Type":                           true,
	"Content-Length":                         true,
	"Transfer-Encoding":                      true,
	"Connection":                             true,
	"Host":                                   true,
	http.CanonicalHeaderKey(SignatureHeader): true,
	http.CanonicalHeaderKey(RequestIDHeader): true,
}

// settings is the decoded caConnections.<name> block.
type settings struct {
	URL            string            `mapstructure:"url"`
	TLS            catls.Options     `mapstructure:"tls"`
	HMACSecretFile string            `mapstructure:"hmacSecretFile"`
	Headers        map[string]string `mapstructure:"headers"`
	HeaderFiles    map[string]string `mapstructure:"headerFiles"`
	CACertsFile    string            `mapstructure:"caCertsFile"`
}

// header is one configured extra header. Its value may be a credential, so it stays a Secret.
type header struct {
	name  string
	value logging.Secret
}

// Connector posts requests to a webhook CA. It is immutable after New and safe for concurrent use.
type Connector struct {
	name      string
	log       *zap.Logger
	url       string // as configured: what is requested
	display   string // scheme://host/path: what messages show (a query may carry a key)
	client    *http.Client
	secret    logging.Secret // HMAC key; empty when requests are not signed
	headers   []header
	roots     *x509.CertPool // from caCertsFile; nil when the service's CA is not configured
	rootCerts []*x509.Certificate
	now       func() time.Time
}

var (
	_ ca.Connector = (*Connector)(nil)
	_ ca.Pinger    = (*Connector)(nil)
	_ ca.Recoverer = (*Connector)(nil)
	_ ca.Revoker   = (*Connector)(nil)

	_ ca.CertificateHolder = (*Connector)(nil)
)

// New builds the connector from its settings. It reads the TLS files, the HMAC secret and the
// header files once, so that a wrong path or a bad value shows at startup, not on the first device.
func New(raw ca.Settings, env ca.Env) (*Connector, error) {
	var s settings
	if err := ca.Decode(raw, &s); err != nil {
		return nil, err
	}
	var errs []error
	u, display, err := checkURL(s.URL)
	if err != nil {
		errs = append(errs, err)
	}
	client, err := s.TLS.HTTPClient(env, 0) // deadlines come from the context of each call
	if err != nil {
		errs = append(errs, err)
	}
	var secret logging.Secret
	if s.HMACSecretFile != "" {
		if secret, err = readSecret(env.Path(s.HMACSecretFile)); err != nil {
			errs = append(errs, ca.SettingErrorf("hmacSecretFile", "%q: %w", s.HMACSecretFile, err))
		}
	}
	headers, err := readHeaders(s.Headers, s.HeaderFiles, func(path string) (string, error) {
		b, err := os.ReadFile(env.Path(path))
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	var roots *x509.CertPool
	var rootCerts []*x509.Certificate
	if s.CACertsFile != "" {
		certs, err := pemutil.ReadCertificates(env.Path(s.CACertsFile))
		if err != nil {
			errs = append(errs, ca.SettingErrorf("caCertsFile", "%q: %w", s.CACertsFile, err))
		} else {
			roots, rootCerts = x509.NewCertPool(), certs
			for _, c := range certs {
				roots.AddCert(c)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// A redirected POST becomes a GET without a body, and our headers would follow it to wherever
	// it points: refuse redirects and say which URL to configure instead.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	// HTTP/1.1 only: over HTTP/2 a refused client certificate surfaces as "client conn could not
	// be established", without the TLS alert that says why, and one request per certificate
	// gains nothing from multiplexing.
	if tr, ok := client.Transport.(*http.Transport); ok {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetHTTP1(true)
	}
	log := env.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Connector{
		name:      env.Name,
		log:       log,
		url:       u.String(),
		display:   display,
		client:    client,
		secret:    secret,
		headers:   headers,
		roots:     roots,
		rootCerts: rootCerts,
		now:       time.Now,
	}, nil
}

// checkURL accepts https URLs, and http ones to a loopback address (a sidecar on the same host).
// Credentials in the URL are refused: they belong in headerFiles, where they are not printed.
// Messages show the URL without its query, which may carry a key.
func checkURL(raw string) (*url.URL, string, error) {
	if raw == "" {
		return nil, "", ca.SettingErrorf("url", "required")
	}
	u, err := ca.ParseURL(raw)
	if err != nil {
		return nil, "", ca.SettingErrorf("url", "%w", err)
	}
	if u.User != nil {
		return nil, "", ca.SettingErrorf("url", "must not carry credentials (user:password@); use headerFiles")
	}
	display := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	if u.Host == "" {
		return nil, "", ca.SettingErrorf("url", "%q: no host", display)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !cleartext.LoopbackHost(u.Hostname()) {
			return nil, "", ca.SettingErrorf("url", "%q: http is allowed only to a loopback address; use https", display)
		}
	default:
		return nil, "", ca.SettingErrorf("url", "%q: scheme must be https", display)
	}
	if u.Fragment != "" {
		return nil, "", ca.SettingErrorf("url", "%q: must not have a #fragment", display)
	}
	return u, display, nil
}

// readSecret reads a file whose content, without surrounding whitespace (editors add a final
// newline), is a secret.
func readSecret(path string) (logging.Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if len(s) < MinSecretLen {
		return "", fmt.Errorf("the secret is %d bytes; use at least %d random bytes (e.g. openssl rand -hex 32)", len(s), MinSecretLen)
	}
	return logging.Secret(s), nil
}

// readHeaders validates the static headers and reads the file-backed ones with read. Messages
// name the header and the file, never the value. With read nil, files are not read and only
// their names are checked (Check).
func readHeaders(static, files map[string]string, read func(path string) (string, error)) ([]header, error) {
	var (
		out  []header
		errs []error
		seen = map[string]string{} // canonical name -> settings key that set it
	)
	add := func(key, name string, value func() (string, error)) {
		canon := http.CanonicalHeaderKey(name)
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			errs = append(errs, ca.SettingErrorf(key+"."+name, "not a valid header name"))
			return
		case reservedHeaders[canon]:
			errs = append(errs, ca.SettingErrorf(key+"."+name, "set by the connector itself; remove it"))
			return
		case seen[canon] != "":
			errs = append(errs, ca.SettingErrorf(key+"."+name, "also set in %s", seen[canon]))
			return
		}
		seen[canon] = key
		v, err := value()
		if err != nil {
			errs = append(errs, ca.SettingErrorf(key+"."+name, "%w", err))
			return
		}
		if v == "" {
			errs = append(errs, ca.SettingErrorf(key+"."+name, "empty value"))
			return
		}
		if !httpguts.ValidHeaderFieldValue(v) {
			errs = append(errs, ca.SettingErrorf(key+"."+name, "the value is not a valid header value (control characters)"))
			return
		}
		out = append(out, header{name: canon, value: logging.Secret(v)})
	}
	for _, name := range slices.Sorted(maps.Keys(static)) {
		add("headers", name, func() (string, error) { return static[name], nil })
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		path := files[name]
		add("headerFiles", name, func() (string, error) {
			switch {
			case path == "":
				return "", errors.New("no file named")
			case read == nil:
				return "unread", nil // a placeholder that passes the value checks
			}
			return read(path)
		})
	}
	return out, errors.Join(errs...)
}

// String names the connector without any of its secrets.
func (c *Connector) String() string { return "webhook " + c.name + " (" + c.display + ")" }
