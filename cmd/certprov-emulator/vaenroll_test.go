package main

import (
	"context"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/standin"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// vaSetup is an emulator and a stand-in adapter (TLS) whose policy requires an encrypted disk on
// v2 profiles; profiles "machine-v1" (v1) and "wifi" (v2), domain example.com.
type vaSetup struct {
	emuURL, adapterURL string
	adapterCAFile      string
	caFile             string
	emu                *emulator.Emulator
}

func newVASetup(t *testing.T, deny []string) *vaSetup {
	t.Helper()
	ctx := context.Background()
	emu, err := emulator.New(ctx, emulator.Options{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	emuSrv := httptest.NewServer(emu.Handler())
	t.Cleanup(emuSrv.Close)
	t.Cleanup(func() { _ = emu.Close() })
	ca := newTestCA(t)
	fake := &standin.Adapter{
		GoogleURL: emuSrv.URL, CACert: ca.Cert, CAKey: ca.Key, Deny: deny,
		Profiles: map[string]standin.Profile{
			"machine-v1": {APIVersion: vagoogle.V1, Domain: vagoogle.DefaultDomain},
			"wifi":       {APIVersion: vagoogle.V2, Domain: vagoogle.DefaultDomain},
		},
		Policy: func(d vagoogle.Device) []string {
			if d.DeviceSignals != nil && d.DeviceSignals.DiskEncryption != "DISK_ENCRYPTION_ENCRYPTED" {
				return []string{"diskEncryption"}
			}
			return nil
		},
	}
	h, err := fake.Handler(ctx)
	if err != nil {
		t.Fatal(err)
	}
	adapter := httptest.NewUnstartedServer(h)
	adapter.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted-certificate case logs handshake errors
	adapter.StartTLS()
	t.Cleanup(adapter.Close)
	adapterCA := filepath.Join(t.TempDir(), "adapter-ca.pem")
	if err := os.WriteFile(adapterCA, pemutil.Encode(adapter.Certificate()), 0o600); err != nil {
		t.Fatal(err)
	}
	return &vaSetup{emuURL: emuSrv.URL, adapterURL: adapter.URL, adapterCAFile: adapterCA,
		caFile: ca.writeFile(t), emu: emu}
}

func TestVAEnroll(t *testing.T) {
	t.Parallel()
	s := newVASetup(t, nil)
	denied := newVASetup(t, []string{"osVersion", "keyTrustLevel"})
	otherCA := newTestCA(t).writeFile(t)
	patchFile := filepath.Join(t.TempDir(), "signals.json")
	if err := os.WriteFile(patchFile, []byte(`{"deviceSignals":{"diskEncryption":"DISK_ENCRYPTION_UNKNOWN"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		setup    *vaSetup
		args     []string // after the common --adapter/--emulator/--ca-cert/--adapter-ca
		noTrust  bool     // leave out --adapter-ca
		caFile   string
		wantCode int
		wantOut  []string // regular expressions on stdout
	}{
		{name: "v2 machine ecdsa", args: []string{"--profile", "wifi", "--key", "ecdsa"}, wantCode: exitOK,
			wantOut: []string{`(?m)^issued    CN=[0-9A-Z]{10}$`, `(?m)^serial    [0-9a-f]+$`, `(?m)^key       ecdsa key-[0-9a-f]+ `,
				`(?m)^verified  chains to CN=Provision CA,O=certprov catest; carries the simulated key \(API v2, profile wifi, scope machine\)$`}},
		{name: "v1 user rsa over insecure loopback", noTrust: true,
			args:     []string{"--insecure-loopback", "--profile", "machine-v1", "--scope", "user", "--identity", "alice@example.com"},
			wantCode: exitOK, wantOut: []string{`(?m)^issued    CN=alice@example\.com$`, `API v1`}},
		{name: "TPM 1.2 device with raw ECDSA signatures", args: []string{"--profile", "wifi", "--scope", "user", "--key", "ecdsa",
			"--identity", "bob@example.com", "--tpm", "1.2", "--raw-signatures", "--key-id", "bob-tpm12"},
			wantCode: exitOK, wantOut: []string{`(?m)^issued    CN=bob@example\.com$`, `(?m)^key       ecdsa bob-tpm12 `}},
		{name: "signals patch fails the policy", args: []string{"--profile", "wifi", "--key", "ecdsa",
			"--signals", `{"deviceSignals":{"diskEncryption":"DISK_ENCRYPTION_DISABLED"}}`},
			wantCode: exitFail, wantOut: []string{`(?m)^refused   POLICY_DENIED at enroll \(HTTP 403\): `, `(?m)^rule      diskEncryption$`}},
		{name: "signals patch from a file", args: []string{"--profile", "wifi", "--key", "ecdsa", "--signals", "@" + patchFile},
			wantCode: exitFail, wantOut: []string{`(?m)^rule      diskEncryption$`}},
		{name: "every failing rule listed", setup: denied, args: []string{"--profile", "wifi", "--key", "ecdsa"},
			wantCode: exitFail, wantOut: []string{`(?m)^rule      osVersion$`, `(?m)^rule      keyTrustLevel$`}},
		{name: "identity mismatch", args: []string{"--profile", "machine-v1", "--key", "ecdsa", "--device-identity", "other.example"},
			wantCode: exitFail, wantOut: []string{`(?m)^refused   BAD_CHALLENGE at enroll \(HTTP 400\)`}},
		{name: "tampered response", args: []string{"--profile", "wifi", "--key", "ecdsa", "--tamper"},
			wantCode: exitFail, wantOut: []string{`(?m)^refused   BAD_CHALLENGE at enroll \(HTTP 400\)`}},
		{name: "tampered SPKAC", args: []string{"--profile", "machine-v1", "--key", "ecdsa", "--tamper-spkac"},
			wantCode: exitFail, wantOut: []string{`BAD_CHALLENGE`}},
		{name: "unknown profile", args: []string{"--profile", "nope"},
			wantCode: exitFail, wantOut: []string{`(?m)^refused   UNKNOWN_PROFILE at challenge \(HTTP 404\)`}},
		{name: "certificate from another CA", caFile: otherCA, args: []string{"--profile", "wifi", "--key", "ecdsa"},
			wantCode: exitFail, wantOut: []string{`(?m)^issued    CN=`, `(?m)^invalid   .*chain`}},
		{name: "adapter certificate not trusted", noTrust: true, args: []string{"--profile", "wifi"}, wantCode: exitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			setup := tc.setup
			if setup == nil {
				setup = s
			}
			caFile := tc.caFile
			if caFile == "" {
				caFile = setup.caFile
			}
			args := []string{"va-enroll", "--adapter", setup.adapterURL, "--emulator", setup.emuURL, "--ca-cert", caFile}
			if !tc.noTrust {
				args = append(args, "--adapter-ca", setup.adapterCAFile)
			}
			var out, errOut syncBuffer
			code := run(context.Background(), append(args, tc.args...), &out, &errOut)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, out.String(), errOut.String())
			}
			for _, re := range tc.wantOut {
				if !regexp.MustCompile(re).MatchString(out.String()) {
					t.Errorf("stdout lacks %s:\n%s", re, out.String())
				}
			}
		})
	}
}

func TestVAEnrollUsage(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t).writeFile(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	tests := []struct {
		name string
		args []string
	}{
		{name: "no profile", args: []string{"--ca-cert", ca}},
		{name: "no ca-cert", args: []string{"--profile", "p"}},
		{name: "unreadable ca-cert", args: []string{"--profile", "p", "--ca-cert", "/nonexistent/ca.pem"}},
		{name: "both trust flags", args: []string{"--profile", "p", "--ca-cert", ca, "--adapter-ca", ca, "--insecure-loopback"}},
		{name: "insecure to a remote host", args: []string{"--profile", "p", "--ca-cert", ca, "--insecure-loopback",
			"--adapter", "https://adapter.example.com:8443"}},
		{name: "bad scope", args: []string{"--profile", "p", "--ca-cert", ca, "--scope", "device"}},
		{name: "bad key", args: []string{"--profile", "p", "--ca-cert", ca, "--key", "dsa"}},
		{name: "bad preset", args: []string{"--profile", "p", "--ca-cert", ca, "--device-preset", "android"}},
		{name: "misspelt signal", args: []string{"--profile", "p", "--ca-cert", ca, "--signals", `{"deviceSignal":{}}`}},
		{name: "signals not json", args: []string{"--profile", "p", "--ca-cert", ca, "--signals", `{`}},
		{name: "unknown flag", args: []string{"--profile", "p", "--ca-cert", ca, "--frobnicate"}},
		{name: "extra argument", args: []string{"--profile", "p", "--ca-cert", ca, "extra"}},
		{name: "adapter unreachable", args: []string{"--profile", "p", "--ca-cert", ca, "--adapter", closed}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut syncBuffer
			if code := run(context.Background(), append([]string{"va-enroll"}, tc.args...), &out, &errOut); code != exitUsage {
				t.Errorf("exit %d, want %d; stdout %q stderr %q", code, exitUsage, out.String(), errOut.String())
			}
			if strings.Contains(out.String(), "issued") {
				t.Errorf("printed an outcome: %s", out.String())
			}
		})
	}
}

// The presets derive device ids from the key id, so a made-up key id and the patched device
// must agree with what the emulator would report for that key.
func TestVAEnrollDevice(t *testing.T) {
	t.Parallel()
	f := vaEnrollFlags{scope: vagoogle.ScopeMachine, preset: presetChromeOS,
		signals: `{"deviceSignals":{"osFirewall":"OS_FIREWALL_DISABLED"},"keyTrustLevel":null}`}
	d, keyID, err := f.device()
	if err != nil {
		t.Fatal(err)
	}
	want := vagoogle.DefaultDevice(vagoogle.ScopeMachine, keyID, vagoogle.DefaultDomain)
	if keyID == "" || d.DevicePermanentID != want.DevicePermanentID || d.KeyTrustLevel != "" ||
		d.DeviceSignals.OsFirewall != "OS_FIREWALL_DISABLED" || d.DeviceSignals.DiskEncryption != want.DeviceSignals.DiskEncryption {
		t.Errorf("device %+v (key id %q)", d, keyID)
	}
	if d, id, err := (vaEnrollFlags{preset: presetChromeOS, keyID: "k"}).device(); err != nil || d != nil || id != "k" {
		t.Errorf("default preset without signals: %+v %q %v, want the emulator's default", d, id, err)
	}
}
