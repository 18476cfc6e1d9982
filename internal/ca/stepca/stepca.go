// Package stepca connects the adapter to smallstep's step-ca through a JWK provisioner.
//
// For every Issue call the connector signs a fresh one-time token (OTT) with the provisioner's
// private key and posts the device's CSR with it to step-ca's `POST /1.0/sign`, the same exchange
// `step ca certificate` performs. step-ca checks the token, applies the provisioner's claims,
// template and policy, and signs; the adapter never holds a device key and step-ca never sees
// more than the CSR.
//
// It registers the connector type "stepca". Settings (under caConnections.<name>):
//
//	url                      https://host:port of the CA
//	rootFingerprint          SHA-256 of the root certificate, hex (step certificate fingerprint)
//	provisioner              name of the JWK (or X5C) provisioner the adapter uses
//	provisionerPasswordFile  file with the password of the provisioner's encrypted key, or
//	provisionerKeyFile       file with the provisioner's private JWK, already decrypted, or
//	x5cCertFile, x5cKeyFile  for an X5C provisioner: a certificate (and its intermediates) that
//	                         chains to the provisioner's roots, and its PEM key
//	tls                      caFile (instead of rootFingerprint), certFile/keyFile, serverName
//
// Nothing is fetched at construction, so the adapter starts while the CA is down. The first
// Issue or Ping bootstraps like `step ca bootstrap`: it fetches the root by its fingerprint over
// an unverified TLS connection, checks the fingerprint, pins the root for every later connection,
// then reads the provisioner from `GET /provisioners` and decrypts its key.
package stepca

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
	"github.com/certprov/certprov-adapter/internal/logging"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/retryafter"
)

// Type is the connector type name used in caConnections.<name>.type.
const Type = "stepca"

func init() {
	ca.RegisterNew(Type, New)
	ca.RegisterCheck(Type, Check)
}

// httpTimeout is a backstop for one HTTP exchange. The engine bounds each call with the
// connection's own caConnections.<name>.timeout through the context, which is normally shorter.
const httpTimeout = 2 * time.Minute

// settings is the decoded caConnections.<name> block.
type settings struct {
	URL                     string        `mapstructure:"url"`
	RootFingerprint         string        `mapstructure:"rootFingerprint"`
	Provisioner             string        `mapstructure:"provisioner"`
	ProvisionerPasswordFile string        `mapstructure:"provisionerPasswordFile"`
	ProvisionerKeyFile      string        `mapstructure:"provisionerKeyFile"`
	X5CCertFile             string        `mapstructure:"x5cCertFile"`
	X5CKeyFile              string        `mapstructure:"x5cKeyFile"`
	TLS                     catls.Options `mapstructure:"tls"`
}

// Connector issues certificates from one step-ca through one JWK provisioner. It is safe for
// concurrent use.
type Connector struct {
	name        string
	log         *zap.Logger
	base        *url.URL // scheme and host of the CA, no path
	audience    string   // the sign token's aud: https://HOST:PORT/1.0/sign
	revokeAud   string   // the revoke token's aud: https://HOST:PORT/1.0/revoke
	fingerprint string   // lower-case hex SHA-256 of the root; "" when only tls.caFile is set
	provisioner string
	password    logging.Secret   // from provisionerPasswordFile; empty with provisionerKeyFile
	fileKey     *jose.JSONWebKey // from provisionerKeyFile; nil with provisionerPasswordFile
	x5c         *tls.Certificate // from x5cCertFile and x5cKeyFile: an X5C provisioner's credential
	tlsConfig   *tls.Config      // from the tls block; the pinned root is added at bootstrap
	now         func() time.Time

	// bootLock admits one bootstrap at a time while letting waiters give up with their context.
	bootLock chan struct{}
	sess     atomic.Pointer[session]
}

var (
	_ ca.Connector = (*Connector)(nil)
	_ ca.Pinger    = (*Connector)(nil)
	_ ca.Revoker   = (*Connector)(nil)

	_ ca.CertificateHolder = (*Connector)(nil)
)

