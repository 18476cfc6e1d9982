package vault

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/leafcheck"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// oidSubjectAltName is the subjectAltName extension, whose UPN otherNames crypto/x509 skips.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// Issue has Vault sign the request's CSR at the connection's sign or sign-verbatim path.
//
// Vault has no idempotency key. A sign request whose answer is lost after Vault received it is
// therefore not repeated: the error is permanent, so that the process fails rather than get a
// second certificate. Refusals (HTTP 4xx) are Vault's answer, so nothing was issued for them.
func (c *Connector) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	if req == nil {
		return nil, ca.Permanentf("%s: no request", c.label())
	}
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("%s: sign %s: %w", c.label(), req.Key, err), 0)
	}
	// Vault checks the CSR too, but a refusal named here is clearer.
	cr, err := req.CheckedCSR()
	if err != nil {
		return nil, fmt.Errorf("%s: sign %s: %w", c.label(), req.Key, err)
	}
	body, err := c.signBody(cr, req.Validity)
	if err != nil {
		return nil, ca.Permanentf("%s: sign %s: %w", c.label(), req.Key, err)
	}
	// The roots first: once Vault has signed, nothing may stand between the certificate and
	// the engine.
	roots, err := c.roots(ctx)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", req.Key, err)
	}
	what := "sign at " + c.signPath
	sec, ex, err := c.authenticated(ctx, func(ctx context.Context, cl *vaultapi.Client) (*vaultapi.Secret, error) {
		return cl.Logical().WriteWithContext(ctx, c.signPath, body)
	})
	if err != nil {
		if ex.delivered && statusOf(err) == 0 && !errors.Is(err, context.Canceled) {
			var uerr *url.Error
			if errors.As(err, &uerr) {
				err = uerr.Err // its text repeats the URL
			}
			return nil, ca.Permanentf("%s: %s for %s: the request reached Vault but its answer was lost (%v); "+
				"not asking again, since Vault may have signed and cannot say what it signed for a request", c.label(), what, req.Key, err)
		}
		if code := statusOf(err); ca.GatewayLost(code) {
			return nil, ca.Permanentf("%s: %s for %s: a gateway in front of Vault answered HTTP %d: it may have passed the request on "+
				"and lost Vault's answer; not asking again, since Vault may have signed and cannot say what it signed for a request",
				c.label(), what, req.Key, code)
		}
		return nil, c.callError(what+" for "+req.Key, err, ex)
	}
	issued, serial, err := signed(sec)
	if err != nil {
		return nil, ca.Permanentf("%s: %s for %s: Vault signed, but its answer cannot be used: %w (not asking again)", c.label(), what, req.Key, err)
	}
	if !bytes.Equal(issued.Leaf.RawSubjectPublicKeyInfo, cr.RawSubjectPublicKeyInfo) {
		return nil, ca.Permanentf("%s: %s for %s: Vault returned certificate %s for a different key than the CSR's", c.label(), what, req.Key, serial)
	}
	issued.Roots = c.checkedRoots(ctx, issued, roots)
	for _, w := range sec.Warnings {
		c.log.Warn("vault warning", zap.String("connector", c.name), zap.String("key", req.Key), zap.String("warning", vaultText([]string{w}, nil)))
	}
	c.log.Info("vault signed certificate", zap.String("connector", c.name), zap.String("key", req.Key),
		zap.String("path", c.signPath), zap.String("serial", serial), zap.Time("notAfter", issued.Leaf.NotAfter))
	return issued, nil
}

