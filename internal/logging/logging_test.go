package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestNew(t *testing.T) {
	for _, format := range []string{FormatJSON, FormatConsole} {
		for _, level := range []string{LevelDebug, LevelInfo, LevelWarn, LevelError} {
			log, err := New(level, format)
			if err != nil {
				t.Errorf("New(%q, %q): %v", level, format, err)
				continue
			}
			if log == nil {
				t.Errorf("New(%q, %q) returned nil", level, format)
			}
		}
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct{ level, format, want string }{
		{"verbose", FormatJSON, `log level "verbose"`},
		{"fatal", FormatJSON, `log level "fatal"`},
		{"", FormatJSON, `log level ""`},
		{"INFO", FormatJSON, `log level "INFO"`},
		{LevelInfo, "text", `log format "text"`},
		{LevelInfo, "", `log format ""`},
	}
	for _, tt := range tests {
		if _, err := New(tt.level, tt.format); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q, %q) = %v; want an error containing %q", tt.level, tt.format, err, tt.want)
		}
	}
}

// capture builds a logger writing into a buffer.
func capture(t *testing.T, level, format string) (*zap.Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	log, _, err := build(level, format, zapcore.AddSync(&buf))
	if err != nil {
		t.Fatal(err)
	}
	return log, &buf
}

// A reload changes the level of the running logger; an unknown level changes nothing.
func TestLevelSet(t *testing.T) {
	var buf bytes.Buffer
	log, lvl, err := build(LevelWarn, FormatJSON, zapcore.AddSync(&buf))
	if err != nil {
		t.Fatal(err)
	}
	log.Info("before")
	if err := lvl.Set(LevelDebug); err != nil {
		t.Fatal(err)
	}
	log.Debug("after")
	if err := lvl.Set("fatal"); err == nil || lvl.String() != LevelDebug {
		t.Fatalf("Set(fatal) = %v, level %s", err, lvl)
	}
	if out := buf.String(); strings.Contains(out, "before") || !strings.Contains(out, "after") {
		t.Fatalf("output %q", out)
	}
}

var iso8601 = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{4})$`)

func TestJSONFormat(t *testing.T) {
	log, buf := capture(t, LevelInfo, FormatJSON)
	log.Debug("hidden")
	log.Info("claimed", zap.String("process", "customers/C0demo/certificateProvisioningProcesses/AB"))
	_ = log.Sync()

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line (debug filtered), got %q", buf.String())
	}
	var entry map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &entry); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	if entry["level"] != "info" || entry["msg"] != "claimed" || entry["process"] == nil || entry["caller"] == nil {
		t.Errorf("entry %v", entry)
	}
	ts, _ := entry["ts"].(string)
	if !iso8601.MatchString(ts) {
		t.Errorf("ts %q is not ISO 8601", ts)
	}
}

func TestConsoleFormat(t *testing.T) {
	log, buf := capture(t, LevelDebug, FormatConsole)
	log.Debug("polling", zap.Int("attempt", 2))
	log.DPanic("must not panic outside development")
	_ = log.Sync()
	out := buf.String()
	for _, want := range []string{"DEBUG", "polling", `"attempt": 2`, "DPANIC"} {
		if !strings.Contains(out, want) {
			t.Errorf("console output lacks %q:\n%s", want, out)
		}
	}
	if strings.HasPrefix(strings.TrimSpace(out), "{") {
		t.Errorf("console output looks like JSON:\n%s", out)
	}
}

func TestNoSampling(t *testing.T) {
	log, buf := capture(t, LevelInfo, FormatJSON)
	for range 500 {
		log.Info("uploaded")
	}
	_ = log.Sync()
	if n := strings.Count(buf.String(), "\n"); n != 500 {
		t.Errorf("%d lines; want 500 (audit events must not be sampled)", n)
	}
}

const secret = "hunter2-do-not-log"

func TestSecretFmt(t *testing.T) {
	s := Secret(secret)
	for _, verb := range []string{"%s", "%v", "%+v", "%#v", "%q", "%x", "%X", "%d", "%10s"} {
		if out := fmt.Sprintf(verb, s); strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", secret)) {
			t.Errorf("%s leaks: %s", verb, out)
		}
	}
	type creds struct {
		User     string
		Password Secret
	}
	if out := fmt.Sprintf("%+v %#v", creds{"u", s}, creds{"u", s}); strings.Contains(out, secret) {
		t.Errorf("struct leaks: %s", out)
	}
	if got := fmt.Sprint(s); got != Redacted {
		t.Errorf("Sprint = %q", got)
	}
	if got := fmt.Errorf("login with %v: %w", s, errors.New("denied")).Error(); strings.Contains(got, secret) {
		t.Errorf("error leaks: %s", got)
	}
	if s.Reveal() != secret {
		t.Errorf("Reveal = %q", s.Reveal())
	}
}

func TestSecretJSON(t *testing.T) {
	type creds struct {
		Password Secret `json:"password"`
	}
	b, err := json.Marshal(creds{Password: secret})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), secret) || !strings.Contains(string(b), `"password":"[redacted]"`) {
		t.Errorf("JSON: %s", b)
	}
	var back struct{ Password Secret }
	if err := json.Unmarshal([]byte(`{"Password":"pw"}`), &back); err != nil || back.Password.Reveal() != "pw" {
		t.Errorf("decoding a Secret: %v %q", err, back.Password.Reveal())
	}
}

func TestSecretZap(t *testing.T) {
	type creds struct {
		User     string `json:"user"`
		Password Secret `json:"password"`
	}
	for _, format := range []string{FormatJSON, FormatConsole} {
		log, buf := capture(t, LevelDebug, format)
		s := Secret(secret)
		log.Info("connect",
			zap.Any("any", s),
			zap.Stringer("stringer", s),
			zap.Reflect("reflect", s),
			zap.Any("struct", creds{User: "u", Password: s}),
			zap.Any("pointer", &s),
			zap.Any("slice", []Secret{s}),
		)
		_ = log.Sync()
		out := buf.String()
		if strings.Contains(out, secret) {
			t.Errorf("%s output leaks the secret:\n%s", format, out)
		}
		if n := strings.Count(out, Redacted); n < 6 {
			t.Errorf("%s output has %d redactions; want 6:\n%s", format, n, out)
		}
	}
}

func TestSecretSlog(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "pw", Secret(secret))
	if strings.Contains(buf.String(), secret) || !strings.Contains(buf.String(), Redacted) {
		t.Errorf("slog: %s", buf.String())
	}
}