// New builds the connector from its settings. It reads the local files (password, key, TLS
// material) so that a wrong path or a malformed key stops the adapter at startup, but does not
// contact the CA: a CA that is down at startup only delays issuance.
func New(raw ca.Settings, env ca.Env) (*Connector, error) {
	s, err := decodeSettings(raw)
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
		provisioner: s.Provisioner,
		now:         time.Now,
		bootLock:    make(chan struct{}, 1),
	}
	c.base, c.audience, _ = parseURL(s.URL, s.TLS.ServerName) // checked by decodeSettings
	c.revokeAud = strings.TrimSuffix(c.audience, "/sign") + "/revoke"
	if s.RootFingerprint != "" {
		c.fingerprint, _ = normalizeFingerprint(s.RootFingerprint)
	}
	var errs []error
	switch {
	case s.ProvisionerPasswordFile != "":
		pw, err := readPassword(env.Path(s.ProvisionerPasswordFile))
		if err != nil {
			errs = append(errs, ca.SettingErrorf("provisionerPasswordFile", "%q: %w", s.ProvisionerPasswordFile, err))
		}
		c.password = logging.Secret(pw)
	case s.ProvisionerKeyFile != "":
		key, err := readJWK(env.Path(s.ProvisionerKeyFile))
		if err != nil {
			errs = append(errs, ca.SettingErrorf("provisionerKeyFile", "%q: %w", s.ProvisionerKeyFile, err))
		}
		c.fileKey = key
	case s.X5CCertFile != "":
		cred, err := readX5C(env.Path(s.X5CCertFile), env.Path(s.X5CKeyFile))
		if err != nil {
			errs = append(errs, ca.SettingErrorf("x5cCertFile", "%q with x5cKeyFile %q: %w", s.X5CCertFile, s.X5CKeyFile, err))
		}
		c.x5c = cred
		// step-ca finds an X5C provisioner by the audience's fragment, "x5c/<name>".
		for _, aud := range []*string{&c.audience, &c.revokeAud} {
			u, _ := url.Parse(*aud)
			u.Fragment = "x5c/" + s.Provisioner
			*aud = u.String()
		}
	}
	cfg, err := s.TLS.Config(env)
	if err != nil {
		errs = append(errs, err)
	}
	c.tlsConfig = cfg
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// Check validates settings without reading the provisioner or TLS files (ca.Check).
func Check(raw ca.Settings) error {
	_, err := decodeSettings(raw)
	return err
}

// decodeSettings decodes and checks the settings. It reads no file.
func decodeSettings(raw ca.Settings) (*settings, error) {
	var s settings
	if err := ca.Decode(raw, &s); err != nil {
		return nil, err
	}
	var errs []error
	if _, _, err := parseURL(s.URL, s.TLS.ServerName); err != nil {
		errs = append(errs, err)
	}
	if s.RootFingerprint != "" {
		if _, err := normalizeFingerprint(s.RootFingerprint); err != nil {
			errs = append(errs, err)
		}
	} else if s.TLS.CAFile == "" {
		errs = append(errs, ca.SettingErrorf("rootFingerprint", "required unless tls.caFile names the CA's root (get it with: step certificate fingerprint root_ca.crt)"))
	}
	if s.Provisioner == "" {
		errs = append(errs, ca.SettingErrorf("provisioner", "required (the name of a JWK or X5C provisioner on the CA)"))
	}
	if (s.X5CCertFile == "") != (s.X5CKeyFile == "") {
		errs = append(errs, ca.SettingErrorf("x5cCertFile", "x5cCertFile and x5cKeyFile: set both or neither"))
	}
	sources := 0
	for _, f := range []string{s.ProvisionerPasswordFile, s.ProvisionerKeyFile, s.X5CCertFile + s.X5CKeyFile} {
		if f != "" {
			sources++
		}
	}
	switch {
	case sources > 1:
		errs = append(errs, ca.SettingErrorf("provisionerPasswordFile", "provisionerPasswordFile, provisionerKeyFile and x5cCertFile/x5cKeyFile: set only one"))
	case sources == 0:
		errs = append(errs, ca.SettingErrorf("provisionerPasswordFile", "provisionerPasswordFile, provisionerKeyFile or x5cCertFile/x5cKeyFile: one is required (a JWK provisioner's key password or decrypted JWK, or an X5C provisioner's certificate and key)"))
	}
	errs = append(errs, s.TLS.Check())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &s, nil
}

