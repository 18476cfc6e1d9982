// Package directory reads the Admin SDK Directory records of ChromeOS devices
// (chromeosdevices.get) and users (users.get) that profile templates and routing rules use:
// authentication with the read-only Directory scopes as an administrator (domain-wide
// delegation), a cache with a time to live and a bound, a rate limit of its own, and errors
// classified with errclass. docs/directory.md is the operator's side of it.
package directory

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	admin "google.golang.org/api/admin/directory/v1"

	"github.com/certprov/certprov-adapter/internal/cleartext"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/errclass"
	"github.com/certprov/certprov-adapter/internal/googleauth"
	"github.com/certprov/certprov-adapter/internal/metrics"
)

// The read-only scopes the lookups need; the service account's domain-wide delegation must
// grant both (docs/directory.md).
const (
	ScopeDevices = admin.AdminDirectoryDeviceChromeosReadonlyScope
	ScopeUsers   = admin.AdminDirectoryUserReadonlyScope
)

// MyCustomer is the Directory's name for the customer of the administrator the calls act as;
// a device lookup for a process that names no customer uses it.
const MyCustomer = "my_customer"

// The fields read, so that Google sends only these (a partial response).
const (
	deviceFields = "deviceId,serialNumber,model,annotatedAssetId,annotatedLocation,annotatedUser,notes," +
		"orgUnitPath,orgUnitId,macAddress,ethernetMacAddress"
	userFields = "id,primaryEmail,orgUnitPath,name(givenName,familyName,fullName),externalIds,customSchemas"
)

// Options configures a Client. Package adapter fills it from google.directory and
// google.credentials; the client has no defaults of its own for what an operator sets.
type Options struct {
	// Endpoint overrides https://admin.googleapis.com/ (the emulator's URL).
	Endpoint string
	// Credentials authenticate the calls with ScopeDevices and ScopeUsers. Their Subject is the
	// administrator the service account acts as (domain-wide delegation); type None sends no
	// credentials (an emulator).
	Credentials googleauth.Credentials
	// UserAgent is the adapter's product token in the User-Agent (googleauth.Client.UserAgent).
	UserAgent string
	// InsecureAllowCleartext accepts a plain-http Endpoint on a host that is not loopback; New
	// refuses one otherwise, naming the settings of Cleartext.
	InsecureAllowCleartext bool
	Cleartext              cleartext.Rule
	// RateLimit is the token bucket every call to the Directory waits for (required): its quota
	// is not the Certificate Provisioning API's.
	RateLimit RateLimit
	// RequestTimeout bounds one HTTP call (required).
	RequestTimeout time.Duration
	// CacheTTL is how long a record read is used before it is read again (required), CacheSize
	// how many records (and not-found answers) are kept at most (required), the least recently
	// used dropped first. NegativeTTL is how long "no such device or user" is remembered
	// (required, at most CacheTTL): briefly, since an admin may be adding it right now.
	CacheTTL    time.Duration
	NegativeTTL time.Duration
	CacheSize   int

	Logger *zap.Logger
	// HTTPClient replaces the authenticated client (tests).
	HTTPClient *http.Client
	// Registerer receives the client's metrics (metrics.Directory, and metrics.GoogleAPI under
	// api admin_directory); nil exports none.
	Registerer prometheus.Registerer
	// Now is the cache's clock (default time.Now).
	Now func() time.Time
}

// RateLimit is a token bucket: RequestsPerSecond sustained, Burst at once. Both must be positive.
type RateLimit struct {
	RequestsPerSecond float64
	Burst             int
}

// Client looks records up in the Directory. It is safe for concurrent use.
type Client struct {
	svc     *admin.Service
	limiter *rate.Limiter
	timeout time.Duration
	cache   *cache
	flight  singleflight.Group // concurrent lookups of one record share one call
	log     *zap.Logger
	m       *metrics.Directory
	api     *metrics.GoogleAPI
	ts      oauth2.TokenSource
}

// New builds a Client.
func New(ctx context.Context, o Options) (*Client, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := o.RateLimit
	switch {
	case !(r.RequestsPerSecond > 0) || math.IsInf(r.RequestsPerSecond, 0) || r.Burst < 1:
		return nil, fmt.Errorf("directory client: rate limit %v/s, burst %d: both must be positive", r.RequestsPerSecond, r.Burst)
	case o.RequestTimeout <= 0:
		return nil, fmt.Errorf("directory client: request timeout %s: must be positive", o.RequestTimeout)
	case o.CacheTTL <= 0 || o.NegativeTTL <= 0 || o.NegativeTTL > o.CacheTTL:
		return nil, fmt.Errorf("directory client: cache TTL %s, negative TTL %s: both must be positive, the second at most the first", o.CacheTTL, o.NegativeTTL)
	case o.CacheSize < 1:
		return nil, fmt.Errorf("directory client: cache size %d: must be at least 1", o.CacheSize)
	}
	if o.Endpoint != "" && o.Credentials.Type != googleauth.None {
		warning, err := o.Cleartext.URL(o.Endpoint, o.InsecureAllowCleartext)
		if err != nil {
			return nil, err
		}
		warning.Warn(o.Logger)
	}
	api := metrics.NewGoogleAPI(o.Registerer)
	opts, ts, err := googleauth.Client{Credentials: o.Credentials, UserAgent: o.UserAgent, Scopes: []string{ScopeDevices, ScopeUsers}, Endpoint: o.Endpoint,
		HTTPClient: o.HTTPClient, Wrap: func(next http.RoundTripper) http.RoundTripper {
			return api.RoundTripper(metrics.APIDirectory, methodOf, next)
		}}.Options(ctx)
	if err != nil {
		return nil, fmt.Errorf("directory client: %w", err)
	}
	svc, err := admin.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("directory client: %w", err)
	}
	m := metrics.NewDirectory(o.Registerer)
	return &Client{
		svc:     svc,
		limiter: rate.NewLimiter(rate.Limit(r.RequestsPerSecond), r.Burst),
		timeout: o.RequestTimeout,
		cache:   newCache(o.CacheSize, o.CacheTTL, o.NegativeTTL, o.Now, m),
		log:     o.Logger,
		m:       m,
		api:     api,
		ts:      ts,
	}, nil
}

