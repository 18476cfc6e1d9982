package est

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
	"github.com/certprov/certprov-adapter/internal/retryafter"
)

// maxBody bounds what the adapter reads from the server: a certificate chain is a few KiB.
const maxBody = 1 << 20

// maxServerText bounds the part of a server's error text quoted in a failure message (the
// engine keeps whole messages under 500 bytes).
const maxServerText = 160

// endpoint returns the URL of an EST operation.
func (c *Connector) endpoint(op string) string { return c.base + "/" + op }

// fetchCACerts reads /cacerts (RFC 7030 4.1).
func (c *Connector) fetchCACerts(ctx context.Context) ([]*x509.Certificate, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	u := c.endpoint("cacerts")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, ca.Permanentf("EST cacerts %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/pkcs7-mime")
	resp, err := c.do(req, true)
	if err != nil {
		return nil, err
	}
	if resp.status != http.StatusOK {
		return nil, statusError(u, resp, false, c.hasCredentials())
	}
	certs, err := decodeCerts(resp.body)
	if err != nil {
		// A proxy or a wrong url answering 200 with a web page: retrying will not help.
		return nil, ca.Permanentf("EST cacerts %s: %w", u, err)
	}
	if len(certs) == 0 {
		return nil, ca.Permanentf("EST cacerts %s: the answer holds no certificate", u)
	}
	return certs, nil
}

// simpleEnroll posts the CSR to /simpleenroll (RFC 7030 4.2.1) and returns the certificates of a
// 200 answer.
func (c *Connector) simpleEnroll(ctx context.Context, csrDER []byte) ([]*x509.Certificate, error) {
	u := c.endpoint("simpleenroll")
	body := base64.StdEncoding.EncodeToString(csrDER)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return nil, ca.Permanentf("EST simpleenroll %s: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/pkcs10")
	req.Header.Set("Content-Transfer-Encoding", "base64")
	req.Header.Set("Accept", "application/pkcs7-mime")
	resp, err := c.do(req, false)
	if err != nil {
		return nil, err
	}
	switch resp.status {
	case http.StatusOK:
	case http.StatusAccepted:
		// RFC 7030 4.2.3: the request is being processed; ask again with the same CSR.
		return nil, &ca.PendingError{
			RetryAfter: retryafter.Parse(resp.header.Get("Retry-After"), time.Now()),
			Reason:     "the EST server accepted the request for manual or deferred issuance (HTTP 202)",
		}
	default:
		return nil, statusError(u, resp, true, c.hasCredentials())
	}
	certs, err := decodeCerts(resp.body)
	if err != nil {
		return nil, ca.Permanentf("EST simpleenroll %s: %w", u, err)
	}
	return certs, nil
}

// response is a server answer read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends req with the configured credentials and reads the answer; the error it returns is
// classified. idempotent says whether a request the server may have received can be repeated.
func (c *Connector) do(req *http.Request, idempotent bool) (*response, error) {
	if c.username != "" {
		req.SetBasicAuth(c.username, c.password.Reveal())
	}
	op := "EST " + req.URL.Path[strings.LastIndexByte(req.URL.Path, '/')+1:] + " " + req.URL.String()
	client := c.client
	if !idempotent {
		client = c.enrollClient
	}
	resp, delivered, err := catls.Do(client, req)
	if err != nil {
		return nil, transportError(req.Context(), op, err, delivered && !idempotent, c.clientCert)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err == nil && len(body) > maxBody {
		err = fmt.Errorf("answer longer than %d bytes", maxBody)
	}
	if err != nil {
		// The status line arrived: for an enrollment, a 200 may mean a certificate was issued.
		if resp.StatusCode == http.StatusOK && !idempotent {
			return nil, ca.Permanentf("%s: reading the issued certificate: %w (the server issued it; not asking again)", op, err)
		}
		return nil, ca.Retryable(fmt.Errorf("%s: reading the answer (HTTP %d): %w", op, resp.StatusCode, err), 0)
	}
	if !idempotent && ca.GatewayLost(resp.StatusCode) {
		return nil, ca.Permanentf("%s: a gateway in front of the EST server answered HTTP %d %s%s: it may have passed the "+
			"enrollment on and lost the answer; it may have issued a certificate, so the adapter does not ask again",
			op, resp.StatusCode, http.StatusText(resp.StatusCode), quotedText(serverText(body)))
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// transportError classifies a failed exchange. received says that the whole request reached a
// server that may act on it: such a request is not repeated, because the CA may have issued.
// clientCert says whether the adapter has a TLS client certificate to offer.
func transportError(ctx context.Context, op string, err error, received, clientCert bool) error {
	if refused, code := clientCertRefused(err); refused {
		if !clientCert {
			return ca.Permanentf("%s: the server requires a TLS client certificate (%s); set tls.certFile and tls.keyFile", op, code)
		}
		// Go's TLS client sends no certificate at all when the server's list of acceptable CAs
		// does not name the configured one's issuer; the message covers both.
		return ca.Permanentf("%s: the server refused the adapter's TLS client certificate (%s); "+
			"check that tls.certFile is valid and issued by a CA the server accepts clients from", op, code)
	}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		return ca.Retryable(fmt.Errorf("%s: the server's TLS certificate is not trusted (check tls.caFile and tls.serverName): %w", op, verr.Err), 0)
	}
	if errors.Is(err, context.Canceled) {
		// Shutting down: the engine keeps the call in flight and resolves it on the next start.
		return ca.Retryable(fmt.Errorf("%s: %w", op, err), 0)
	}
	if received {
		return ca.Permanentf("%s: the server received the request but did not answer (%w); "+
			"it may have issued a certificate, so the adapter does not ask again", op, err)
	}
	if ctx.Err() != nil {
		return ca.Retryable(fmt.Errorf("%s: %w", op, ctx.Err()), 0)
	}
	return ca.Retryable(fmt.Errorf("%s: cannot reach the server: %w", op, unwrapURLError(err)), 0)
}

// unwrapURLError drops *url.Error's method and quoted URL, which the message names already.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

// TLS alerts with which a server refuses a client certificate (RFC 8446 6.2).
var clientCertAlerts = map[uint8]string{
	42:  "bad certificate",
	43:  "unsupported certificate",
	44:  "certificate revoked",
	45:  "certificate expired",
	46:  "certificate unknown",
	48:  "unknown certificate authority",
	49:  "access denied",
	116: "certificate required",
}

// clientCertRefused reports whether err is a TLS alert from the server refusing the client's
// certificate. crypto/tls reports received alerts as a *net.OpError "remote error" around an
// unexported uint8 type, so the code is read by kind.
func clientCertRefused(err error) (bool, string) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false, ""
	}
	v := reflect.ValueOf(op.Err)
	if v.Kind() != reflect.Uint8 {
		return false, ""
	}
	name, ok := clientCertAlerts[uint8(v.Uint())]
	return ok, "TLS alert " + name
}

