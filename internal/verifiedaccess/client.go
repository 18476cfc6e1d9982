package verifiedaccess

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/googleapis/gax-go/v2/apierror"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/time/rate"
	"google.golang.org/api/googleapi"
	va1 "google.golang.org/api/verifiedaccess/v1"
	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/googleauth"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/retryafter"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// Scope is the OAuth scope of the Verified Access API.
const Scope = "https://www.googleapis.com/auth/verifiedaccess"

// Google is the part of the Verified Access API the enrollment server uses. Implementations are
// safe for concurrent use and return *Error values classified with the enrollment API's codes.
type Google interface {
	// Challenge asks Google for a fresh challenge of API version version ("v1" or "v2").
	Challenge(ctx context.Context, version string) (*Challenge, error)
	// Verify has Google verify a challenge response for expectedIdentity (the enrolled domain
	// for a machine key, the user's e-mail for a user key). response is what challengeKey
	// returned: for v1 a serialized SignedData, for v2 the bytes Google expects as they are.
	// It is never retried here: Google may treat a response as used once it saw it.
	Verify(ctx context.Context, version string, response []byte, expectedIdentity string) (*Result, error)
}

// Challenge is a challenge as the extension receives it.
type Challenge struct {
	// Bytes go to challengeKey: the serialized SignedData (v1: built from Google's data and
	// signature; v2: as Google returned it).
	Bytes []byte
	// Data is the SignedData's data, by which the answer is recognised: a device's
	// ChallengeResponse carries the challenge's SignedData as its field 1.
	Data []byte
}

// Result is a successful verification, normalised over v1 and v2. v1 fills only the device ids
// and the SPKAC. Managed profiles on unmanaged browsers (v2) get the profile fields instead of the
// device ones.
type Result struct {
	APIVersion string

	DevicePermanentID  string
	DeviceEnrollmentID string
	AttestedDeviceID   string
	VirtualDeviceID    string
	CustomerID         string
	KeyTrustLevel      string

	ProfileCustomerID    string
	ProfilePermanentID   string
	VirtualProfileID     string
	ProfileKeyTrustLevel string

	// SignedPublicKeyAndChallenge is the base64 SPKAC; empty when the device did not register a
	// key (challengeKey without registerKey).
	SignedPublicKeyAndChallenge string

	// Signals are the device signals (v2); nil for v1 and when Google sent none.
	Signals *va2.DeviceSignals
}

// ClientOptions configure a Client.
type ClientOptions struct {
	// Endpoint overrides https://verifiedaccess.googleapis.com/ (the emulator).
	Endpoint string
	// InsecureAllowCleartext accepts a plain-http Endpoint on a host that is not loopback
	// (verifiedAccess.insecureAllowCleartext); NewClient refuses one otherwise.
	InsecureAllowCleartext bool
	// Credentials authenticate as google.credentials does, with the Verified Access scope;
	// type none talks to an emulator without authentication.
	Credentials googleauth.Credentials
	// UserAgent is the adapter's product token in the User-Agent (googleauth.Client.UserAgent).
	UserAgent string
	// RequestTimeout bounds one call (default 30s).
	RequestTimeout time.Duration
	// RateLimit bounds calls per second to Google across the server (default config.DefaultRateLimit and DefaultRateBurst),
	// so that a flood of /challenge requests cannot spend the project's quota.
	RateLimit config.RateLimit
	// HTTPClient replaces the authenticated client (tests).
	HTTPClient *http.Client
	Logger     *zap.Logger
	// Registerer receives the client's metrics (metrics.GoogleAPI); nil exports none.
	Registerer prometheus.Registerer
}

// Client calls the Verified Access API, v1 and v2. It is safe for concurrent use.
type Client struct {
	v1      *va1.ChallengeService
	v2      *va2.ChallengeService
	limiter *rate.Limiter
	timeout time.Duration
	log     *zap.Logger
	m       *metrics.GoogleAPI
	ts      oauth2.TokenSource // nil without credentials
}

var _ Google = (*Client)(nil)