// signBody is the JSON body of the sign request. For sign, every name of the CSR is also sent as
// a parameter, so that a role with use_csr_common_name or use_csr_sans off still certifies what
// the device asked for, and the common name is not added to the SANs (exclude_cn_from_sans):
// the certificate names exactly what the request names. sign-verbatim takes all of it from the
// CSR.
func (c *Connector) signBody(cr *x509.CertificateRequest, validity time.Duration) (map[string]any, error) {
	body := map[string]any{
		"csr":    string(pemutil.EncodeCSR(cr.Raw)),
		"format": "pem",
	}
	if validity > 0 {
		// Seconds: Vault adds them to its own clock, and caps them at the role's max_ttl.
		body["ttl"] = fmt.Sprintf("%ds", int64(validity/time.Second))
	}
	if c.endpoint == EndpointSignVerbatim {
		return body, nil
	}
	if cn := cr.Subject.CommonName; cn != "" {
		body["common_name"] = cn
	}
	body["exclude_cn_from_sans"] = true
	alt := append(append([]string{}, cr.DNSNames...), cr.EmailAddresses...)
	if len(alt) > 0 {
		body["alt_names"] = strings.Join(alt, ",")
	}
	if len(cr.IPAddresses) > 0 {
		ips := make([]string, len(cr.IPAddresses))
		for i, ip := range cr.IPAddresses {
			ips[i] = ip.String()
		}
		body["ip_sans"] = strings.Join(ips, ",")
	}
	if len(cr.URIs) > 0 {
		uris := make([]string, len(cr.URIs))
		for i, u := range cr.URIs {
			uris[i] = u.String()
		}
		body["uri_sans"] = strings.Join(uris, ",")
	}
	upns, err := csrUPNs(cr)
	if err != nil {
		return nil, err
	}
	if len(upns) > 0 {
		other := make([]string, len(upns))
		for i, u := range upns {
			if strings.ContainsAny(u, ",;") {
				return nil, fmt.Errorf("UPN %q: Vault's other_sans cannot carry a comma or semicolon", u)
			}
			other[i] = csr.OIDUPN().String() + ";UTF8:" + u
		}
		body["other_sans"] = strings.Join(other, ",")
	}
	return body, nil
}

// csrUPNs reads the UPN otherNames of the CSR's subjectAltName extension.
func csrUPNs(cr *x509.CertificateRequest) ([]string, error) {
	for _, e := range cr.Extensions {
		if e.Id.Equal(oidSubjectAltName) {
			upns, err := csr.ParseUPNs(e.Value)
			if err != nil {
				return nil, fmt.Errorf("CSR subjectAltName: %w", err)
			}
			return upns, nil
		}
	}
	return nil, nil
}

// signed reads a sign answer: data.certificate, and data.ca_chain (or data.issuing_ca) as the
// chain.
func signed(sec *vaultapi.Secret) (*ca.Issued, string, error) {
	if sec == nil || sec.Data == nil {
		return nil, "", errors.New("the answer has no data")
	}
	leafPEM, _ := sec.Data["certificate"].(string)
	certs, err := pemutil.ParseCertificates([]byte(leafPEM))
	if err != nil || len(certs) == 0 {
		return nil, "", fmt.Errorf("data.certificate is not a PEM certificate (was format pem?): %v", err)
	}
	issued := &ca.Issued{Leaf: certs[0], Chain: certs[1:]}
	var chain []string
	switch v := sec.Data["ca_chain"].(type) {
	case []any:
		for _, p := range v {
			if s, ok := p.(string); ok {
				chain = append(chain, s)
			}
		}
	}
	if len(chain) == 0 {
		if s, ok := sec.Data["issuing_ca"].(string); ok && s != "" {
			chain = []string{s}
		}
	}
	for i, p := range chain {
		cs, err := pemutil.ParseCertificates([]byte(p))
		if err != nil {
			return nil, "", fmt.Errorf("data.ca_chain[%d]: %w", i, err)
		}
		issued.Chain = append(issued.Chain, cs...)
	}
	serial, _ := sec.Data["serial_number"].(string)
	if serial == "" {
		serial = colonHex(issued.Leaf.SerialNumber.Bytes())
	}
	return issued, serial, nil
}

// authenticated runs fn with the current token. When Vault refuses the token (HTTP 403) and a
// different one can be had (a new login, a rotated token file), fn runs once more with it: a
// 403 is an answer, so nothing was issued for the first call.
func (c *Connector) authenticated(ctx context.Context, fn func(context.Context, *vaultapi.Client) (*vaultapi.Secret, error)) (*vaultapi.Secret, exchange, error) {
	t, err := c.auth.current(ctx)
	if err != nil {
		return nil, exchange{}, authFailed{err}
	}
	sec, ex, err := send(ctx, c.base, t.value.Reveal(), fn)
	if statusOf(err) != 403 {
		return sec, ex, err
	}
	c.auth.refuse(t)
	fresh, ferr := c.auth.current(ctx)
	if ferr != nil || fresh.value == t.value {
		if ferr != nil {
			c.log.Warn("vault refused the token and no other could be had", zap.String("connector", c.name), zap.Error(ferr))
		}
		return sec, ex, err
	}
	c.log.Info("vault refused the token; retrying once with a new one", zap.String("connector", c.name))
	return send(ctx, c.base, fresh.value.Reveal(), fn)
}

// authFailed is an error in obtaining a token, classified already and not Vault's answer to
// the call.
type authFailed struct{ error }

