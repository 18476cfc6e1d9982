package scep

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/cleartext"
)

// The connector refuses to be built with a dynamic challenge URL that would send the NDES
// account's password in clear to another host; `validate` builds every connector, so this is
// also what it reports.
func TestDynamicChallengeCleartext(t *testing.T) {
	dir := t.TempDir()
	settings := func(url string, optOut bool) ca.Settings {
		d := map[string]any{"url": url, "username": `CORP\svc`, "passwordFile": "pw"}
		if optOut {
			d["insecureAllowCleartext"] = true
		}
		return ca.Settings{
			"url":              "https://ndes.example.com/certsrv/mscep/mscep.dll",
			"signerKeyFile":    filepath.Join(dir, "signer.key"),
			"signerCertFile":   filepath.Join(dir, "signer.pem"),
			"dynamicChallenge": d,
		}
	}
	tests := []struct {
		name    string
		url     string
		optOut  bool
		refused bool
	}{
		{"https", "https://ndes.example.com/certsrv/mscep_admin/", false, false},
		{"http to loopback", "http://127.0.0.1:8080/certsrv/mscep_admin/", false, false},
		{"http to localhost", "http://localhost/certsrv/mscep_admin/", false, false},
		{"http to ::1", "http://[::1]:8080/certsrv/mscep_admin/", false, false},
		{"http elsewhere", "http://ndes.example.com/certsrv/mscep_admin/", false, true},
		{"http to a private address", "http://10.1.2.3/certsrv/mscep_admin/", false, true},
		{"http elsewhere, opted out", "http://ndes.example.com/certsrv/mscep_admin/", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			c, err := ca.New(Type, settings(tt.url, tt.optOut), ca.Env{Name: "ndes", Logger: zap.New(core)})
			warnings := logs.FilterField(zap.String("setting", "dynamicChallenge.url")).Len()
			if tt.refused {
				var e *cleartext.Exposure
				if c != nil || !errors.As(err, &e) {
					t.Fatalf("New = %v, %v; want the exposure", c, err)
				}
				for _, want := range []string{`scep connector "ndes": dynamicChallenge.url: `, "plain http", "password", "use https", "dynamicChallenge.insecureAllowCleartext: true"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q lacks %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.optOut]; warnings != want {
				t.Errorf("%d start-up warnings for dynamicChallenge.url, want %d: %+v", warnings, want, logs.All())
			}
		})
	}
}

// Plain http to the SCEP url itself is not a cleartext secret: the challenge travels inside the
// request envelope, encrypted to the CA. It keeps its own warning about the unauthenticated CA.
func TestSCEPURLOverHTTPIsNotRefused(t *testing.T) {
	dir := t.TempDir()
	_, err := ca.New(Type, ca.Settings{
		"url": "http://scep.example.com/scep", "challenge": "s3cret",
		"signerKeyFile": filepath.Join(dir, "signer.key"), "signerCertFile": filepath.Join(dir, "signer.pem"),
	}, ca.Env{Name: "scep", Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
}
