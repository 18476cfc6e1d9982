// Package extension plays the Chrome extension's part of a Verified Access enrollment against
// the adapter's enrollment API: it asks for a challenge, has the emulator's device answer it as
// enterprise.platformKeys.challengeKey would, enrolls, and verifies the certificate it gets
// (certprov-emulator va-enroll, the demo, the end-to-end tests). The emulator is Google's side;
// this is the client's.
package extension

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// AdapterError is a refusal by the adapter's enrollment API: its HTTP status and error envelope.
// Code is empty when the answer was not the adapter's JSON envelope (a proxy error page, say).
type AdapterError struct {
	Step        string // "challenge" or "enroll"
	Status      int
	Code        wire.Code
	Message     string
	FailedRules []string
}

func (e *AdapterError) Error() string {
	s := fmt.Sprintf("adapter refused %s: HTTP %d", e.Step, e.Status)
	if e.Code != "" {
		s += " " + string(e.Code)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if len(e.FailedRules) > 0 {
		s += " (failed rules: " + strings.Join(e.FailedRules, ", ") + ")"
	}
	return s
}

// ErrCertificateNotVerified is wrapped by Enroll's error when the adapter issued a certificate
// that does not chain to the given roots or does not carry the simulated key.
var ErrCertificateNotVerified = errors.New("issued certificate not verified")

// EnrollOptions configure Enroll, the reference client.
type EnrollOptions struct {
	AdapterURL    string       // base URL of the adapter's enrollment API, e.g. https://127.0.0.1:8443
	AdapterClient *http.Client // carries the TLS trust for the adapter; nil means http.DefaultClient
	EmulatorURL   string       // base URL of the emulator, e.g. http://127.0.0.1:8480
	// EmulatorClient calls the emulator's respond endpoint; nil means http.DefaultClient.
	EmulatorClient *http.Client

	Profile string // enrollment profile name
	Scope   string // vagoogle.ScopeMachine (default) or vagoogle.ScopeUser
	// Identity is, for user scope, the e-mail sent to the adapter (the expected identity);
	// for both scopes it is what the simulated device or user is enrolled as, unless
	// DeviceIdentity says otherwise. Empty means vagoogle.DefaultDomain or vagoogle.DefaultUser.
	Identity string
	// DeviceIdentity overrides what the emulator says the device or user is enrolled as, to
	// provoke an identity mismatch.
	DeviceIdentity string

	KeyType string           // emulator.KeyRSA (default) or emulator.KeyECDSA
	KeyID   string           // reuse or name the simulated key; empty creates a fresh one
	Device  *vagoogle.Device // what Google reports; nil means the emulator's default device

	Tamper      bool // corrupt the challenge response (Google refuses it)
	TamperSPKAC bool // corrupt only the SPKAC (the adapter must refuse it)
	// TPMVersion and RawSignatures shape the device's answer (vagoogle.RespondRequest).
	TPMVersion    string
	RawSignatures bool

	// Roots and Intermediates verify the issued certificate; Roots is required. Certificates in
	// the adapter's chain are used as further intermediates.
	Roots, Intermediates *x509.CertPool
}

// EnrollResult is a verified enrollment, or with ErrCertificateNotVerified the certificate that
// failed verification.
type EnrollResult struct {
	APIVersion      string
	KeyID, KeyType  string
	SPKI            []byte // the simulated key
	PrivateKeyPKCS8 []byte

	Certificate    *x509.Certificate
	CertificatePEM string
	Chain          []*x509.Certificate // as the adapter returned it
	Verified       []*x509.Certificate // the verified path, leaf to root; nil when not verified
}

// Enroll plays the Chrome extension against the adapter's enrollment API, with the emulator as
// the device: it asks the adapter for a challenge, has the emulator answer it as
// enterprise.platformKeys.challengeKey would, sends the response to the adapter's enroll call,
// and verifies that the certificate chains to opts.Roots and carries the simulated key's SPKI.
//
// A refusal by the adapter is an *AdapterError (wrapped); a certificate that does not verify is
// ErrCertificateNotVerified (wrapped), returned together with the result so that callers can
// show what was issued.
func Enroll(ctx context.Context, opts EnrollOptions) (*EnrollResult, error) {
	if opts.Roots == nil {
		return nil, errors.New("enroll: no roots to verify the certificate against")
	}
	if opts.Profile == "" {
		return nil, errors.New("enroll: no profile")
	}
	scope := opts.Scope
	if scope == "" {
		scope = vagoogle.ScopeMachine
	}
	if scope != vagoogle.ScopeMachine && scope != vagoogle.ScopeUser {
		return nil, fmt.Errorf("enroll: scope %q: want %q or %q", scope, vagoogle.ScopeMachine, vagoogle.ScopeUser)
	}
	identity := opts.Identity
	if identity == "" && scope == vagoogle.ScopeUser {
		identity = vagoogle.DefaultUser
	}
	deviceIdentity := opts.DeviceIdentity
	if deviceIdentity == "" {
		deviceIdentity = identity
	}
	adapter := strings.TrimRight(opts.AdapterURL, "/")
	emuURL := strings.TrimRight(opts.EmulatorURL, "/")

	var ch wire.ChallengeResponse
	if err := postJSON(ctx, opts.AdapterClient, adapter+wire.ChallengePath, "challenge",
		wire.ChallengeRequest{Profile: opts.Profile}, &ch, adapterRefusal); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	challenge, err := base64.StdEncoding.DecodeString(ch.Challenge)
	if err != nil || len(challenge) == 0 {
		return nil, fmt.Errorf("enroll: adapter challenge is not base64: %q", ch.Challenge)
	}
	if ch.APIVersion != vagoogle.V1 && ch.APIVersion != vagoogle.V2 {
		return nil, fmt.Errorf("enroll: adapter challenge for API version %q, want v1 or v2", ch.APIVersion)
	}

	var resp vagoogle.RespondResult
	if err := postJSON(ctx, opts.EmulatorClient, emuURL+vagoogle.RespondPath, "respond", vagoogle.RespondRequest{
		Challenge: challenge, APIVersion: ch.APIVersion, Scope: scope, KeyType: opts.KeyType, KeyID: opts.KeyID,
		Identity: deviceIdentity, Device: opts.Device, Tamper: opts.Tamper, TamperSPKAC: opts.TamperSPKAC,
		TPMVersion: opts.TPMVersion, RawSignatures: opts.RawSignatures,
	}, &resp, emulatorRefusal); err != nil {
		return nil, fmt.Errorf("enroll: emulator: %w", err)
	}
	res := &EnrollResult{APIVersion: ch.APIVersion, KeyID: resp.KeyID, KeyType: resp.KeyType,
		SPKI: resp.SPKI, PrivateKeyPKCS8: resp.PrivateKeyPKCS8}

	req := wire.EnrollRequest{Profile: opts.Profile, Scope: scope,
		ChallengeResponse: base64.StdEncoding.EncodeToString(resp.ChallengeResponse)}
	if scope == vagoogle.ScopeUser {
		req.Identity = identity
	}
	var issued wire.EnrollResponse
	if err := postJSON(ctx, opts.AdapterClient, adapter+wire.EnrollPath, "enroll", req, &issued, adapterRefusal); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}

	leaf, err := pemutil.ParseCertificates([]byte(issued.Certificate))
	if err == nil && len(leaf) != 1 {
		err = fmt.Errorf("%d certificates, want the leaf alone", len(leaf))
	}
	if err != nil {
		return nil, fmt.Errorf("enroll: %w: certificate: %v", ErrCertificateNotVerified, err)
	}
	res.Certificate = leaf[0]
	res.CertificatePEM = issued.Certificate
	for i, p := range issued.Chain {
		certs, err := pemutil.ParseCertificates([]byte(p))
		if err != nil {
			return res, fmt.Errorf("enroll: %w: chain[%d]: %v", ErrCertificateNotVerified, i, err)
		}
		res.Chain = append(res.Chain, certs...)
	}
	if err := res.verify(opts.Roots, opts.Intermediates); err != nil {
		return res, fmt.Errorf("enroll: %w: %v", ErrCertificateNotVerified, err)
	}
	return res, nil
}

