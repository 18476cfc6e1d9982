package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateVerifiedAccess: a Verified Access profile whose CA connection cannot issue for a
// bare public key is a problem at its caConnection key; one on the built-in CA passes.
func TestValidateVerifiedAccess(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCmd(t, "init-ca", "--dir", filepath.Join(dir, "ca")); code != 0 {
		t.Fatalf("init-ca: %s", stderr)
	}
	const head = `instanceId: a1
customers: [C0abc]
pubsub: {project: p, subscription: s}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal: {type: memory}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  builtin: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}
  corp: {type: webhook, url: "https://ca.example.com/issue"}
verifiedAccess:
  enabled: true
  insecure: true
  endpoint: "http://127.0.0.1:1/"
  profiles:
`
	tests := []struct {
		name     string
		profiles string
		code     int
		want     []string
	}{
		{"built-in CA", `    wifi: {enrollmentDomain: example.com, caConnection: builtin, subject: {commonName: "{{.Signals.SerialNumber}}"}}
`, 0, []string{"OK", "1 Verified Access profiles"}},
		{"CA without the capability", `    wifi: {enrollmentDomain: example.com, caConnection: corp, subject: {commonName: "{{.Signals.SerialNumber}}"}}
`, 1, []string{"verifiedAccess.profiles.wifi.caConnection", `"corp" (type webhook) cannot issue for a public key`}},
		{"template typo", `    wifi: {enrollmentDomain: example.com, caConnection: builtin, subject: {commonName: "{{.Device.SerialNumber}}"}}
`, 1, []string{"verifiedAccess.profiles.wifi.subject.commonName"}},
		{"policy enum", `    wifi:
      enrollmentDomain: example.com
      caConnection: builtin
      subject: {commonName: x}
      policy: {signals: {screenLockSecured: [SCREEN_LOCK_SECURED]}}
`, 1, []string{"verifiedAccess.profiles.wifi.policy.signals.screenLockSecured[0]", "SCREEN_LOCK_SECURED_ENABLED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".yaml")
			if err := os.WriteFile(cfg, []byte(head+tt.profiles), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, stderr := runCmd(t, "validate", "--config", cfg)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", code, tt.code, out, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(out+stderr, w) {
					t.Errorf("output lacks %q:\nstdout %s\nstderr %s", w, out, stderr)
				}
			}
		})
	}
}