// parseURL checks the CA URL and derives the token audience. step-ca compares audiences without
// the port, against the names in its own configuration, so the audience uses tls.serverName when
// the adapter reaches the CA under another name.
func parseURL(raw, serverName string) (*url.URL, string, error) {
	if raw == "" {
		return nil, "", ca.SettingErrorf("url", "required (e.g. https://ca.example.com:9000)")
	}
	u, err := ca.ParseURL(raw)
	if err != nil {
		return nil, "", ca.SettingErrorf("url", "%w", err)
	}
	switch {
	case u.User != nil:
		return nil, "", ca.SettingErrorf("url", "must not carry credentials; write only https://host:port")
	case u.Scheme != "https":
		return nil, "", ca.SettingErrorf("url", "%q: the scheme must be https (step-ca serves only TLS)", raw)
	case u.Host == "" || u.Hostname() == "":
		return nil, "", ca.SettingErrorf("url", "%q: no host", raw)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, "", ca.SettingErrorf("url", "must not have a query or fragment: write only https://host:port")
	case u.Path != "" && u.Path != "/":
		return nil, "", ca.SettingErrorf("url", "%q: a path is not supported; step-ca serves its API at /1.0/ on the host", raw)
	}
	base := &url.URL{Scheme: "https", Host: u.Host}
	aud := &url.URL{Scheme: "https", Host: u.Host, Path: "/1.0/sign"}
	if serverName != "" {
		aud.Host = serverName
		if port := u.Port(); port != "" {
			aud.Host = net.JoinHostPort(serverName, port)
		}
	}
	return base, aud.String(), nil
}

// normalizeFingerprint accepts the hex forms tools print (lower or upper case, with or without
// colons) and returns lower-case hex.
func normalizeFingerprint(raw string) (string, error) {
	fp := strings.ToLower(strings.NewReplacer(":", "", "-", "", " ", "").Replace(raw))
	b, err := hex.DecodeString(fp)
	if err != nil || len(b) != 32 {
		return "", ca.SettingErrorf("rootFingerprint", "%q: want the SHA-256 of the root certificate as 64 hex digits (step certificate fingerprint root_ca.crt)", raw)
	}
	return fp, nil
}

// readPassword reads a password file the way the step tools do: trailing white space (the
// newline an editor adds) is not part of the password.
func readPassword(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimRight(b, " \t\r\n")
	if len(b) == 0 {
		return nil, errors.New("the file is empty")
	}
	return b, nil
}

// readX5C reads an X5C provisioner credential: a PEM certificate (then its intermediates) and
// its PEM key, which must match. step-ca accepts only a certificate for clientAuth with
// digitalSignature, so any other is refused here, at startup.
func readX5C(certPath, keyPath string) (*tls.Certificate, error) {
	cred, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	leaf := cred.Leaf
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("certificate %q lacks keyUsage digitalSignature, which step-ca requires of an X5C token signer", leaf.Subject)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil, fmt.Errorf("certificate %q lacks extKeyUsage clientAuth, which step-ca requires of an X5C token signer", leaf.Subject)
	}
	return &cred, nil
}

// readJWK reads a private JWK (JSON) from a file.
func readJWK(path string) (*jose.JSONWebKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var k jose.JSONWebKey
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("not a JWK: %w (an encrypted key needs provisionerPasswordFile instead)", err)
	}
	if k.IsPublic() {
		return nil, errors.New("the JWK holds only a public key; the adapter needs the private key")
	}
	if _, err := signatureAlgorithm(&k); err != nil {
		return nil, err
	}
	return &k, nil
}

// Issue asks step-ca to sign the request's CSR, with a token made for this call alone.
func (c *Connector) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	if req == nil {
		return nil, ca.Permanentf("step-ca: no request")
	}
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("sign certificate for %s: %w", req.Key, err), 0)
	}
	csr := req.CSR
	if csr == nil {
		var err error
		if csr, err = x509.ParseCertificateRequest(req.CSRDER); err != nil {
			return nil, ca.Permanentf("sign certificate for %s: parse CSR: %w", req.Key, err)
		}
	}
	subject, sans, err := tokenNames(csr)
	if err != nil {
		return nil, ca.Permanentf("sign certificate for %s: %w", req.Key, err)
	}
	s, err := c.session(ctx)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", req.Key, err)
	}
	ott, err := s.token(c, c.audience, subject, sans)
	if err != nil {
		return nil, ca.Permanentf("sign certificate for %s: %w", req.Key, err)
	}
	body := signRequest{
		CSR: string(pemutil.EncodeCSR(csr.Raw)),
		OTT: ott,
	}
	validity := req.Validity
	if c.x5c != nil && validity > 0 {
		// step-ca refuses a certificate that outlives the X5C credential that asked for it.
		if left := c.x5c.Leaf.NotAfter.Sub(c.now()) - time.Minute; validity > left && left > 0 {
			c.log.Warn("step-ca: certificate lifetime shortened to what is left of the X5C credential; renew x5cCertFile",
				zap.String("connector", c.name), zap.String("key", req.Key), zap.Duration("requested", validity),
				zap.Duration("granted", left.Truncate(time.Second)), zap.Time("x5c_not_after", c.x5c.Leaf.NotAfter))
			validity = left.Truncate(time.Second)
		}
	}
	if validity > 0 {
		// A duration rather than a time: step-ca adds it to its own clock, so neither clock skew
		// nor latency can push a lifetime equal to the provisioner's maximum over it.
		body.NotAfter = validity.String()
	}
	var resp signResponse
	if err := c.call(ctx, s, http.MethodPost, "/1.0/sign", body, &resp, ott); err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", req.Key, err)
	}
	issued, err := resp.issued()
	if err != nil {
		return nil, ca.Permanentf("sign certificate for %s: step-ca answer: %w", req.Key, err)
	}
	issued.Roots = s.roots
	if !bytes.Equal(issued.Leaf.RawSubjectPublicKeyInfo, csr.RawSubjectPublicKeyInfo) {
		return nil, ca.Permanentf("sign certificate for %s: step-ca returned certificate %s for a different key than the CSR's",
			req.Key, issued.Leaf.SerialNumber.Text(16))
	}
	c.log.Info("step-ca issued certificate",
		zap.String("connector", c.name), zap.String("key", req.Key),
		zap.String("serial", issued.Leaf.SerialNumber.Text(16)), zap.Time("notAfter", issued.Leaf.NotAfter))
	return issued, nil
}