// quotedText is ": text", or "" for none.
func quotedText(text string) string {
	if text == "" {
		return ""
	}
	return ": " + text
}

// hasCredentials says whether the adapter authenticates itself at all.
func (c *Connector) hasCredentials() bool { return c.username != "" || c.clientCert }

// statusError classifies an answer other than success. enrollment selects the wording for
// /simpleenroll; credentials says whether the adapter sent any.
func statusError(u string, resp *response, enrollment, credentials bool) error {
	op := "EST cacerts " + u
	if enrollment {
		op = "EST simpleenroll " + u
	}
	status := fmt.Sprintf("HTTP %d %s", resp.status, http.StatusText(resp.status))
	text := quotedText(serverText(resp.body))
	wait := retryafter.Parse(resp.header.Get("Retry-After"), time.Now())
	switch {
	case resp.status == http.StatusUnauthorized && !credentials:
		return ca.Permanentf("%s: the server requires authentication (%s%s); set username and passwordFile, or tls.certFile and tls.keyFile",
			op, status, text)
	case resp.status == http.StatusUnauthorized:
		return ca.Permanentf("%s: the server refused the adapter's credentials (%s%s); check username, passwordFile and tls.certFile",
			op, status, text)
	case resp.status == http.StatusRequestTimeout || resp.status == http.StatusTooManyRequests:
		return ca.Retryable(fmt.Errorf("%s: the server asks to try later (%s%s)", op, status, text), wait)
	case resp.status >= 500:
		return ca.Retryable(fmt.Errorf("%s: server error (%s%s)", op, status, text), wait)
	case resp.status >= 400:
		return ca.Permanentf("%s: the server rejected the request (%s%s)", op, status, text)
	case resp.status >= 300 && resp.status < 400:
		return ca.Permanentf("%s: the server redirects to %q (%s); set url to the final location",
			op, resp.header.Get("Location"), status)
	default:
		// Anything else in answer to an enrollment is ambiguous; not repeating it is the safe side.
		return ca.Permanentf("%s: unexpected answer (%s%s)", op, status, text)
	}
}

// serverText is the server's error text fit for a failure message: one line, printable, short.
func serverText(body []byte) string { return ca.ServerText(string(body), maxServerText) }

// decodeCerts reads a PKCS#7 certs-only structure from an EST answer. RFC 7030 asks for base64
// (with or without line breaks); RFC 8951 tells clients to accept it whatever the
// Content-Transfer-Encoding header says, and some servers send binary DER or PEM, so all three
// are accepted. BER (indefinite lengths, as some Java servers emit) is accepted too.
func decodeCerts(body []byte) ([]*x509.Certificate, error) {
	der, err := unarmor(body)
	if err != nil {
		return nil, err
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("the answer is not a PKCS#7 certs-only structure: %w", err)
	}
	return p7.Certificates, nil
}

// unarmor returns the DER (or BER) inside an answer body.
func unarmor(body []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, errors.New("the answer is empty")
	}
	if block, _ := pem.Decode(trimmed); block != nil {
		return block.Bytes, nil
	}
	clean := bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, trimmed)
	der, err := base64.StdEncoding.DecodeString(string(clean))
	if err == nil {
		return der, nil
	}
	if trimmed[0] == 0x30 { // a SEQUENCE: binary DER despite the RFC
		return body, nil
	}
	return nil, fmt.Errorf("the answer is neither base64 nor DER: %w", err)
}
