package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The Google APIs, as values of the api label.
const (
	APIChromeManagement = "chromemanagement"
	APIVerifiedAccess   = "verifiedaccess"
)

// Codes of a Google API call that got no HTTP answer.
const (
	CodeTimeout  = "timeout"  // the call's deadline passed
	CodeCanceled = "canceled" // the caller gave up (a stop, a lost lease)
	CodeError    = "error"    // no answer: connection refused, TLS, DNS, …
)

// MethodOther names a request that matches no method an API client knows.
const MethodOther = "other"

// GoogleAPI is the metrics of the calls to Google's APIs.
type GoogleAPI struct {
	// Requests counts HTTP requests sent to Google by API, method and code: the HTTP status,
	// or timeout, canceled or error when no answer came.
	Requests *prometheus.CounterVec
	// RequestDuration is the time to Google's answer (its headers), by API and method.
	RequestDuration *prometheus.HistogramVec
	// RateLimitWait is the time a call waited for the client-side rate limit, by API.
	RateLimitWait *prometheus.HistogramVec
}

// NewGoogleAPI returns the Google API metrics, registered on reg.
func NewGoogleAPI(reg prometheus.Registerer) *GoogleAPI {
	return &GoogleAPI{
		Requests: counterVec(reg, "google_api_requests_total",
			"HTTP requests to Google APIs, by API, method and code (HTTP status, or timeout, canceled, error).", "api", "method", "code"),
		RequestDuration: histogramVec(reg, "google_api_request_duration_seconds",
			"Time to the answer of a Google API request, by API and method.", callBuckets, "api", "method"),
		RateLimitWait: histogramVec(reg, "google_api_rate_limit_wait_seconds",
			"Time a Google API call waited for the client-side rate limit (google.rateLimit), by API.", waitBuckets, "api"),
	}
}

// RoundTripper counts the requests next sends for api, each named by method (which must return
// one of a fixed set of names, MethodOther for anything else). It sits below authentication,
// so that it counts what reaches Google, once per HTTP request, retries included.
func (m *GoogleAPI) RoundTripper(api string, method func(*http.Request) string, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &googleRoundTripper{m: m, api: api, method: method, next: next}
}

// RateLimited records that a call to api waited d for the rate limit.
func (m *GoogleAPI) RateLimited(api string, d time.Duration) {
	m.RateLimitWait.WithLabelValues(api).Observe(max(d, 0).Seconds())
}

type googleRoundTripper struct {
	m      *GoogleAPI
	api    string
	method func(*http.Request) string
	next   http.RoundTripper
}

func (t *googleRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	method := t.method(req)
	t.m.Requests.WithLabelValues(t.api, method, callCode(req.Context(), resp, err)).Inc()
	t.m.RequestDuration.WithLabelValues(t.api, method).Observe(time.Since(start).Seconds())
	return resp, err
}

// callCode normalises a round trip's outcome to a bounded code.
func callCode(ctx context.Context, resp *http.Response, err error) string {
	if err == nil {
		if resp.StatusCode < 100 || resp.StatusCode > 599 {
			return CodeError
		}
		return strconv.Itoa(resp.StatusCode)
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return CodeTimeout
	case errors.Is(err, context.Canceled), ctx.Err() != nil:
		return CodeCanceled
	default:
		return CodeError
	}
}
