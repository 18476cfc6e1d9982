package retryafter

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParse: any header value gives a hint within [0, Max]; a positive number of seconds is
// that many seconds (capped), and an HTTP date in the future is the time until it (capped).
func FuzzParse(f *testing.F) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, s := range []string{"", "0", "7", " 120 ", "-5", "+3", "99999999999999999999", "1.5", "soon",
		now.Add(time.Hour).Format(http.TimeFormat), "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := Parse(v, now)
		if got < 0 || got > Max {
			t.Fatalf("Parse(%q) = %v, outside [0, %v]", v, got, Max)
		}
		if secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			want := time.Duration(0)
			if secs > 0 {
				want = min(time.Duration(min(secs, int64(Max/time.Second)))*time.Second, Max)
			}
			if got != want {
				t.Fatalf("Parse(%q) = %v, want %v", v, got, want)
			}
			return
		}
		if at, err := http.ParseTime(strings.TrimSpace(v)); err == nil {
			want := time.Duration(0)
			if at.After(now) {
				want = min(at.Sub(now), Max)
			}
			if got != want {
				t.Fatalf("Parse(%q) = %v, want %v (date %v)", v, got, want, at)
			}
		} else if got != 0 {
			t.Fatalf("Parse(%q) = %v for a value that is neither seconds nor a date", v, got)
		}
	})
}