// tokenNames picks the token's subject and SANs from the CSR. step-ca refuses a CSR whose DNS,
// e-mail, IP or URI names differ from the token's, and a CN that is neither the subject nor a
// SAN, so the token states exactly what the CSR asks for.
func tokenNames(csr *x509.CertificateRequest) (string, []string, error) {
	var sans []string
	seen := map[string]bool{}
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			sans = append(sans, s)
		}
	}
	for _, n := range csr.DNSNames {
		add(n)
	}
	for _, n := range csr.EmailAddresses {
		add(n)
	}
	for _, ip := range csr.IPAddresses {
		add(ip.String())
	}
	for _, u := range csr.URIs {
		add(u.String())
	}
	subject := csr.Subject.CommonName
	if subject == "" && len(sans) > 0 {
		subject = sans[0]
	}
	if subject == "" {
		return "", nil, errors.New("the CSR has neither a common name nor a DNS, e-mail, IP or URI name for the step-ca token's subject")
	}
	return subject, sans, nil
}

// Ping checks that the CA answers /health over the pinned connection, which also proves the root
// fingerprint, the provisioner and its key (it bootstraps when needed).
func (c *Connector) Ping(ctx context.Context) error {
	s, err := c.session(ctx)
	if err != nil {
		return err // bootstrap errors name the CA already
	}
	var health struct {
		Status string `json:"status"`
	}
	if err := c.call(ctx, s, http.MethodGet, "/health", nil, &health, ""); err != nil {
		return fmt.Errorf("step-ca %s: health: %w", c.base, err)
	}
	if health.Status != "ok" {
		return ca.Retryable(fmt.Errorf("step-ca %s: health status %q, want \"ok\"", c.base, health.Status), 0)
	}
	return nil
}

// signRequest is the body of POST /1.0/sign.
type signRequest struct {
	CSR      string `json:"csr"`
	OTT      string `json:"ott"`
	NotAfter string `json:"notAfter,omitempty"`
}

// signResponse is step-ca's answer: the leaf, its issuer and the chain from the leaf up.
type signResponse struct {
	Crt       string   `json:"crt"`
	CA        string   `json:"ca"`
	CertChain []string `json:"certChain"`
}

func (r *signResponse) issued() (*ca.Issued, error) {
	pems := r.CertChain
	if len(pems) == 0 {
		pems = []string{r.Crt, r.CA}
	}
	var certs []*x509.Certificate
	for i, p := range pems {
		if p == "" {
			continue
		}
		block, _ := pem.Decode([]byte(p))
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("certificate %d of the chain is not a PEM certificate", i)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the chain: %w", i, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return &ca.Issued{Leaf: certs[0], Chain: certs[1:]}, nil
}

// call makes one JSON exchange with the CA through the session's pinned client and decodes a
// 2xx answer into out. Every other outcome becomes a classified error; secret (the token) is
// scrubbed from any text the CA sends back.
func (c *Connector) call(ctx context.Context, s *session, method, path string, in, out any, secret string) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return ca.Permanentf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base.JoinPath(path)
	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return ca.Permanentf("%s %s: %w", method, path, err)
	}
	hreq.Header.Set("Accept", "application/json")
	if in != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	// Only /1.0/sign makes the CA issue; the other calls are safe to repeat (a revocation
	// repeated is answered "already revoked", which Revoke takes as done).
	return do(s.client, hreq, method+" "+path, out, secret, path != "/1.0/sign")
}

