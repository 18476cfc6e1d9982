// Package googleauth turns a choice of credentials into OAuth2 credentials for one Google API.
// Every Google client of the adapter (Certificate Provisioning, Verified Access, Directory)
// authenticates the same way and differs only in its scope, so the choice of credential type, and
// the client options built from it (Client.Options), live here once. It
// knows nothing of the configuration file: package adapter fills Credentials from
// google.credentials.
package googleauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"
)

// Type is a kind of credentials.
type Type string

// Credential types.
const (
	// ADC is Application Default Credentials: the environment's (Workload Identity, a
	// metadata server, GOOGLE_APPLICATION_CREDENTIALS). The zero Type means ADC too.
	ADC Type = "adc"
	// ServiceAccountKey is a JSON key file exchanged for OAuth2 access tokens.
	ServiceAccountKey Type = "serviceAccountKey"
	// SelfSignedJWT is a JSON key file signing its own JWTs, with no token exchange.
	SelfSignedJWT Type = "selfSignedJWT"
	// None sends no credentials: an emulator.
	None Type = "none"
)

// Credentials says how a client authenticates to Google.
type Credentials struct {
	Type Type
	// File is the JSON key of ServiceAccountKey and SelfSignedJWT, as a path the process can
	// open (a relative one is relative to the working directory).
	File string
	// Subject, when set, is the user to impersonate through domain-wide delegation
	// (ServiceAccountKey, and ADC when the environment's credentials are a service account's key
	// file; a metadata server cannot impersonate).
	Subject string
}

// TokenSource builds the OAuth2 token source for c, asking for scopes (at least one). None has
// no token source: callers talk to an emulator without authentication instead.
func TokenSource(ctx context.Context, c Credentials, scopes ...string) (oauth2.TokenSource, error) {
	if len(scopes) == 0 || slices.Contains(scopes, "") {
		return nil, errors.New("token source: no OAuth scope given")
	}
	readKey := func() ([]byte, error) {
		b, err := os.ReadFile(c.File)
		if err != nil {
			return nil, fmt.Errorf("read credentials file: %w", err)
		}
		return b, nil
	}
	switch c.Type {
	case ADC, "":
		creds, err := google.FindDefaultCredentialsWithParams(ctx, google.CredentialsParams{Scopes: scopes, Subject: c.Subject})
		if err != nil {
			return nil, fmt.Errorf("application default credentials: %w", err)
		}
		return creds.TokenSource, nil
	case ServiceAccountKey:
		key, err := readKey()
		if err != nil {
			return nil, err
		}
		jc, err := google.JWTConfigFromJSON(key, scopes...)
		if err != nil {
			return nil, fmt.Errorf("service account key: %w", err)
		}
		jc.Subject = c.Subject
		return jc.TokenSource(ctx), nil
	case SelfSignedJWT:
		key, err := readKey()
		if err != nil {
			return nil, err
		}
		ts, err := google.JWTAccessTokenSourceWithScope(key, scopes...)
		if err != nil {
			return nil, fmt.Errorf("self-signed JWT: %w", err)
		}
		return ts, nil
	default:
		return nil, fmt.Errorf("credentials type %q has no token source", c.Type)
	}
}

// defaultTransport is http.DefaultTransport keeping as many idle connections per host as
// google.golang.org/api's own transport does (100). Go's default of 2 made a busy adapter dial
// a new connection for nearly every call once more than two were in flight over HTTP/1.1 (an
// emulator, a proxy without HTTP/2): 5 % of its CPU in a burst (docs/performance.md).
var defaultTransport http.RoundTripper = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 100
	return t
}()

// HTTPClient returns the client a Google API client sends its requests through: base (nil for
// the client ctx carries under oauth2.HTTPClient, as oauth2.NewClient takes it, or a default
// one) with its transport wrapped by wrap (nil for none), which therefore sees every request
// that reaches Google, and, unless ts is nil, authenticated by ts above that. ts should be a
// caching source (oauth2.ReuseTokenSource): it is asked for a token on every request.
func HTTPClient(ctx context.Context, base *http.Client, ts oauth2.TokenSource, wrap func(http.RoundTripper) http.RoundTripper) *http.Client {
	if base == nil {
		base, _ = ctx.Value(oauth2.HTTPClient).(*http.Client)
	}
	c := &http.Client{}
	if base != nil {
		*c = *base
	}
	tr := c.Transport
	if tr == nil {
		tr = defaultTransport
	}
	if wrap != nil {
		tr = wrap(tr)
	}
	if ts != nil {
		tr = &oauth2.Transport{Source: ts, Base: tr}
	}
	c.Transport = tr
	return c
}

// Client is what every generated Google API client of the adapter is built from.
type Client struct {
	Credentials Credentials
	Scopes      []string
	// Endpoint replaces the API's default base URL (tests, the emulator); empty keeps it.
	Endpoint string
	// HTTPClient, when set, sends the requests as given: no token source is made (tests).
	HTTPClient *http.Client
	// Wrap wraps the transport below the authentication, so that it sees every request that
	// reaches Google (the metrics' round tripper); nil for none.
	Wrap func(http.RoundTripper) http.RoundTripper
	// UserAgent is the product token put first in every request's User-Agent, before the
	// generated client's own ("certprov-adapter/v1.2.3 google-api-go-client/0.5"), so that
	// Google's request logs name the adapter and its version; empty: DefaultUserAgent.
	UserAgent string
}

// DefaultUserAgent is Client.UserAgent when none is given.
const DefaultUserAgent = "certprov-adapter"

// userAgent puts its product token before the User-Agent a request carries. The generated
// clients set their own on every request and take no other once they are given an HTTP client
// (option.WithUserAgent is then ignored), so the token is added on the way out.
type userAgent struct {
	product string
	next    http.RoundTripper
}

func (u userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	r2 := r.Clone(r.Context()) // a RoundTripper must not change the caller's request
	r2.Header.Set("User-Agent", strings.TrimSpace(u.product+" "+r.Header.Get("User-Agent")))
	return u.next.RoundTrip(r2)
}

// Options are the client options of c for a generated client's NewService, and the caching token
// source they authenticate with (nil when none: credentials type none, or an HTTPClient given).
func (c Client) Options(ctx context.Context) ([]option.ClientOption, oauth2.TokenSource, error) {
	var opts []option.ClientOption
	if c.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(c.Endpoint))
	}
	var ts oauth2.TokenSource
	if c.HTTPClient == nil && c.Credentials.Type != None {
		src, err := TokenSource(ctx, c.Credentials, c.Scopes...)
		if err != nil {
			return nil, nil, err
		}
		ts = oauth2.ReuseTokenSource(nil, src)
	}
	product := c.UserAgent
	if product == "" {
		product = DefaultUserAgent
	}
	wrap := func(next http.RoundTripper) http.RoundTripper {
		if c.Wrap != nil {
			next = c.Wrap(next)
		}
		return userAgent{product: product, next: next}
	}
	return append(opts, option.WithHTTPClient(HTTPClient(ctx, c.HTTPClient, ts, wrap))), ts, nil
}
