package retryafter

import (
	"net/http"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-5", 0}, {"7", 7 * time.Second}, {"120", 2 * time.Minute}, {" 5 ", 5 * time.Second},
		{"99999999999", Max},
		{now.Add(time.Hour).Format(http.TimeFormat), time.Hour},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{now.Add(90 * 24 * time.Hour).Format(http.TimeFormat), Max},
		{"soon", 0}, {"1.5", 0},
	}
	for _, tc := range tests {
		if got := Parse(tc.in, now); got != tc.want {
			t.Errorf("Parse(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	h := http.Header{}
	h.Set("Retry-After", "42")
	if got := FromHeader(h); got != 42*time.Second {
		t.Errorf("FromHeader = %v", got)
	}
}