// verify checks the leaf against the simulated key and the roots, and records the path.
func (r *EnrollResult) verify(roots, intermediates *x509.CertPool) error {
	if !bytes.Equal(r.Certificate.RawSubjectPublicKeyInfo, r.SPKI) {
		return errors.New("the certificate's public key is not the simulated key")
	}
	pool := x509.NewCertPool()
	if intermediates != nil {
		pool = intermediates.Clone()
	}
	for _, c := range r.Chain {
		pool.AddCert(c)
	}
	chains, err := r.Certificate.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: pool, CurrentTime: time.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("chain: %w", err)
	}
	r.Verified = chains[0]
	return nil
}

// postJSON posts v as JSON and decodes a 200 answer into out; refusal turns any other status and
// its body into the error.
func postJSON(ctx context.Context, client *http.Client, url, step string, v, out any,
	refusal func(step string, status int, body []byte) error) error {
	if client == nil {
		client = http.DefaultClient
	}
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: encode request: %w", step, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s: read answer: %w", step, err)
	}
	if resp.StatusCode != http.StatusOK {
		return refusal(step, resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: decode answer: %w", step, err)
	}
	return nil
}

// adapterRefusal is an *AdapterError carrying the adapter's envelope, or the start of the body
// if there is none.
func adapterRefusal(step string, status int, body []byte) error {
	aerr := &AdapterError{Step: step, Status: status}
	var env wire.ErrorBody
	if json.Unmarshal(body, &env) == nil && (env.Error.Code != "" || env.Error.Message != "") {
		aerr.Code, aerr.Message, aerr.FailedRules = env.Error.Code, env.Error.Message, env.Error.FailedRules
	} else {
		aerr.Message = snippet(body)
	}
	return aerr
}

// emulatorRefusal reads the emulator's Google-style envelope.
func emulatorRefusal(step string, status int, body []byte) error {
	var env struct {
		Error struct {
			Message string `json:"message"`
			Status  string `json:"status"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error.Message != "" {
		return fmt.Errorf("%s: HTTP %d %s: %s", step, status, env.Error.Status, env.Error.Message)
	}
	return fmt.Errorf("%s: HTTP %d: %s", step, status, snippet(body))
}

func snippet(b []byte) string {
	return strings.ToValidUTF8(strings.TrimSpace(string(b[:min(len(b), 200)])), "?")
}
