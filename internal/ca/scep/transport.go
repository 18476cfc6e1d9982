package scep

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/retryafter"
)

// maxResponse bounds what is read from a server: certificate bundles and CertReps are a few KB.
const maxResponse = 1 << 20

// operationURL is the SCEP URL with operation (and message, if any) in the query.
func (c *Connector) operationURL(op, message string) string {
	u := *c.url
	q := u.Query()
	q.Set("operation", op)
	if message != "" {
		q.Set("message", message)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// where names the server in messages without its query string.
func (c *Connector) where() string { return c.url.Host + c.url.Path }

// do sends one HTTP request and returns the body of a 200 answer; every other outcome is a
// classified error naming op.
func do(ctx context.Context, client *http.Client, req *http.Request, op, where string) ([]byte, http.Header, error) {
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		return nil, nil, transportError(ctx, op, where, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, nil, transportError(ctx, op, where, err)
	}
	if len(body) > maxResponse {
		return nil, nil, ca.Permanentf("%s: the answer from %s is larger than %d bytes", op, where, maxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, statusError(op, where, resp, body)
	}
	return body, resp.Header, nil
}

// transportError classifies a failed exchange: cancellation stays recognisable as such, anything
// else (refused, reset, timeout, TLS) is worth retrying.
func transportError(ctx context.Context, op, where string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ca.Retryable(fmt.Errorf("%s at %s: %w", op, where, ctxErr), 0)
	}
	// url.Error repeats the whole URL, which for a GET PKIOperation is kilobytes of base64.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return ca.Retryable(fmt.Errorf("%s at %s: %w", op, where, err), 0)
}

// statusError classifies a non-200 answer: overload and server errors are transient, while a
// wrong path or refused credentials will not fix themselves.
func statusError(op, where string, resp *http.Response, body []byte) error {
	err := fmt.Errorf("%s at %s: HTTP %s%s", op, where, resp.Status, bodyHint(resp.Header, body))
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return ca.Retryable(err, retryafter.FromHeader(resp.Header))
	case resp.StatusCode == http.StatusNotFound:
		return ca.Permanent(fmt.Errorf("%w (check the url setting)", err))
	case resp.StatusCode == http.StatusRequestURITooLong:
		return ca.Permanent(fmt.Errorf("%w (the server does not advertise POSTPKIOperation and its URL length limit is too low for a GET request)", err))
	default:
		return ca.Permanent(err)
	}
}

// bodyHint quotes the start of a short plain-text error body, which is often the server's only
// explanation. HTML pages and binary answers are left out.
func bodyHint(h http.Header, body []byte) string {
	if !strings.HasPrefix(h.Get("Content-Type"), "text/plain") || len(body) == 0 {
		return ""
	}
	return ": " + strconv.Quote(ca.ServerText(string(body), 160))
}

// getOperation performs a GET operation such as GetCACaps or GetCACert.
func (c *Connector) getOperation(ctx context.Context, op, message string) ([]byte, http.Header, error) {
	req, err := http.NewRequest(http.MethodGet, c.operationURL(op, message), nil)
	if err != nil {
		return nil, nil, ca.Permanentf("%s: %v", op, err)
	}
	return do(ctx, c.client, req, op, c.where())
}

// pkiOperation sends a pkiMessage by POST when the server offers it, else base64 in a GET
// (RFC 8894 §4.1), and returns the CertRep bytes.
func (c *Connector) pkiOperation(ctx context.Context, post bool, msg []byte) ([]byte, error) {
	const op = "PKIOperation"
	var (
		req *http.Request
		err error
	)
	if post {
		req, err = http.NewRequest(http.MethodPost, c.operationURL(op, ""), bytes.NewReader(msg))
		if req != nil {
			req.Header.Set("Content-Type", "application/x-pki-message")
		}
	} else {
		req, err = http.NewRequest(http.MethodGet, c.operationURL(op, base64.StdEncoding.EncodeToString(msg)), nil)
	}
	if err != nil {
		return nil, ca.Permanentf("%s: %v", op, err)
	}
	body, _, err := do(ctx, c.client, req, op, c.where())
	return body, err
}