func (e authFailed) Unwrap() error { return e.error }

// callError classifies the error of an authenticated call.
func (c *Connector) callError(what string, err error, ex exchange) error {
	var af authFailed
	if errors.As(err, &af) {
		return af.error
	}
	return classify(c.label(), what, err, ex.retryAfter)
}

// roots returns the trust anchors of the connection: caCertsFile's, or the issuer's chain read
// from Vault over the verified TLS connection (never from a sign answer, which cannot vouch
// for itself).
func (c *Connector) roots(ctx context.Context) (*x509.CertPool, error) {
	if c.pinned != nil {
		return c.pinned, nil
	}
	if ch := c.fetched.Load(); ch != nil {
		return ch.pool, nil
	}
	return c.fetchRoots(ctx, nil)
}

// checkedRoots returns roots if the issued certificate chains to them. Otherwise, unless they
// are pinned, it reads the issuer's chain again once (the issuer's root may have been rotated)
// and returns that; the engine's check then tells whether the certificate chains.
func (c *Connector) checkedRoots(ctx context.Context, issued *ca.Issued, roots *x509.CertPool) *x509.CertPool {
	if c.pinned != nil {
		return roots
	}
	if _, err := leafcheck.VerifyChain(issued.Leaf, issued.Chain, roots, issued.Leaf.NotBefore.Add(time.Second)); err == nil {
		return roots
	}
	fresh, err := c.fetchRoots(ctx, roots)
	if err != nil {
		c.log.Warn("vault: reading the issuer's chain again failed", zap.String("connector", c.name), zap.Error(err))
		return roots
	}
	return fresh
}

// fetchRoots reads the issuer's chain (GET <mount>/issuer/<ref>/json, Vault 1.11 and later,
// OpenBao) and keeps its self-signed certificates as roots, or its last certificate when the
// mount knows no root (an intermediate imported without it). stale is the pool the caller
// found wanting; when another call replaced it meanwhile, that one is returned.
func (c *Connector) fetchRoots(ctx context.Context, stale *x509.CertPool) (*x509.CertPool, error) {
	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()
	if ch := c.fetched.Load(); ch != nil && ch.pool != stale {
		return ch.pool, nil
	}
	ref := c.issuer
	if ref == "" {
		ref = "default"
	}
	p := c.mount + "/issuer/" + ref + "/json"
	what := "read the issuer's CA chain at " + p
	sec, ex, err := send(ctx, c.base, "", func(ctx context.Context, cl *vaultapi.Client) (*vaultapi.Secret, error) {
		return cl.Logical().ReadWithContext(ctx, p)
	})
	if err != nil {
		return nil, classify(c.label(), what, err, ex.retryAfter)
	}
	if sec == nil || sec.Data == nil {
		return nil, ca.Permanentf("%s: %s: not found (check mount, issuer and namespace; Vault before 1.11 lacks this path: set caCertsFile)", c.label(), what)
	}
	var pems []string
	if list, ok := sec.Data["ca_chain"].([]any); ok {
		for _, v := range list {
			if s, ok := v.(string); ok {
				pems = append(pems, s)
			}
		}
	}
	if len(pems) == 0 {
		if s, ok := sec.Data["certificate"].(string); ok {
			pems = []string{s}
		}
	}
	var certs []*x509.Certificate
	for i, s := range pems {
		cs, err := pemutil.ParseCertificates([]byte(s))
		if err != nil {
			return nil, ca.Permanentf("%s: %s: ca_chain[%d]: %w", c.label(), what, i, err)
		}
		certs = append(certs, cs...)
	}
	if len(certs) == 0 {
		return nil, ca.Permanentf("%s: %s: the issuer has no certificate", c.label(), what)
	}
	ch := &issuerChain{pool: x509.NewCertPool(), certs: certs}
	for _, cert := range certs {
		if bytes.Equal(cert.RawIssuer, cert.RawSubject) && cert.CheckSignatureFrom(cert) == nil {
			ch.roots = append(ch.roots, cert)
		}
	}
	if len(ch.roots) == 0 {
		ch.roots = certs[len(certs)-1:]
	}
	for _, r := range ch.roots {
		ch.pool.AddCert(r)
	}
	c.fetched.Store(ch)
	return ch.pool, nil
}

// colonHex writes a serial number the way Vault does: lower-case hex bytes joined by colons.
func colonHex(b []byte) string {
	if len(b) == 0 {
		return "00"
	}
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}
