package ca

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestClassify(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name  string
		err   error
		class Class
		hint  time.Duration
	}{
		{"unclassified is retryable", base, ClassRetryable, 0},
		{"permanent", Permanent(base), ClassPermanent, 0},
		{"permanent wrapped with context", fmt.Errorf("issue: %w", Permanentf("refused %s", "x")), ClassPermanent, 0},
		{"retryable with hint", Retryable(base, 3*time.Second), ClassRetryable, 3 * time.Second},
		{"pending", &PendingError{Ticket: "t", RetryAfter: time.Minute}, ClassPending, time.Minute},
		{"pending wrapped", fmt.Errorf("ca: %w", &PendingError{}), ClassPending, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			class, hint := Classify(tc.err)
			if class != tc.class || hint != tc.hint {
				t.Fatalf("Classify = %s %v, want %s %v", class, hint, tc.class, tc.hint)
			}
			if IsPermanent(tc.err) != (tc.class == ClassPermanent) {
				t.Fatal("IsPermanent disagrees with Classify")
			}
		})
	}
	if Permanent(nil) != nil || Retryable(nil, time.Second) != nil {
		t.Fatal("classifying nil must stay nil")
	}
	if !errors.Is(Permanent(context.Canceled), context.Canceled) {
		t.Fatal("classification hides the cause")
	}
}

type nopConnector struct{ s Settings }

func (nopConnector) Issue(context.Context, *Request) (*Issued, error) { return nil, errors.New("nop") }

func TestRegistry(t *testing.T) {
	Register("test-nop", func(s Settings, env Env) (Connector, error) {
		if s["fail"] == true {
			return nil, errors.New("bad settings")
		}
		return nopConnector{s}, nil
	})
	if _, err := New("test-nop", Settings{}, Env{Name: "c1"}); err != nil {
		t.Fatal(err)
	}
	_, err := New("test-nop", Settings{"fail": true}, Env{Name: "c1"})
	if err == nil || !strings.Contains(err.Error(), `test-nop connector "c1": bad settings`) {
		t.Fatalf("factory error not named: %v", err)
	}
	_, err = New("no-such-type", nil, Env{})
	if err == nil || !strings.Contains(err.Error(), "unsupported") || !strings.Contains(err.Error(), "test-nop") {
		t.Fatalf("unknown type error %v should list known types", err)
	}
}

func TestDecode(t *testing.T) {
	var dst struct {
		URL     string        `mapstructure:"url"`
		Timeout time.Duration `mapstructure:"timeout"`
		TLS     struct {
			CAFile string `mapstructure:"caFile"`
		} `mapstructure:"tls"`
	}
	if err := Decode(Settings{"url": "https://x", "timeout": "45s", "tls": map[string]any{"caFile": "ca.pem"}}, &dst); err != nil {
		t.Fatal(err)
	}
	if dst.URL != "https://x" || dst.Timeout != 45*time.Second || dst.TLS.CAFile != "ca.pem" {
		t.Fatalf("decoded %+v", dst)
	}
	for name, s := range map[string]Settings{
		"unknown key":        {"url": "x", "uri": "y"},
		"unknown nested key": {"tls": map[string]any{"cafile2": "x"}},
		"bad duration":       {"timeout": "soon"},
	} {
		if err := Decode(s, &dst); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := (Env{BaseDir: "/etc/certprov"}).Path("ca.pem"); got != "/etc/certprov/ca.pem" {
		t.Fatalf("Path = %s", got)
	}
	if got := (Env{BaseDir: "/etc/certprov"}).Path("/abs.pem"); got != "/abs.pem" {
		t.Fatalf("Path = %s", got)
	}
}

func TestServerText(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		secrets  []string
		want     string
	}{
		{"one line", "bad\r\nrequest\t here", 0, nil, "bad request here"},
		{"invalid UTF-8", "a\xffb", 0, nil, "a?b"},
		{"bidi override hidden", "ok\u202etxt.exe", 0, nil, "ok txt.exe"},
		{"cut on a rune boundary", "ééé", 3, nil, "é…"},
		{"secret echoed back", "token s3cr3t refused", 0, []string{"s3cr3t", ""}, "token [redacted] refused"},
		{"no limit", strings.Repeat("x", 600), 0, nil, strings.Repeat("x", 600)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ServerText(tc.in, tc.max, tc.secrets...); got != tc.want {
				t.Fatalf("ServerText(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestTruncate: a text within the limit is kept; a longer one is cut on a character boundary so
// that it and the mark fit the limit.
func TestTruncate(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"within", "abc", 3, "abc"},
		{"ascii", "abcdef", 5, "ab..."},
		{"on a boundary", "aééé", 6, "aé..."},
		{"character kept whole", "éééé", 6, "é..."}, // 3 bytes would end inside the second é
		{"no room but the mark", "ééé", 4, "..."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Truncate(tc.in, tc.max, "...")
			if got != tc.want || len(got) > tc.max || !utf8.ValidString(got) {
				t.Fatalf("Truncate(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}
