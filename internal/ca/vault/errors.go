package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
	"github.com/certprov/certprov-adapter/internal/retryafter"
)

// maxMessage bounds Vault's text inside an error: failure messages reach a user's device and
// are at most 500 bytes in all.
const maxMessage = 300

// exchange is what send saw of the HTTP side of a call.
type exchange struct {
	delivered  bool          // a request was written to Vault in full
	retryAfter time.Duration // the Retry-After of the last answer
}

// send runs fn with a client that sends tok as X-Vault-Token (none when tok is empty), and
// reports whether a request reached Vault and the answer's Retry-After, which the SDK's errors
// do not carry. The base client itself never holds a token, so concurrent calls with
// different tokens cannot mix them up.
func send(ctx context.Context, base *vaultapi.Client, tok string,
	fn func(context.Context, *vaultapi.Client) (*vaultapi.Secret, error)) (*vaultapi.Secret, exchange, error) {
	var (
		mu    sync.Mutex
		after time.Duration
	)
	cl := base.WithRequestCallbacks(func(r *vaultapi.Request) { r.ClientToken = tok }).
		WithResponseCallbacks(func(r *vaultapi.Response) {
			mu.Lock()
			after = retryafter.FromHeader(r.Header)
			mu.Unlock()
		})
	traced, wrote := catls.TraceDelivery(ctx)
	sec, err := fn(traced, cl)
	mu.Lock()
	defer mu.Unlock()
	return sec, exchange{delivered: wrote(), retryAfter: after}, err
}

// statusOf returns the HTTP status of a Vault error answer, 0 for any other error.
func statusOf(err error) int {
	var rerr *vaultapi.ResponseError
	if errors.As(err, &rerr) {
		return rerr.StatusCode
	}
	return 0
}

// classify turns an error of the Vault client into a classified error naming the connector
// (label) and the call (what). secrets are removed from any text Vault sent back.
func classify(label, what string, err error, retryAfter time.Duration, secrets ...string) error {
	var rerr *vaultapi.ResponseError
	if errors.As(err, &rerr) {
		return responseError(label, what, rerr, retryAfter, secrets)
	}
	err = catls.Cause(err)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ca.Retryable(fmt.Errorf("%s: %s: %w", label, what, err), 0)
	case catls.NotVerified(err):
		return ca.Permanentf("%s: %s: Vault's TLS certificate does not verify (check address, tls.caFile and tls.serverName): %w", label, what, err)
	}
	return ca.Retryable(fmt.Errorf("%s: %s: %w", label, what, err), 0)
}

// responseError classifies an error answer by its status, keeping Vault's reason.
func responseError(label, what string, r *vaultapi.ResponseError, retryAfter time.Duration, secrets []string) error {
	msg := vaultText(r.Errors, secrets)
	code := r.StatusCode
	head := fmt.Sprintf("%s: %s: HTTP %d", label, what, code)
	switch {
	case code == http.StatusBadRequest:
		return ca.Permanentf("%s, Vault refused the request: %s", head, msg)
	case code == http.StatusForbidden:
		return ca.Permanentf("%s, permission denied: %s (the token's policies must grant this path; check auth, namespace and mount)", head, msg)
	case code == http.StatusNotFound:
		return ca.Permanentf("%s, not found: %s (check mount, issuer and namespace)", head, msg)
	case code == http.StatusPreconditionFailed:
		// A performance standby that has not caught up yet (X-Vault-Index).
		return ca.Retryable(fmt.Errorf("%s, Vault is not up to date yet: %s", head, msg), retryAfter)
	case code == http.StatusTooManyRequests:
		return ca.Retryable(fmt.Errorf("%s, Vault is rate limiting or a standby answered: %s", head, msg), retryAfter)
	case code == http.StatusServiceUnavailable:
		return ca.Retryable(fmt.Errorf("%s, Vault is unavailable (sealed, or no active node): %s", head, msg), retryAfter)
	case code >= 500, code == http.StatusRequestTimeout:
		return ca.Retryable(fmt.Errorf("%s, Vault failed: %s", head, msg), retryAfter)
	case code >= 400:
		return ca.Permanentf("%s: %s (is address a Vault server?)", head, msg)
	default:
		return ca.Retryable(fmt.Errorf("%s, unexpected answer: %s", head, msg), retryAfter)
	}
}

// multiError is the frame of hashicorp/go-multierror that Vault puts around some reasons
// ("1 error occurred:\n\t* permission denied\n\n").
var multiError = regexp.MustCompile(`^\d+ errors? occurred:\s*`)

// vaultText joins Vault's reasons into one printable, bounded line without secrets.
func vaultText(errs []string, secrets []string) string {
	parts := make([]string, 0, len(errs))
	for _, e := range errs {
		e = multiError.ReplaceAllString(strings.TrimSpace(e), "")
		for _, item := range strings.Split(e, "\n") {
			item = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(item), "* "))
			if item != "" {
				parts = append(parts, item)
			}
		}
	}
	msg := ca.ServerText(strings.Join(parts, "; "), maxMessage, secrets...)
	if msg == "" {
		msg = "no reason given"
	}
	return msg
}
