// Package chromeapi wraps the Certificate Provisioning methods of the Chrome Management API v1:
// authentication with the right scope, a client-side rate limit shared by every call, bounded
// retries of calls that are safe to repeat, and error classification.
package chromeapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/time/rate"
	cm "google.golang.org/api/chromemanagement/v1"

	"github.com/certprov/certprov-adapter/internal/cleartext"
	"github.com/certprov/certprov-adapter/internal/errclass"
	"github.com/certprov/certprov-adapter/internal/googleauth"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Scope is the OAuth scope of the provisioning methods. It is missing from the discovery
// document, so the generated client never asks for it by itself.
const Scope = "https://www.googleapis.com/auth/chrome.management.certprov.provisioningprocess"

// Options configures a Client. Package adapter fills it from the google section of the
// configuration, whose defaults and validation apply there: the client has no defaults of its own
// for what an operator sets.
type Options struct {
	// Endpoint overrides https://chromemanagement.googleapis.com/ (the emulator's URL).
	Endpoint string
	// Credentials authenticate the calls, with Scope; type None sends none (an emulator).
	Credentials googleauth.Credentials
	// UserAgent is the adapter's product token in the User-Agent (googleauth.Client.UserAgent).
	UserAgent string
	// InsecureAllowCleartext accepts a plain-http Endpoint on a host that is not loopback, to
	// which the access token then travels in clear; New refuses one otherwise, naming the
	// settings of Cleartext (the zero Rule names none).
	InsecureAllowCleartext bool
	Cleartext              cleartext.Rule
	// RateLimit is the token bucket every call waits for (required).
	RateLimit RateLimit
	// RequestTimeout bounds one HTTP call (required).
	RequestTimeout time.Duration

	Logger *zap.Logger
	// Attempts bounds inline tries of a repeatable call (default 4); the engine retries beyond that
	// on its own, slower schedule.
	Attempts int
	// MaxInlineWait caps one inline back-off, whatever Retry-After says (default 10s).
	MaxInlineWait time.Duration
	// HTTPClient replaces the authenticated client (tests).
	HTTPClient *http.Client
	// Registerer receives the client's metrics (metrics.GoogleAPI: calls by method and code,
	// rate limit waits); nil exports none.
	Registerer prometheus.Registerer
}

// RateLimit is a token bucket: RequestsPerSecond sustained, Burst at once. Both must be positive.
type RateLimit struct {
	RequestsPerSecond float64
	Burst             int
}

// Client calls the Certificate Provisioning API. It is safe for concurrent use.
type Client struct {
	svc      *cm.CustomersCertificateProvisioningProcessesService
	limiter  *rate.Limiter
	timeout  time.Duration
	attempts int
	maxWait  time.Duration
	log      *zap.Logger
	m        *metrics.GoogleAPI
	ts       oauth2.TokenSource // nil without credentials
}

// New builds a Client.
func New(ctx context.Context, o Options) (*Client, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.MaxInlineWait <= 0 {
		o.MaxInlineWait = 10 * time.Second
	}
	rps, burst, err := rateOf(o.RateLimit)
	if err != nil {
		return nil, err
	}
	if o.RequestTimeout <= 0 {
		return nil, fmt.Errorf("chrome management client: request timeout %s: must be positive", o.RequestTimeout)
	}
	// Validate refused this already; a client built another way must not send a token in clear.
	if o.Endpoint != "" && o.Credentials.Type != googleauth.None {
		warning, err := o.Cleartext.URL(o.Endpoint, o.InsecureAllowCleartext)
		if err != nil {
			return nil, err
		}
		warning.Warn(o.Logger)
	}
	m := metrics.NewGoogleAPI(o.Registerer)
	opts, ts, err := googleauth.Client{Credentials: o.Credentials, UserAgent: o.UserAgent, Scopes: []string{Scope}, Endpoint: o.Endpoint,
		HTTPClient: o.HTTPClient, Wrap: func(next http.RoundTripper) http.RoundTripper {
			return m.RoundTripper(metrics.APIChromeManagement, methodOf, next)
		}}.Options(ctx)
	if err != nil {
		return nil, err
	}
	svc, err := cm.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("chrome management client: %w", err)
	}
	return &Client{
		svc:      cm.NewCustomersCertificateProvisioningProcessesService(svc),
		limiter:  rate.NewLimiter(rps, burst),
		timeout:  o.RequestTimeout,
		attempts: o.Attempts,
		maxWait:  o.MaxInlineWait,
		log:      o.Logger,
		m:        m,
		ts:       ts,
	}, nil
}