// NewClient builds a Client.
func NewClient(ctx context.Context, o ClientOptions) (*Client, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Endpoint != "" && o.Credentials.Type != googleauth.None {
		warning, err := config.EndpointRule(config.SectionVerifiedAccess).URL(o.Endpoint, o.InsecureAllowCleartext)
		if err != nil {
			return nil, err
		}
		warning.Warn(o.Logger)
	}
	m := metrics.NewGoogleAPI(o.Registerer)
	opts, ts, err := googleauth.Client{Credentials: o.Credentials, UserAgent: o.UserAgent, Scopes: []string{Scope}, Endpoint: o.Endpoint,
		HTTPClient: o.HTTPClient, Wrap: func(next http.RoundTripper) http.RoundTripper {
			return m.RoundTripper(metrics.APIVerifiedAccess, methodOf, next)
		}}.Options(ctx)
	if err != nil {
		return nil, fmt.Errorf("verified access credentials: %w", err)
	}
	s1, err := va1.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("verified access v1 client: %w", err)
	}
	s2, err := va2.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("verified access v2 client: %w", err)
	}
	rps, burst := rateOf(o.RateLimit)
	timeout := o.RequestTimeout
	if timeout <= 0 {
		timeout = config.DefaultRequestTimeout
	}
	return &Client{
		v1:      va1.NewChallengeService(s1),
		v2:      va2.NewChallengeService(s2),
		limiter: rate.NewLimiter(rps, burst),
		timeout: timeout,
		log:     o.Logger,
		m:       m,
		ts:      ts,
	}, nil
}

// TokenSource is the source of the client's access tokens, which caches them; nil when the
// client sends none. A readiness check may ask it for a token as often as it likes.
func (c *Client) TokenSource() oauth2.TokenSource { return c.ts }

// methodOf names a Verified Access request by its path below the endpoint, the API version
// included (v1/challenge, v1/challenge:verify, v2/challenge:generate, v2/challenge:verify).
func methodOf(r *http.Request) string {
	p := r.URL.Path
	if i := strings.LastIndex(p, "/v"); i >= 0 && r.Method == http.MethodPost {
		switch m := p[i+1:]; m {
		case "v1/challenge", "v1/challenge:verify", "v2/challenge:generate", "v2/challenge:verify":
			return m
		}
	}
	return metrics.MethodOther
}

