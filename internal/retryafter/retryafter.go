// Package retryafter reads the HTTP Retry-After header, which Google's APIs and every CA protocol
// here use to say when to ask again.
package retryafter

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Max caps a hint: a server asking for more than this is treated as asking for this, and a
// huge number of seconds cannot overflow a Duration.
const Max = 30 * 24 * time.Hour

// Parse reads a Retry-After value, delay-seconds or an HTTP date (RFC 9110 10.2.3), relative to
// now. Zero means no usable hint: absent, unreadable, negative, or a date in the past.
func Parse(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(Max/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), Max)
	}
	return 0
}

// FromHeader is Parse of h's Retry-After against the current time.
func FromHeader(h http.Header) time.Duration {
	return Parse(h.Get("Retry-After"), time.Now())
}
