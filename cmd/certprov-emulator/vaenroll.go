package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/extension"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Device presets of va-enroll: what Google reports before --signals changes it.
const (
	presetChromeOS         = "chromeos"
	defaultVAEnrollAdapter = "https://127.0.0.1:8443"
)

// vaEnrollFlags are the parsed flags of va-enroll.
type vaEnrollFlags struct {
	adapter, adapterCA string
	insecureLoopback   bool
	emulatorURL        string
	profile, scope     string
	identity, deviceID string
	key, keyID         string
	caCert             string
	preset, signals    string
	tamper, tamperSPK  bool
	tpm                string
	rawSignatures      bool
	timeout            time.Duration
}

// runVAEnroll plays the Chrome extension once against a running adapter, with the emulator as
// the device and as Google. Exit 0 only for a certificate that chains to --ca-cert and carries the
// simulated key; 1 when the adapter refused or the certificate does not verify; 2 for usage and
// setup errors (bad flags, unreadable files, adapter or emulator unreachable).
func runVAEnroll(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("va-enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f vaEnrollFlags
	fs.StringVar(&f.adapter, "adapter", defaultVAEnrollAdapter, "base URL of the adapter's enrollment API")
	fs.StringVar(&f.adapterCA, "adapter-ca", "", "PEM file with the CA certificate(s) that sign the adapter's TLS certificate (default: system roots)")
	fs.BoolVar(&f.insecureLoopback, "insecure-loopback", false, "skip TLS verification of the adapter; only for a loopback --adapter")
	fs.StringVar(&f.emulatorURL, "emulator", "http://127.0.0.1:8480", "base URL of the emulator")
	fs.StringVar(&f.profile, "profile", "", "enrollment profile name (required)")
	fs.StringVar(&f.scope, "scope", vagoogle.ScopeMachine, "machine or user")
	fs.StringVar(&f.identity, "identity", "", "user scope: the user's e-mail sent to the adapter; both scopes: what the device or user is enrolled as (default example.com / user@example.com)")
	fs.StringVar(&f.deviceID, "device-identity", "", "what the emulator says the device or user is enrolled as, if not --identity (Google refuses the answer: BAD_CHALLENGE)")
	fs.StringVar(&f.key, "key", emulator.KeyRSA, "simulated key type: rsa (RSA-2048) or ecdsa (P-256)")
	fs.StringVar(&f.keyID, "key-id", "", "name of the simulated key, reused if the emulator has it (default: a new key)")
	fs.StringVar(&f.caCert, "ca-cert", "", "PEM file with the CA certificate(s) the issued certificate must chain to (required)")
	fs.StringVar(&f.preset, "device-preset", presetChromeOS, "what Google reports: chromeos (a healthy managed ChromeOS device; enterprise.platformKeys exists on ChromeOS only)")
	fs.StringVar(&f.signals, "signals", "", "JSON merge patch (RFC 7386) over the preset, e.g. '{\"deviceSignals\":{\"diskEncryption\":\"DISK_ENCRYPTION_DISABLED\"}}'; @FILE reads it from a file")
	fs.BoolVar(&f.tamper, "tamper", false, "corrupt the challenge response (Google refuses it)")
	fs.BoolVar(&f.tamperSPK, "tamper-spkac", false, "corrupt only the SPKAC signature (the adapter must refuse it)")
	fs.StringVar(&f.tpm, "tpm", vagoogle.TPM20, "the simulated device's TPM: 2.0 (32-byte SPKAC challenge) or 1.2 (20-byte)")
	fs.BoolVar(&f.rawSignatures, "raw-signatures", false, "ECDSA keys sign with the TPM's raw 64-byte r||s instead of DER")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "overall time limit")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "va-enroll: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	opts, err := f.options()
	if err != nil {
		fmt.Fprintf(stderr, "va-enroll: %v\n", err)
		return exitUsage
	}

	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	res, err := extension.Enroll(ctx, opts)
	return reportEnroll(stdout, stderr, f, res, err)
}

// options validates the flags and turns them into Enroll options.
func (f vaEnrollFlags) options() (extension.EnrollOptions, error) {
	var o extension.EnrollOptions
	switch {
	case f.profile == "":
		return o, errors.New("--profile is required")
	case f.caCert == "":
		return o, errors.New("--ca-cert is required")
	case f.scope != vagoogle.ScopeMachine && f.scope != vagoogle.ScopeUser:
		return o, fmt.Errorf("--scope %q: want machine or user", f.scope)
	case f.key != emulator.KeyRSA && f.key != emulator.KeyECDSA:
		return o, fmt.Errorf("--key %q: want rsa or ecdsa", f.key)
	case f.adapterCA != "" && f.insecureLoopback:
		return o, errors.New("--adapter-ca and --insecure-loopback exclude each other")
	case f.timeout <= 0:
		return o, errors.New("--timeout must be positive")
	case f.tpm != vagoogle.TPM12 && f.tpm != vagoogle.TPM20:
		return o, fmt.Errorf("--tpm %q: want %s or %s", f.tpm, vagoogle.TPM20, vagoogle.TPM12)
	}
	caPEM, err := os.ReadFile(f.caCert)
	if err != nil {
		return o, fmt.Errorf("--ca-cert: %w", err)
	}
	if o.Roots, o.Intermediates, err = emulator.CertPoolFromPEM(caPEM); err != nil {
		return o, fmt.Errorf("--ca-cert %s: %w", f.caCert, err)
	}
	if o.AdapterClient, err = f.adapterClient(); err != nil {
		return o, err
	}
	if _, err := url.Parse(f.emulatorURL); err != nil {
		return o, fmt.Errorf("--emulator: %w", err)
	}
	o.AdapterURL, o.EmulatorURL = f.adapter, f.emulatorURL
	o.EmulatorClient = &http.Client{Timeout: f.timeout}
	o.Profile, o.Scope, o.Identity, o.DeviceIdentity = f.profile, f.scope, f.identity, f.deviceID
	o.KeyType, o.KeyID, o.Tamper, o.TamperSPKAC = f.key, f.keyID, f.tamper, f.tamperSPK
	o.TPMVersion, o.RawSignatures = f.tpm, f.rawSignatures
	if o.Device, o.KeyID, err = f.device(); err != nil {
		return o, err
	}
	return o, nil
}