// TokenSource is the source of the client's access tokens (nil when it sends none), for a
// readiness check.
func (c *Client) TokenSource() oauth2.TokenSource { return c.ts }

// methodOf names the Directory method of a request by its path.
func methodOf(r *http.Request) string {
	p := r.URL.Path
	switch {
	case r.Method != http.MethodGet:
		return metrics.MethodOther
	case strings.Contains(p, "/devices/chromeos/"):
		return methodDevicesGet
	case strings.Contains(p, "/admin/directory/v1/users/"):
		return methodUsersGet
	}
	return metrics.MethodOther
}

// Device reads the Directory record of the ChromeOS device deviceID (a process's
// deviceDirectoryApiId) of customer (MyCustomer when empty). The record is shared with the
// cache: callers must not modify it. Errors are *Error.
func (c *Client) Device(ctx context.Context, customer, deviceID string) (*csr.DeviceDirectory, error) {
	if customer == "" {
		customer = MyCustomer
	}
	v, err := c.lookup(ctx, metrics.DirectoryDevice, customer, deviceID, func(ctx context.Context) (any, error) {
		d, err := c.svc.Chromeosdevices.Get(customer, deviceID).Projection("FULL").Fields(deviceFields).Context(ctx).Do()
		if err != nil {
			return nil, err
		}
		return deviceFromAPI(d), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*csr.DeviceDirectory), nil
}

// User reads the Directory record of the user userKey: a process's userDirectoryApiId, or its
// primary e-mail. customer only separates the cache's entries (a user key is unique across
// customers). The record is shared with the cache: callers must not modify it. Errors are *Error.
func (c *Client) User(ctx context.Context, customer, userKey string) (*csr.UserDirectory, error) {
	v, err := c.lookup(ctx, metrics.DirectoryUser, customer, userKey, func(ctx context.Context) (any, error) {
		u, err := c.svc.Users.Get(userKey).Projection("full").ViewType("admin_view").Fields(userFields).Context(ctx).Do()
		if err != nil {
			return nil, err
		}
		return userFromAPI(u)
	})
	if err != nil {
		return nil, err
	}
	return v.(*csr.UserDirectory), nil
}

// lookup answers from the cache, or calls fetch once under the rate limit and the request
// timeout, caching a record and a not-found answer.
func (c *Client) lookup(ctx context.Context, kind, customer, key string, fetch func(context.Context) (any, error)) (any, error) {
	if key == "" {
		err := &Error{Kind: kind, Key: key, Class: errclass.Permanent, err: errors.New("the process names no directory id")}
		c.m.Lookups.WithLabelValues(kind, metrics.DirectoryError).Inc()
		return nil, err
	}
	ck := cacheKey{kind: kind, customer: customer, key: key}
	if v, err, ok := c.cache.get(ck); ok {
		c.m.CacheHits.WithLabelValues(kind).Inc()
		c.m.Lookups.WithLabelValues(kind, resultOf(err)).Inc()
		return v, err
	}
	// Shared by concurrent lookups of the record; the first caller's context bounds the call.
	v, err, _ := c.flight.Do(kind+"\x00"+customer+"\x00"+key, func() (any, error) {
		if v, err, ok := c.cache.get(ck); ok {
			return v, err
		}
		waited := time.Now()
		werr := c.limiter.Wait(ctx)
		c.api.RateLimited(metrics.APIDirectory, time.Since(waited))
		if werr != nil {
			return nil, &Error{Kind: kind, Key: key, Class: errclass.Retryable, err: fmt.Errorf("rate limit wait: %w", werr)}
		}
		rctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		v, err := fetch(rctx)
		if err != nil {
			e := classify(kind, key, err)
			if e.NotFound() {
				c.cache.put(ck, nil, e)
			}
			return nil, e
		}
		c.cache.put(ck, v, nil)
		return v, nil
	})
	c.m.Lookups.WithLabelValues(kind, resultOf(err)).Inc()
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Forbidden() {
			c.log.Warn("the Directory refused a lookup: grant the service account domain-wide delegation of the Directory scopes, "+
				"impersonating an administrator who may read devices and users (docs/directory.md)",
				zap.String("kind", kind), zap.String("key", key), zap.Error(err))
		}
	}
	return v, err
}

// resultOf is the result label of a lookup's outcome.
func resultOf(err error) string {
	if err == nil {
		return metrics.DirectoryFound
	}
	var e *Error
	if !errors.As(err, &e) {
		return metrics.DirectoryError
	}
	switch {
	case e.NotFound():
		return metrics.DirectoryNotFound
	case e.Forbidden():
		return metrics.DirectoryForbidden
	case e.Class == errclass.Retryable:
		return metrics.DirectoryRetryable
	}
	return metrics.DirectoryError
}