// do sends hreq and decodes the JSON answer into out, classifying failures; what names the call
// in messages. A request that is not idempotent and failed after it reached the CA is not
// repeated: step-ca may have signed, and has no way to say so afterwards.
func do(client *http.Client, hreq *http.Request, what string, out any, secret string, idempotent bool) error {
	resp, delivered, err := catls.Do(client, hreq)
	if err != nil {
		if delivered && !idempotent && !errors.Is(err, context.Canceled) {
			return ca.Permanentf("%s: the request reached step-ca but its answer was lost (%v); "+
				"not asking again, since step-ca may have signed", what, err)
		}
		return transportError(what, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		if !idempotent && resp.StatusCode/100 == 2 {
			return ca.Permanentf("%s: reading the signed certificate: %v (step-ca signed it; not asking again)", what, err)
		}
		return ca.Retryable(fmt.Errorf("%s: read answer: %w", what, err), 0)
	}
	if !idempotent && ca.GatewayLost(resp.StatusCode) {
		return ca.Permanentf("%s: a gateway in front of step-ca answered HTTP %d (%s): it may have passed the request on "+
			"and lost step-ca's answer; not asking again, since step-ca may have signed", what, resp.StatusCode, caMessage(b, secret))
	}
	return decodeAnswer(what, resp, b, out, secret)
}

// decodeAnswer decodes the body b of a 2xx answer into out; any other answer becomes the
// classified error statusError makes of it.
func decodeAnswer(what string, resp *http.Response, b []byte, out any, secret string) error {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return statusError(what, resp, b, secret)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return ca.Permanentf("%s: the answer is not step-ca's JSON (is url the step-ca server?): %w", what, err)
	}
	return nil
}

// transportError classifies an error from the HTTP client. A server certificate that does not
// verify against the pinned root will not verify on the next try either; anything else
// (refused, reset, timed out, cancelled) is transient.
func transportError(what string, err error) error {
	err = catls.Cause(err)
	if catls.NotVerified(err) {
		return ca.Permanentf("%s: the CA's TLS certificate does not verify against the step-ca root (from rootFingerprint or tls.caFile; check those, url and tls.serverName): %w", what, err)
	}
	return ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
}

// stepError is the body of step-ca's error answers.
type stepError struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
}

// maxMessage bounds the CA's text inside an error: failure messages reach a user's device and
// are at most 500 bytes in all.
const maxMessage = 300

// httpError is a non-2xx answer, for callers that treat one status specially.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// statusError turns a non-2xx answer into an error that carries step-ca's own reason.
func statusError(what string, resp *http.Response, body []byte, secret string) error {
	msg := caMessage(body, secret)
	code := resp.StatusCode
	text := func(format string) *httpError {
		return &httpError{code: code, msg: fmt.Sprintf("%s: "+format, what, fmt.Sprintf("HTTP %d", code), msg)}
	}
	after := retryafter.FromHeader(resp.Header)
	switch {
	case code == http.StatusUnauthorized:
		return ca.Permanent(text("step-ca refused the provisioner token (%s): %s (check the provisioner's key, and the clocks of adapter and CA)"))
	case code == http.StatusForbidden:
		return ca.Permanent(text("step-ca refused the certificate (%s): %s"))
	case code == http.StatusBadRequest:
		return ca.Permanent(text("step-ca rejected the request (%s): %s"))
	case code == http.StatusTooManyRequests:
		return ca.Retryable(text("step-ca is rate limiting (%s): %s"), after)
	case code == http.StatusRequestTimeout:
		return ca.Retryable(text("step-ca timed out (%s): %s"), 0)
	case code >= 500:
		return ca.Retryable(text("step-ca failed (%s): %s"), after)
	case code >= 400:
		return ca.Permanent(text("step-ca answered %s: %s (is url the step-ca server?)"))
	default:
		return ca.Retryable(text("unexpected %s from step-ca: %s"), 0)
	}
}

// caMessage extracts step-ca's message (or the start of a non-JSON body, from a proxy), keeps it
// printable and short, and removes the token should the CA ever echo it.
func caMessage(body []byte, secret string) string {
	var se stepError
	msg := ""
	if json.Unmarshal(body, &se) == nil && se.Message != "" {
		msg = se.Message
	} else {
		msg = string(body)
	}
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, "[token]")
	}
	msg = ca.ServerText(msg, maxMessage)
	if msg == "" {
		msg = "no reason given"
	}
	return msg
}