// TokenSource is the source of the client's access tokens, which caches them until shortly
// before they expire; nil when the client sends none (credentials type none, or an HTTPClient
// given). A readiness check may ask it for a token as often as it likes.
func (c *Client) TokenSource() oauth2.TokenSource { return c.ts }

// methodOf names the API method of a request by its path, as the emulator and the metrics do.
func methodOf(r *http.Request) string {
	p := r.URL.Path
	if i := strings.LastIndexByte(p, ':'); i > strings.LastIndexByte(p, '/') {
		switch verb := p[i+1:]; verb {
		case "claim", "signData", "uploadCertificate", "setFailure":
			if r.Method == http.MethodPost {
				return verb
			}
		}
		return metrics.MethodOther
	}
	if r.Method != http.MethodGet || !strings.Contains(p, "/certificateProvisioningProcesses/") {
		return metrics.MethodOther
	}
	if strings.Contains(p, "/operations/") {
		return "operations.get"
	}
	return "get"
}

// TokenSource builds the OAuth2 token source for c, with the provisioning scope.
func TokenSource(ctx context.Context, c googleauth.Credentials) (oauth2.TokenSource, error) {
	return googleauth.TokenSource(ctx, c, Scope)
}

// call runs fn under the rate limit and a per-request timeout, retrying retryable failures up to
// the attempt budget when repeatable is true.
func (c *Client) call(ctx context.Context, method, name string, repeatable bool, fn func(ctx context.Context) error) error {
	attempts := 1
	if repeatable {
		attempts = c.attempts
	}
	var err error
	for i := 0; i < attempts; i++ {
		waited := time.Now()
		werr := c.limiter.Wait(ctx)
		c.m.RateLimited(metrics.APIChromeManagement, time.Since(waited))
		if werr != nil {
			// The caller's context ended, or its deadline comes before a token: the caller gave up.
			return errclass.Mark(fmt.Errorf("%s %s: rate limit wait: %w", method, name, werr), errclass.Permanent, 0)
		}
		rctx, cancel := context.WithTimeout(ctx, c.timeout)
		err = classify(ctx, method, name, fn(rctx))
		cancel()
		if err == nil || !retryable(err) || i == attempts-1 {
			return err
		}
		_, hint := errclass.Of(err)
		wait := backoff(i, hint, c.maxWait)
		c.log.Debug("retrying API call", zap.String("method", method), zap.String("process", name),
			zap.Duration("wait", wait), zap.Error(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return err
}

// backoff is exponential with full jitter from 200ms, but never shorter than the server asked.
func backoff(attempt int, retryAfter, ceiling time.Duration) time.Duration {
	d := 200 * time.Millisecond << attempt
	if d > ceiling {
		d = ceiling
	}
	d = time.Duration(rand.Int64N(int64(d)) + 1)
	if retryAfter > d {
		d = min(retryAfter, ceiling)
	}
	return d
}

// Get reads a process.
func (c *Client) Get(ctx context.Context, name string) (*process.Process, error) {
	var got *cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess
	err := c.call(ctx, "get", name, true, func(ctx context.Context) error {
		var err error
		got, err = c.svc.Get(name).Context(ctx).Do()
		return err
	})
	if err != nil {
		return nil, err
	}
	return malformed(fromAPI(got))
}

// malformed classifies the error of converting what Google answered as permanent: the same
// answer will not convert better the next time.
func malformed[T any](v T, err error) (T, error) {
	return v, errclass.Mark(err, errclass.Permanent, 0)
}

// Claim claims a process for instanceID. It returns process.ErrClaimedByOther (wrapped) when
// another instance owns it; Google answers 400 as documented, some deployments may answer 409.
func (c *Client) Claim(ctx context.Context, name, instanceID string) error {
	err := c.call(ctx, "claim", name, true, func(ctx context.Context) error {
		_, err := c.svc.Claim(name, &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{
			CallerInstanceId: instanceID,
		}).Context(ctx).Do()
		return err
	})
	if failedPrecondition(err) {
		return fmt.Errorf("%w: %w", process.ErrClaimedByOther, err)
	}
	return err
}

// SignData asks the device to sign data and returns the operation name. It is never retried
// here: a second request makes the device fail the process, so after a failure the caller must
// read the process to learn whether the first one landed.
func (c *Client) SignData(ctx context.Context, name string, data []byte, algorithm string) (string, error) {
	var op *cm.GoogleLongrunningOperation
	err := c.call(ctx, "signData", name, false, func(ctx context.Context) error {
		var err error
		op, err = c.svc.SignData(name, &cm.GoogleChromeManagementVersionsV1SignDataRequest{
			SignData:           base64.StdEncoding.EncodeToString(data),
			SignatureAlgorithm: algorithm,
		}).Context(ctx).Do()
		return err
	})
	if err != nil {
		return "", err
	}
	return op.Name, nil
}

// GetOperation polls a signData operation.
func (c *Client) GetOperation(ctx context.Context, opName string) (*process.Operation, error) {
	var op *cm.GoogleLongrunningOperation
	err := c.call(ctx, "operations.get", opName, true, func(ctx context.Context) error {
		var err error
		op, err = c.svc.Operations.Get(opName).Context(ctx).Do()
		return err
	})
	if err != nil {
		return nil, err
	}
	return malformed(operationFromAPI(opName, op))
}

// operationFromAPI converts a signData operation as Google returned it.
func operationFromAPI(opName string, op *cm.GoogleLongrunningOperation) (*process.Operation, error) {
	out := &process.Operation{Done: op.Done}
	if op.Error != nil {
		out.Done = true
		out.Error = fmt.Sprintf("code %d: %s", op.Error.Code, op.Error.Message)
		return out, nil
	}
	if len(op.Response) > 0 {
		// "@type" is deliberately ignored: the shape is what matters, and it may be absent.
		var resp struct {
			Process *cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess `json:"certificateProvisioningProcess"`
		}
		if err := json.Unmarshal(op.Response, &resp); err != nil {
			return nil, fmt.Errorf("operations.get %s: decode response: %w", opName, err)
		}
		if resp.Process != nil {
			p, err := fromAPI(resp.Process)
			if err != nil {
				return nil, fmt.Errorf("operations.get %s: %w", opName, err)
			}
			out.Process = p
		}
	}
	return out, nil
}

// UploadCertificate hands the leaf certificate (PEM) to the device.
func (c *Client) UploadCertificate(ctx context.Context, name, certPEM string) error {
	return c.call(ctx, "uploadCertificate", name, true, func(ctx context.Context) error {
		_, err := c.svc.UploadCertificate(name, &cm.GoogleChromeManagementVersionsV1UploadCertificateRequest{
			CertificatePem: certPEM,
		}).Context(ctx).Do()
		return err
	})
}

// SetFailure ends the process with a message the device shows to the user.
func (c *Client) SetFailure(ctx context.Context, name, message string) error {
	return c.call(ctx, "setFailure", name, true, func(ctx context.Context) error {
		_, err := c.svc.SetFailure(name, &cm.GoogleChromeManagementVersionsV1SetFailureRequest{
			ErrorMessage: message,
		}).Context(ctx).Do()
		return err
	})
}

// rateOf is the limiter's rate and burst for r, which must both be positive.
func rateOf(r RateLimit) (rate.Limit, int, error) {
	if !(r.RequestsPerSecond > 0) || math.IsInf(r.RequestsPerSecond, 0) || r.Burst < 1 {
		return 0, 0, fmt.Errorf("chrome management client: rate limit %v/s, burst %d: both must be positive", r.RequestsPerSecond, r.Burst)
	}
	return rate.Limit(r.RequestsPerSecond), r.Burst, nil
}

// SetRateLimit changes the client's rate limit (a configuration reload); calls waiting for a
// token wait by the new one. A limit that is not positive is refused and the old one kept.
func (c *Client) SetRateLimit(r RateLimit) error {
	rps, burst, err := rateOf(r)
	if err != nil {
		return err
	}
	c.limiter.SetLimit(rps)
	c.limiter.SetBurst(burst)
	return nil
}
