package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/retryafter"
)

// Issue posts the signed request and turns the answer into a certificate or a classified error.
// It is safe to call again for the same req.Key: the contract makes requestId an idempotency
// key, so a retry after a lost answer gets the certificate already issued, not a second one.
func (c *Connector) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	if req == nil {
		return nil, ca.Permanentf("%s: no request", c.label())
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: issue %s: %w", c.label(), req.Key, err)
	}
	csr := req.CSR
	der := req.CSRDER
	switch {
	case csr == nil && len(der) == 0:
		return nil, ca.Permanentf("%s: issue %s: the request has no CSR", c.label(), req.Key)
	case csr == nil:
		var err error
		if csr, err = x509.ParseCertificateRequest(der); err != nil {
			return nil, ca.Permanentf("%s: issue %s: parse CSR: %w", c.label(), req.Key, err)
		}
	case len(der) == 0:
		der = csr.Raw
	}
	// The engine verified it already; checking again costs little and keeps a broken request
	// from reaching a CA that might not check proof of possession itself.
	if err := csr.CheckSignature(); err != nil {
		return nil, ca.Permanentf("%s: issue %s: CSR signature: %w", c.label(), req.Key, err)
	}
	if req.Process == nil {
		return nil, ca.Permanentf("%s: issue %s: the request has no process metadata", c.label(), req.Key)
	}
	body := issueRequest{
		APIVersion:      APIVersion,
		RequestID:       req.Key,
		CSR:             string(pemutil.EncodeCSR(der)),
		Profile:         req.ProfileName,
		TemplateName:    req.TemplateName,
		ValiditySeconds: int64(req.Validity / time.Second),
		Ticket:          req.Ticket,
		Process:         toWireProcess(req.Process),
	}
	r, err := c.post(ctx, "issue", req.Key, body)
	if err != nil {
		return nil, err
	}
	return c.issueAnswer(r, csr.RawSubjectPublicKeyInfo)
}

// issueAnswer turns the answer to an issue request for the key spki into a certificate or a
// classified error.
func (c *Connector) issueAnswer(r *reply, spki []byte) (*ca.Issued, error) {
	if r.code/100 == 2 && r.body != nil {
		switch r.body.Status {
		case StatusIssued:
			issued, err := c.certificates(r.body)
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(issued.Leaf.RawSubjectPublicKeyInfo, spki) {
				return nil, ca.Permanentf("%s returned a certificate for a different key than the CSR's (serial %s)",
					c.label(), issued.Leaf.SerialNumber.Text(16))
			}
			return issued, nil
		case StatusPending:
			return nil, c.pending(r)
		}
	}
	return nil, c.unexpected("an issue request", r)
}

// Recover asks the server, with a lookup request, what it issued for key. "notFound" and
// "pending" both mean that no certificate exists yet, so the engine may ask with Issue: the
// server's idempotency table turns that into the pending request's answer, not a second one.
func (c *Connector) Recover(ctx context.Context, key string) (*ca.Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: look up %s: %w", c.label(), key, err)
	}
	r, err := c.post(ctx, "lookup", key, lookupRequest{APIVersion: APIVersion, RequestID: key, Lookup: true})
	if err != nil {
		return nil, err
	}
	return c.lookupAnswer(r)
}

// lookupAnswer turns the answer to a lookup into the certificate issued, nil when there is none
// yet, or a classified error.
func (c *Connector) lookupAnswer(r *reply) (*ca.Issued, error) {
	if (r.code/100 == 2 || r.code == http.StatusNotFound) && r.body != nil {
		switch r.body.Status {
		case StatusIssued:
			// No CSR to compare with here: the engine checks the leaf against the device key.
			return c.certificates(r.body)
		case StatusNotFound, StatusPending:
			return nil, nil
		}
	}
	return nil, c.unexpected("a lookup", r)
}

// Ping posts a ping request: it travels the same URL, TLS, headers and signature as a real
// request, so a success means a real request would at least be understood.
func (c *Connector) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: ping: %w", c.label(), err)
	}
	r, err := c.post(ctx, "ping", "", pingRequest{APIVersion: APIVersion, Ping: true})
	if err != nil {
		return err
	}
	if r.code/100 == 2 && r.body != nil && r.body.Status == StatusOK {
		return nil
	}
	return c.unexpected("a ping", r)
}