// call runs fn under the rate limit and the per-request timeout.
func (c *Client) call(ctx context.Context, fn func(ctx context.Context) error) error {
	waited := time.Now()
	err := c.limiter.Wait(ctx)
	c.m.RateLimited(metrics.APIVerifiedAccess, time.Since(waited))
	if err != nil {
		return fmt.Errorf("rate limit: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return fn(rctx)
}

// Challenge implements Google.
func (c *Client) Challenge(ctx context.Context, version string) (*Challenge, error) {
	switch version {
	case config.VAv1:
		var got *va1.Challenge
		err := c.call(ctx, func(ctx context.Context) (err error) {
			got, err = c.v1.Create(&va1.Empty{}).Context(ctx).Do()
			return err
		})
		if err != nil {
			return nil, c.challengeError(version, err)
		}
		if got.Challenge == nil {
			return nil, fail(CodeUnavailable, errors.New("v1 challenge: response without challenge"), "Google returned no challenge")
		}
		data, derr := base64.StdEncoding.DecodeString(got.Challenge.Data)
		sig, serr := base64.StdEncoding.DecodeString(got.Challenge.Signature)
		if err := errors.Join(derr, serr); err != nil || len(data) == 0 {
			return nil, fail(CodeUnavailable, fmt.Errorf("v1 challenge: malformed: %v", err), "Google returned a malformed challenge")
		}
		return &Challenge{Bytes: wire.MarshalSignedData(data, sig), Data: data}, nil
	case config.VAv2:
		var got *va2.Challenge
		err := c.call(ctx, func(ctx context.Context) (err error) {
			got, err = c.v2.Generate(&va2.Empty{}).Context(ctx).Do()
			return err
		})
		if err != nil {
			return nil, c.challengeError(version, err)
		}
		b, err := base64.StdEncoding.DecodeString(got.Challenge)
		if err != nil || len(b) == 0 {
			return nil, fail(CodeUnavailable, fmt.Errorf("v2 challenge: malformed: %v", err), "Google returned a malformed challenge")
		}
		data, _, err := wire.UnmarshalSignedData(b)
		if err != nil {
			// Chrome parses the challenge as a SignedData, and the adapter recognises the answer
			// by its data: anything else cannot be answered or recognised.
			return nil, fail(CodeUnavailable, fmt.Errorf("v2 challenge: %w", err), "Google returned a malformed challenge")
		}
		return &Challenge{Bytes: b, Data: data}, nil
	default:
		return nil, fail(CodeUnavailable, fmt.Errorf("unknown API version %q", version), "internal error")
	}
}

// challengeError classifies a failed challenge request: the client sent nothing Google could
// refuse, so a failure is the adapter's (ADAPTER_MISCONFIGURED) or Google's (UNAVAILABLE).
func (c *Client) challengeError(version string, err error) error {
	err = fmt.Errorf("%s challenge: %w", version, err)
	if e := c.adapterRefused(version, err); e != nil {
		return e
	}
	c.log.Warn("verified access challenge failed", zap.String("api_version", version), zap.Error(err))
	return unavailable(err, "Google could not provide a challenge; try again later")
}

// Verify implements Google.
func (c *Client) Verify(ctx context.Context, version string, response []byte, expectedIdentity string) (*Result, error) {
	switch version {
	case config.VAv1:
		data, sig, err := wire.UnmarshalSignedData(response)
		if err != nil {
			return nil, fail(CodeBadChallenge, err, "the challenge response is not a serialized SignedData")
		}
		var got *va1.VerifyChallengeResponseResult
		err = c.call(ctx, func(ctx context.Context) (err error) {
			got, err = c.v1.Verify(&va1.VerifyChallengeResponseRequest{
				ChallengeResponse: &va1.SignedData{
					Data:      base64.StdEncoding.EncodeToString(data),
					Signature: base64.StdEncoding.EncodeToString(sig),
				},
				ExpectedIdentity: expectedIdentity,
			}).Context(ctx).Do()
			return err
		})
		if err != nil {
			return nil, c.verifyError(version, expectedIdentity, err)
		}
		return resultFromV1(got), nil
	case config.VAv2:
		var got *va2.VerifyChallengeResponseResult
		err := c.call(ctx, func(ctx context.Context) (err error) {
			got, err = c.v2.Verify(&va2.VerifyChallengeResponseRequest{
				ChallengeResponse: base64.StdEncoding.EncodeToString(response),
				ExpectedIdentity:  expectedIdentity,
			}).Context(ctx).Do()
			return err
		})
		if err != nil {
			return nil, c.verifyError(version, expectedIdentity, err)
		}
		return resultFromV2(got), nil
	default:
		return nil, fail(CodeUnavailable, fmt.Errorf("unknown API version %q", version), "internal error")
	}
}

// resultFromV1 normalises a v1 verify result.
func resultFromV1(got *va1.VerifyChallengeResponseResult) *Result {
	return &Result{
		APIVersion:                  config.VAv1,
		DevicePermanentID:           got.DevicePermanentId,
		DeviceEnrollmentID:          got.DeviceEnrollmentId,
		AttestedDeviceID:            got.AttestedDeviceId,
		SignedPublicKeyAndChallenge: got.SignedPublicKeyAndChallenge,
	}
}

// resultFromV2 normalises a v2 verify result.
func resultFromV2(got *va2.VerifyChallengeResponseResult) *Result {
	return &Result{
		APIVersion:                  config.VAv2,
		DevicePermanentID:           got.DevicePermanentId,
		DeviceEnrollmentID:          got.DeviceEnrollmentId,
		AttestedDeviceID:            got.AttestedDeviceId,
		VirtualDeviceID:             got.VirtualDeviceId,
		CustomerID:                  got.CustomerId,
		KeyTrustLevel:               got.KeyTrustLevel,
		ProfileCustomerID:           got.ProfileCustomerId,
		ProfilePermanentID:          got.ProfilePermanentId,
		VirtualProfileID:            got.VirtualProfileId,
		ProfileKeyTrustLevel:        got.ProfileKeyTrustLevel,
		SignedPublicKeyAndChallenge: got.SignedPublicKeyAndChallenge,
		Signals:                     got.DeviceSignals,
	}
}

// verifyError classifies a failed verification by Google's HTTP status, never by its message
// (docs/verified-access-api.md, section 1): 400 is a response Google refused — invalid, expired,
// answered already, or for another identity, which Google does not tell apart — so
// BAD_CHALLENGE; 401, 403 and 404 are the adapter's own configuration (adapterRefused); 408,
// 429 and 5xx, and no answer at all, are UNAVAILABLE with Google's Retry-After. Google's message
// goes to the log, not to the client.
func (c *Client) verifyError(version, identity string, err error) error {
	err = fmt.Errorf("%s challenge:verify: %w", version, err)
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		c.log.Warn("verified access verify failed", zap.String("api_version", version), zap.Error(err))
		return unavailable(err, "Google could not be reached; try again later")
	}
	if e := c.adapterRefused(version, err); e != nil {
		return e
	}
	if retryable(gerr.Code) {
		c.log.Warn("verified access verify failed", zap.String("api_version", version), zap.Int("status", gerr.Code),
			zap.String("reason", reasonOf(err)), zap.Error(err))
		e := unavailable(err, "Google could not verify the response now; try again later")
		e.retryAfter = retryafter.FromHeader(gerr.Header)
		return e
	}
	return fail(CodeBadChallenge, err, "Google refused the challenge response: it is not a valid answer to a current challenge for %q "+
		"(it may have expired, been answered already, or come from a device or user enrolled elsewhere); ask for a new challenge", identity)
}

// adapterRefused returns ADAPTER_MISCONFIGURED, logged as an error with what to fix, when Google
// refused the adapter rather than the device: 401 (credentials), 403 (the service account may
// not use the Verified Access API) or 404 (endpoint). It returns nil for any other answer.
func (c *Client) adapterRefused(version string, err error) *Error {
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		return nil
	}
	var what, msg string
	switch gerr.Code {
	case http.StatusUnauthorized:
		what = "Google did not accept the adapter's credentials: check google.credentials"
		msg = "Google did not accept the adapter's credentials; tell the administrator"
	case http.StatusForbidden:
		what = "the adapter's service account is not allowed to use the Verified Access API: enable the API in the " +
			"service account's project and list the service account in the Admin console's Verified Access settings (device and user)"
		msg = "the adapter's service account is not allowed to use Google's Verified Access API; tell the administrator"
	case http.StatusNotFound:
		what = "the Verified Access API is not at verifiedAccess.endpoint"
		msg = "the adapter cannot reach the Verified Access API; tell the administrator"
	default:
		return nil
	}
	c.log.Error("verified access refused the adapter: "+what, zap.String("api_version", version), zap.Int("status", gerr.Code),
		zap.String("reason", reasonOf(err)), zap.Error(err))
	return fail(CodeMisconfigured, err, "%s", msg)
}

// retryable reports whether an HTTP status from Google means "not now" rather than "no".
func retryable(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
}

// reasonOf is the ErrorInfo reason of a Google error's details (SERVICE_DISABLED,
// IAM_PERMISSION_DENIED, RATE_LIMIT_EXCEEDED, …), for the log; "" when there is none.
func reasonOf(err error) string {
	var ae *apierror.APIError
	if errors.As(err, &ae) {
		return ae.Reason()
	}
	return ""
}

func unavailable(err error, msg string) *Error { return fail(CodeUnavailable, err, "%s", msg) }

// rateOf is the token bucket of google.rateLimit, with the defaults for unset values.
func rateOf(r config.RateLimit) (rate.Limit, int) {
	rps, burst := r.RequestsPerSecond, r.Burst
	if rps <= 0 {
		rps = config.DefaultRateLimit
	}
	if burst < 1 {
		burst = config.DefaultRateBurst
	}
	return rate.Limit(rps), burst
}

// SetRateLimit changes the client's share of google.rateLimit (a configuration reload).
func (c *Client) SetRateLimit(r config.RateLimit) {
	rps, burst := rateOf(r)
	c.limiter.SetLimit(rps)
	c.limiter.SetBurst(burst)
}