// device builds what Google should report, or nil for the emulator's default. The presets derive
// ids from the key id, so a key id is made up here when none was given: the ids then match the
// key the emulator creates under that name.
func (f vaEnrollFlags) device() (*vagoogle.Device, string, error) {
	keyID := f.keyID
	if f.preset == presetChromeOS && f.signals == "" {
		return nil, keyID, nil
	}
	if keyID == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, "", fmt.Errorf("key id: %w", err)
		}
		keyID = "va-enroll-" + hex.EncodeToString(b[:])
	}
	identity := f.deviceID
	if identity == "" {
		identity = f.identity
	}
	if identity == "" {
		identity = vagoogle.DefaultDomain
		if f.scope == vagoogle.ScopeUser {
			identity = vagoogle.DefaultUser
		}
	}
	var d vagoogle.Device
	switch f.preset {
	case presetChromeOS:
		d = vagoogle.DefaultDevice(f.scope, keyID, identity)
	default:
		return nil, "", fmt.Errorf("--device-preset %q: want %s", f.preset, presetChromeOS)
	}
	if f.signals != "" {
		patch := []byte(f.signals)
		if name, ok := strings.CutPrefix(f.signals, "@"); ok {
			var err error
			if patch, err = os.ReadFile(name); err != nil {
				return nil, "", fmt.Errorf("--signals: %w", err)
			}
		}
		var err error
		if d, err = vagoogle.PatchDevice(d, patch); err != nil {
			return nil, "", fmt.Errorf("--signals: %w", err)
		}
	}
	return &d, keyID, nil
}

// adapterClient trusts --adapter-ca, or skips verification for a loopback adapter with
// --insecure-loopback, or uses the system roots.
func (f vaEnrollFlags) adapterClient() (*http.Client, error) {
	u, err := url.Parse(f.adapter)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--adapter %q: want a URL such as %s", f.adapter, defaultVAEnrollAdapter)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case f.adapterCA != "":
		certs, err := pemutil.ReadCertificates(f.adapterCA)
		if err != nil {
			return nil, fmt.Errorf("--adapter-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		for _, c := range certs {
			cfg.RootCAs.AddCert(c)
		}
	case f.insecureLoopback:
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("--insecure-loopback: %s is not a loopback address", host)
		}
		cfg.InsecureSkipVerify = true // loopback only: the traffic never leaves the machine
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr, Timeout: f.timeout}, nil
}

// reportEnroll prints the outcome and returns the exit code.
func reportEnroll(stdout, stderr io.Writer, f vaEnrollFlags, res *extension.EnrollResult, err error) int {
	var aerr *extension.AdapterError
	var uerr *url.Error
	switch {
	case err == nil:
		c := res.Certificate
		fmt.Fprintf(stdout, "issued    %s\n", cell(c.Subject.String()))
		fmt.Fprintf(stdout, "serial    %s\n", hex.EncodeToString(c.SerialNumber.Bytes()))
		fmt.Fprintf(stdout, "issuer    %s\n", cell(c.Issuer.String()))
		fmt.Fprintf(stdout, "valid     %s to %s\n", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
		fmt.Fprintf(stdout, "key       %s %s (spki sha256 %s)\n", res.KeyType, cell(res.KeyID), spkiFingerprint(res.SPKI))
		fmt.Fprintf(stdout, "verified  chains to %s; carries the simulated key (API %s, profile %s, scope %s)\n",
			cell(res.Verified[len(res.Verified)-1].Subject.String()), res.APIVersion, cell(f.profile), f.scope)
		return exitOK
	case errors.As(err, &aerr):
		code := string(aerr.Code)
		if code == "" {
			code = "(no error code)"
		}
		fmt.Fprintf(stdout, "refused   %s at %s (HTTP %d): %s\n", cell(code), aerr.Step, aerr.Status, cell(aerr.Message))
		for _, r := range aerr.FailedRules {
			fmt.Fprintf(stdout, "rule      %s\n", cell(r))
		}
		return exitFail
	case errors.Is(err, extension.ErrCertificateNotVerified):
		if res != nil && res.Certificate != nil {
			fmt.Fprintf(stdout, "issued    %s\n", cell(res.Certificate.Subject.String()))
			fmt.Fprintf(stdout, "serial    %s\n", hex.EncodeToString(res.Certificate.SerialNumber.Bytes()))
		}
		fmt.Fprintf(stdout, "invalid   %s\n", cell(err.Error()))
		return exitFail
	case errors.As(err, &uerr):
		fmt.Fprintf(stderr, "va-enroll: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "va-enroll: %v\n", err)
		return exitFail
	}
}

func spkiFingerprint(spki []byte) string {
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:8])
}