// reply is an HTTP answer, read in full.
type reply struct {
	code       int
	retryAfter time.Duration // from the Retry-After header
	location   string        // of a redirect, for the message
	body       *response     // nil when the body is not a JSON object
	snippet    string        // the start of a body that is not JSON, cleaned, for messages
	jsonErr    error         // why the body is not a JSON answer
}

// post sends one request. Transport failures come back as retryable errors (wrapping the
// context's error when that was the cause); any HTTP answer comes back as a reply.
func (c *Connector) post(ctx context.Context, op, requestID string, v any) (*reply, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, ca.Permanentf("%s: encode %s request: %w", c.label(), op, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(payload))
	if err != nil {
		return nil, ca.Permanentf("%s: build %s request: %w", c.label(), op, err)
	}
	for _, h := range c.headers {
		hreq.Header.Set(h.name, h.value.Reveal())
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", "certprov-adapter webhook/v1")
	if requestID != "" {
		hreq.Header.Set(RequestIDHeader, requestID)
	}
	if c.secret != "" {
		hreq.Header.Set(SignatureHeader, signature([]byte(c.secret.Reveal()), c.now(), payload))
	}

	start := time.Now()
	resp, err := c.client.Do(hreq)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its text repeats the URL, query included
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, ca.Retryable(fmt.Errorf("%s: POST %s: no answer in time: %w", c.label(), c.display, err), 0)
		}
		return nil, ca.Retryable(fmt.Errorf("%s: POST %s: %w", c.label(), c.display, err), 0)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, ca.Retryable(fmt.Errorf("%s: read the HTTP %d answer: %w", c.label(), resp.StatusCode, err), 0)
	}
	if len(data) > maxResponseBytes {
		return nil, ca.Retryable(fmt.Errorf("%s: the HTTP %d answer is larger than %d bytes", c.label(), resp.StatusCode, maxResponseBytes), 0)
	}
	r := c.decodeReply(resp.StatusCode, resp.Header, data)
	status := ""
	if r.body != nil {
		status = c.clean(r.body.Status)
	}
	c.log.Debug("webhook call", zap.String("connector", c.name), zap.String("op", op), zap.String("request_id", requestID),
		zap.Int("http_status", r.code), zap.String("status", status), zap.Duration("took", time.Since(start)))
	return r, nil
}

// decodeReply reads an HTTP answer: status, retry hint, redirect target and the JSON body, or a
// cleaned snippet of a body that is not a JSON object.
func (c *Connector) decodeReply(code int, h http.Header, data []byte) *reply {
	r := &reply{
		code:       code,
		retryAfter: min(retryafter.Parse(h.Get("Retry-After"), c.now()), maxRetryAfter),
		location:   h.Get("Location"),
	}
	var body response
	switch err := json.Unmarshal(data, &body); {
	case err != nil:
		r.jsonErr = err
	case !bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")):
		r.jsonErr = errors.New("not a JSON object")
	default:
		r.body = &body
	}
	if r.body == nil {
		// Cleaned before it is cut, so that a cut cannot keep part of an echoed secret.
		r.snippet = c.cleanMax(string(data), 200)
	}
	return r
}

// pending turns a "pending" answer into the engine's PendingError.
func (c *Connector) pending(r *reply) error {
	if len(r.body.Ticket) > maxTicketBytes {
		return ca.Retryable(fmt.Errorf("%s: the pending ticket is %d bytes, more than the contract's %d",
			c.label(), len(r.body.Ticket), maxTicketBytes), 0)
	}
	reason := c.label() + " has not issued the certificate yet"
	if msg := c.clean(r.body.Message); msg != "" {
		reason = c.label() + ": " + msg
	}
	return &ca.PendingError{Ticket: r.body.Ticket, RetryAfter: r.hint(), Reason: reason}
}

// unexpected classifies every answer the operation did not accept: an "error" answer as the
// server says, otherwise by HTTP status (4xx permanent, 5xx and broken 2xx retryable).
func (c *Connector) unexpected(what string, r *reply) error {
	if r.body != nil && r.body.Status == StatusError {
		msg := c.clean(r.body.Message)
		if msg == "" {
			msg = "no message"
		}
		err := fmt.Errorf("%s: %s (HTTP %d)", c.label(), msg, r.code)
		retryable := retryableCode(r.code)
		if r.body.Retryable != nil {
			retryable = *r.body.Retryable
		}
		if retryable {
			return ca.Retryable(err, r.hint())
		}
		return ca.Permanent(err)
	}
	if r.code/100 == 3 {
		return ca.Permanentf("%s: answered with a redirect (HTTP %d to %s); set url to the address that answers",
			c.label(), r.code, displayLocation(r.location))
	}
	if r.code/100 == 2 {
		if r.body == nil {
			return ca.Retryable(fmt.Errorf("%s: answered HTTP %d with a body that is not a JSON answer (%v): %q",
				c.label(), r.code, r.jsonErr, r.snippet), r.hint())
		}
		return ca.Retryable(fmt.Errorf("%s: answered HTTP %d with status %q, which is not an answer to %s in %s",
			c.label(), r.code, c.clean(r.body.Status), what, APIVersion), r.hint())
	}
	detail := r.snippet
	if r.body != nil {
		if detail = c.clean(r.body.Message); detail == "" {
			detail = fmt.Sprintf("status %q", c.clean(r.body.Status))
		}
	}
	err := fmt.Errorf("%s: answered HTTP %d %s", c.label(), r.code, http.StatusText(r.code))
	if detail != "" {
		err = fmt.Errorf("%w: %s", err, detail)
	}
	if r.code/100 == 4 && !retryableCode(r.code) {
		return ca.Permanent(err)
	}
	return ca.Retryable(err, r.hint())
}

// retryableCode says whether an HTTP status means "try again later" when the body does not say.
func retryableCode(code int) bool {
	return code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests
}

// hint is the server's retry-after: the body's retryAfterSeconds, else the Retry-After header.
func (r *reply) hint() time.Duration {
	if r.body != nil && r.body.RetryAfterSeconds != nil && *r.body.RetryAfterSeconds > 0 {
		s := min(*r.body.RetryAfterSeconds, maxRetryAfter.Seconds())
		return time.Duration(s * float64(time.Second))
	}
	return r.retryAfter
}

// certificates parses an "issued" answer: the first block of certificate is the leaf; further
// blocks there and every block of chain are the chain, in order. The roots are caCertsFile's,
// never the answer's: a chain cannot vouch for itself.
func (c *Connector) certificates(body *response) (*ca.Issued, error) {
	leafs, err := parseCertificates(body.Certificate)
	if err != nil {
		return nil, ca.Permanentf("%s: the issued certificate cannot be used: %w", c.label(), err)
	}
	issued := &ca.Issued{Leaf: leafs[0], Chain: leafs[1:], Roots: c.roots}
	for i, p := range body.Chain {
		certs, err := parseCertificates(p)
		if err != nil {
			return nil, ca.Permanentf("%s: chain[%d] cannot be used: %w", c.label(), i, err)
		}
		issued.Chain = append(issued.Chain, certs...)
	}
	return issued, nil
}

// parseCertificates reads one or more PEM CERTIFICATE blocks and nothing else.
func parseCertificates(s string) ([]*x509.Certificate, error) {
	rest := []byte(s)
	var out []*x509.Certificate
	for {
		block, r := pem.Decode(rest)
		if block == nil {
			break
		}
		rest = r
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, cert)
	}
	switch {
	case len(out) == 0:
		return nil, errors.New("no PEM certificate")
	case len(bytes.TrimSpace(rest)) > 0:
		return nil, errors.New("text after the last PEM certificate")
	}
	return out, nil
}

// clean makes server-supplied text fit for a failure message shown on a device: valid UTF-8,
// no control characters, bounded, and without any configured secret (in case a server echoes
// the request's headers).
func (c *Connector) clean(s string) string { return c.cleanMax(s, maxMessageBytes) }

// cleanMax is clean with another bound.
func (c *Connector) cleanMax(s string, max int) string {
	secrets := []string{c.secret.Reveal()}
	for _, h := range c.headers {
		secrets = append(secrets, h.value.Reveal())
	}
	return ca.ServerText(s, max, secrets...)
}

// displayLocation shows a redirect target without its query, which may carry a key.
func displayLocation(loc string) string {
	u, err := url.Parse(loc)
	if err != nil || loc == "" {
		return "an unreadable location"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// label names the connector in messages.
func (c *Connector) label() string {
	if c.name == "" {
		return "webhook"
	}
	return "webhook " + c.name
}
