package emulator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// Verified Access API versions, scopes and defaults. Scopes are named as in the adapter's
// enrollment API ("machine" for an Enterprise Machine Key, "user" for an Enterprise User Key),
// not as in ProcessSpec.
const (
	VAv1 = "v1"
	VAv2 = "v2"

	VAScopeMachine = "machine"
	VAScopeUser    = "user"

	// DefaultVAChallengeLifetime is how long a challenge stays verifiable, as on Google's side.
	DefaultVAChallengeLifetime = 60 * time.Second

	// DefaultVADomain and DefaultVAUser are the identities a simulated device or user is enrolled
	// as when a respond request names none.
	DefaultVADomain = "example.com"
	DefaultVAUser   = "user@example.com"

	// vaRetention is how long after its expiry the emulator still remembers a challenge (and the
	// responses to it), so that late verifies get "challenge expired" or "challenge already
	// used" rather than "invalid challenge response". A long-running emulator must forget
	// eventually; ten minutes covers any test.
	vaRetention = 10 * time.Minute
)

// Method names of the Verified Access calls, for FailNext and LoseNextResponses (the "" wildcard
// matches them too).
const (
	MethodVAChallengeV1 = "va.v1.challenge"
	MethodVAVerifyV1    = "va.v1.verify"
	MethodVAGenerateV2  = "va.v2.generate"
	MethodVAVerifyV2    = "va.v2.verify"
)

// Outcomes of challenge:verify, the keys of VAStats.Verifies.
const (
	VAOutcomeVerified         = "verified"
	VAOutcomeExpired          = "expired"
	VAOutcomeInvalid          = "invalid"           // unknown, tampered, forged or wrong-version response
	VAOutcomeIdentityMismatch = "identity-mismatch" // expectedIdentity differs from the enrolled identity
	VAOutcomeAlreadyUsed      = "already-used"
	VAOutcomeMalformed        = "malformed" // request body not valid JSON for the method
	VAOutcomeInjected         = "injected"  // answered by FailNext, nothing checked
)

// The fixed parts of verify error messages (400 INVALID_ARGUMENT), for people reading logs.
// Google documents no message texts: clients tell refusals apart by status only, and the
// emulator's own tests by VAStats outcomes.
const (
	vaMessageExpired          = "challenge expired"
	vaMessageInvalid          = "invalid challenge response"
	vaMessageIdentityMismatch = "identity mismatch"
	vaMessageAlreadyUsed      = "challenge already used"
)

// TPM versions of a simulated device: they decide the length of the random challenge ChromeOS
// signs into the SPKAC (20 bytes on TPM 1.2, 32 on TPM 2.0, hex-encoded).
const (
	TPM12 = "1.2"
	TPM20 = "2.0"
)

// VADevice is what challenge:verify reports about the device or profile that answered: the
// fields of the v2 VerifyChallengeResponseResult that describe it (v1 reports the subset it
// has). Fields are reported exactly as set, empty ones are absent from the answer, and values
// are not checked against Google's enums, so tests can also send values Google may add later.
//
// The Profile* fields exist for managed profiles on unmanaged browsers, which cannot reach an
// enrollment through enterprise.platformKeys (it exists on ChromeOS only); they are kept so that
// a test can send every field of the result.
type VADevice struct {
	DevicePermanentID  string `json:"devicePermanentId,omitempty"`
	DeviceEnrollmentID string `json:"deviceEnrollmentId,omitempty"`
	AttestedDeviceID   string `json:"attestedDeviceId,omitempty"`
	CustomerID         string `json:"customerId,omitempty"`
	VirtualDeviceID    string `json:"virtualDeviceId,omitempty"`
	KeyTrustLevel      string `json:"keyTrustLevel,omitempty"`

	DeviceSignals *va2.DeviceSignals `json:"deviceSignals,omitempty"`

	ProfileCustomerID    string `json:"profileCustomerId,omitempty"`
	VirtualProfileID     string `json:"virtualProfileId,omitempty"`
	ProfilePermanentID   string `json:"profilePermanentId,omitempty"`
	ProfileKeyTrustLevel string `json:"profileKeyTrustLevel,omitempty"`
}

// clone deep-copies d (the signals hold slices and pointers) so that the emulator's record cannot
// be changed by the caller afterwards.
func (d VADevice) clone() (VADevice, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return VADevice{}, fmt.Errorf("copy device: %w", err)
	}
	var out VADevice
	if err := json.Unmarshal(b, &out); err != nil {
		return VADevice{}, fmt.Errorf("copy device: %w", err)
	}
	return out, nil
}

// VARespondRequest asks the simulated Chrome to answer a challenge, as the extension API
// enterprise.platformKeys.challengeKey does. Its JSON form is the body of
// POST /emulator/v1/verifiedaccess/respond.
type VARespondRequest struct {
	// Challenge is what the extension received: the v2 challenge bytes as returned by
	// challenge:generate, or for v1 the serialized SignedData of the challenge (MarshalSignedData).
	// It must have been issued by this emulator, as Chrome only answers Google-signed challenges.
	Challenge []byte `json:"challenge"`
	// APIVersion the challenge came from (VAv1 or VAv2); empty means whichever issued it.
	APIVersion string `json:"apiVersion,omitempty"`
	// Scope is VAScopeMachine (default) or VAScopeUser.
	Scope string `json:"scope,omitempty"`
	// KeyType is KeyRSA (default for new keys) or KeyECDSA ("ec" is accepted too).
	KeyType string `json:"keyType,omitempty"`
	// KeyID names the simulated key: an existing one is reused (KeyType, if set, must match), an
	// unknown one is created under that name, empty creates a key with a generated id.
	KeyID string `json:"keyId,omitempty"`
	// Identity is what the device (machine scope: a domain) or user (user scope: an e-mail) is
	// enrolled as; challenge:verify compares it with expectedIdentity. Empty means
	// DefaultVADomain or DefaultVAUser.
	Identity string `json:"identity,omitempty"`
	// Device is what challenge:verify reports; nil means DefaultVADevice(Scope, KeyID, Identity),
	// a healthy managed ChromeOS device. When set it is reported as is, nothing filled in.
	Device *VADevice `json:"device,omitempty"`
	// Tamper corrupts the response (its signature) so that challenge:verify answers
	// "invalid challenge response". The SignedData wrapper stays well-formed.
	Tamper bool `json:"tamper,omitempty"`
	// TamperSPKAC corrupts the signature inside the SPKAC only: Google's verify succeeds and the
	// adapter's own SPKAC check must refuse it. An emulator extension beyond the contract page.
	TamperSPKAC bool `json:"tamperSpkac,omitempty"`
	// TPMVersion is the simulated device's TPM, TPM20 (default) or TPM12: the SPKAC's random
	// challenge is the hex of 32 or 20 bytes.
	TPMVersion string `json:"tpmVersion,omitempty"`
	// RawSignatures has an ECDSA key sign as a TPM can: the 64-byte r||s instead of DER, in the
	// SPKAC and in the answer (which one ChromeOS sends is not documented). Ignored for RSA.
	RawSignatures bool `json:"rawSignatures,omitempty"`
}

// UnmarshalJSON decodes the respond body strictly (unknown keys are an error, as everywhere in
// the emulator) and accepts the challenge in standard or URL-safe base64, padded or not.
func (r *VARespondRequest) UnmarshalJSON(b []byte) error {
	type plain VARespondRequest
	var w struct {
		plain
		Challenge string `json:"challenge"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON object")
	}
	*r = VARespondRequest(w.plain)
	if w.Challenge != "" {
		c, err := decodeBase64(w.Challenge)
		if err != nil {
			return fmt.Errorf("challenge: %w", err)
		}
		r.Challenge = c
	}
	return nil
}

// VARespondResult is the simulated extension's answer; its JSON form answers
// POST /emulator/v1/verifiedaccess/respond (byte fields in standard base64).
type VARespondResult struct {
	// ChallengeResponse is the serialized SignedData the extension hands back, for both API
	// versions: v2 sends it as challengeResponse bytes, v1 parses it into data and signature.
	ChallengeResponse []byte `json:"challengeResponse"`
	APIVersion        string `json:"apiVersion"`
	KeyID             string `json:"keyId"`
	KeyType           string `json:"keyType"`
	// SPKI is the DER SubjectPublicKeyInfo of the simulated key, the key the SPKAC carries and
	// the issued certificate must carry.
	SPKI []byte `json:"spki"`
	// PrivateKeyPKCS8 is the simulated key in DER PKCS#8, for clients that want to use the
	// certificate (a real extension never sees it).
	PrivateKeyPKCS8 []byte `json:"privateKeyPkcs8"`
}

// VAStats counts the Verified Access traffic, for tests that assert what the adapter did.
type VAStats struct {
	Challenges  map[string]int `json:"challenges"`  // challenges issued, by API version (VAv1, VAv2)
	Responses   int            `json:"responses"`   // successful respond calls
	VerifyCalls map[string]int `json:"verifyCalls"` // challenge:verify calls, by API version
	Verifies    map[string]int `json:"verifies"`    // challenge:verify calls, by VAOutcome*
}

func (s VAStats) clone() VAStats {
	cp := func(m map[string]int) map[string]int {
		out := make(map[string]int, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	return VAStats{Challenges: cp(s.Challenges), Responses: s.Responses,
		VerifyCalls: cp(s.VerifyCalls), Verifies: cp(s.Verifies)}
}

// vaState is the emulator's Verified Access side. It has its own lock so that VA traffic does
// not contend with certificate provisioning.
type vaState struct {
	secret   []byte // HMAC key that makes challenges recognisable
	lifetime time.Duration
	// service decrypts the key info of answers (with the SPKAC), as Google does.
	service vaServiceKey

	mu         sync.Mutex
	challenges map[string]*vaChallenge // by hex of the challenge data
	responses  map[string]*vaResponse  // by hex of the answer's nonce
	keys       map[string]*vaKey       // by key id
	lastPurge  time.Time
	stats      VAStats
}

type vaChallenge struct {
	version   string
	issued    time.Time
	used      bool
	responses []string // response ids, forgotten with the challenge
}

// vaResponse is what the emulator remembers about one simulated challengeKey answer, by its
// nonce: what verify must report about the device. Everything verify checks comes from the
// answer itself; an answer the emulator did not make (the sample extension's stand-in) is
// reported as the default device.
type vaResponse struct {
	challengeKey string // key into vaState.challenges
	device       VADevice
}

// vaVerified is a verified answer: what verify reports.
type vaVerified struct {
	scope  string
	device VADevice
	spkac  []byte
}

type vaKey struct {
	id, keyType string
	key         *deviceKey
}

func newVAState(lifetime time.Duration) (*vaState, error) {
	secret, err := randomBytes(32)
	if err != nil {
		return nil, fmt.Errorf("verified access secret: %w", err)
	}
	return &vaState{
		secret:     secret,
		lifetime:   lifetime,
		challenges: map[string]*vaChallenge{},
		responses:  map[string]*vaResponse{},
		keys:       map[string]*vaKey{},
		stats: VAStats{Challenges: map[string]int{}, VerifyCalls: map[string]int{},
			Verifies: map[string]int{}},
	}, nil
}

// challengeMAC is the emulator's "signature" over challenge data: it lets the emulator (and its
// simulated Chrome) recognise its own challenges without trusting the caller.
func (s *vaState) challengeMAC(data []byte) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("certprov-emulator verified access challenge\x00"))
	m.Write(data)
	return m.Sum(nil)
}

// VAStats returns a copy of the Verified Access counters.
func (e *Emulator) VAStats() VAStats {
	e.va.mu.Lock()
	defer e.va.mu.Unlock()
	return e.va.stats.clone()
}

// vaIssue creates a challenge for an API version: 32 random bytes of data and the emulator's
// HMAC over them as signature.
func (e *Emulator) vaIssue(version string) (data, signature []byte, err error) {
	data, err = randomBytes(32)
	if err != nil {
		return nil, nil, fmt.Errorf("issue challenge: %w", err)
	}
	signature = e.va.challengeMAC(data)
	now := e.clock()
	e.va.mu.Lock()
	defer e.va.mu.Unlock()
	e.va.purgeLocked(now)
	e.va.challenges[hex.EncodeToString(data)] = &vaChallenge{version: version, issued: now}
	e.va.stats.Challenges[version]++
	return data, signature, nil
}

// purgeLocked forgets challenges (and their responses) that expired more than vaRetention ago.
// It runs at most once per lifetime so that issuing stays cheap.
func (s *vaState) purgeLocked(now time.Time) {
	if now.Sub(s.lastPurge) < s.lifetime {
		return
	}
	s.lastPurge = now
	for k, c := range s.challenges {
		if now.Sub(c.issued) > s.lifetime+vaRetention {
			for _, r := range c.responses {
				delete(s.responses, r)
			}
			delete(s.challenges, k)
		}
	}
}

// vaVerify checks a challenge response (the SignedData's data and signature) for the API version,
// as Google does with a device's answer: data is a ChallengeResponse whose challenge must be one
// of this service's, whose key info decrypts with the service key and carries the SPKAC, and
// whose signature verifies with the SPKAC's key (the key challengeKey registered). The order of
// the checks decides which error an answer that is wrong in several ways gets: authenticity
// first (invalid), then reuse, then age, then identity. The first authentic verify of a
// challenge consumes it, even when the identity does not match, because a challenge is a
// one-time token; a forged or tampered one does not.
func (e *Emulator) vaVerify(version string, data, signature []byte, expectedIdentity string) (*vaVerified, string, *apiError) {
	invalid := func(reason string) (*vaVerified, string, *apiError) {
		return nil, VAOutcomeInvalid, vaInvalid("%s: %s", vaMessageInvalid, reason)
	}
	if len(data) == 0 || len(signature) == 0 {
		return invalid("data or signature empty")
	}
	cr, err := parseChallengeResponse(data)
	if err != nil {
		return invalid("not an answer to a challenge of this service")
	}
	chData, chSig, err := wire.UnmarshalSignedData(cr.challenge)
	if err != nil || len(chData) == 0 || !hmac.Equal(chSig, e.va.challengeMAC(chData)) {
		return invalid("the challenge was not issued by this service")
	}
	sk, err := e.va.service.load()
	if err != nil {
		return nil, VAOutcomeInvalid, internalError(err)
	}
	plain, err := sk.decryptKeyInfo(cr.encryptedKeyInfo)
	if err != nil {
		return invalid(err.Error())
	}
	ki, err := parseKeyInfo(plain)
	if err != nil {
		return invalid(err.Error())
	}
	spki, err := spkacSPKI(ki.spkac)
	if err != nil {
		return invalid(err.Error())
	}
	if err := VerifySignature(spki, data, signature); err != nil {
		return invalid("the response signature does not verify")
	}
	scope := VAScopeMachine
	if ki.keyType == keyTypeEUK {
		scope = VAScopeUser
	}

	now := e.clock()
	e.va.mu.Lock()
	defer e.va.mu.Unlock()
	ch := e.va.challenges[hex.EncodeToString(chData)]
	switch {
	case ch == nil:
		return invalid("unknown challenge")
	case ch.version != version:
		return invalid(fmt.Sprintf("the challenge was issued by the %s API", ch.version))
	case ch.used:
		return nil, VAOutcomeAlreadyUsed, vaInvalid("%s: each challenge can be verified once", vaMessageAlreadyUsed)
	case now.Sub(ch.issued) > e.va.lifetime:
		return nil, VAOutcomeExpired, vaInvalid("%s: issued %s ago, valid for %s", vaMessageExpired,
			now.Sub(ch.issued).Round(time.Millisecond), e.va.lifetime)
	}
	ch.used = true
	if expectedIdentity != "" && !strings.EqualFold(expectedIdentity, ki.domain) {
		return nil, VAOutcomeIdentityMismatch, vaInvalid("%s: the key does not belong to the expected identity",
			vaMessageIdentityMismatch)
	}
	out := &vaVerified{scope: scope, spkac: ki.spkac}
	if rec := e.va.responses[hex.EncodeToString(cr.nonce)]; rec != nil {
		out.device = rec.device
	} else {
		sum := sha256.Sum256(spki)
		out.device = DefaultVADevice(scope, "spki-"+hex.EncodeToString(sum[:8]), ki.domain)
	}
	return out, VAOutcomeVerified, nil
}

// VARespond plays enterprise.platformKeys.challengeKey with registerKey on ChromeOS: it creates
// (or reuses) the simulated key, builds the SPKAC over a random hex challenge signed by that key
// (CreateSPKACInternal), puts it in a KeyInfo encrypted to the service key, and returns the
// SignedData{ChallengeResponse{challenge, nonce, encrypted key info}, signature by the key},
// remembering by the nonce what challenge:verify must report about the device. Invalid input (an
// unknown scope or key type, a challenge this emulator did not issue, a key id reused with another
// key type) is an error; over HTTP it is 400 INVALID_ARGUMENT, other failures 500.
func (e *Emulator) VARespond(ctx context.Context, req VARespondRequest) (VARespondResult, error) {
	res, err := e.vaRespond(ctx, req)
	if err != nil {
		return VARespondResult{}, fmt.Errorf("verified access respond: %w", err)
	}
	return res, nil
}

func (e *Emulator) vaRespond(ctx context.Context, req VARespondRequest) (VARespondResult, error) {
	if err := ctx.Err(); err != nil {
		return VARespondResult{}, err
	}
	switch req.Scope {
	case "":
		req.Scope = VAScopeMachine
	case VAScopeMachine, VAScopeUser:
	default:
		return VARespondResult{}, invalidArgument("scope %q: want %q or %q", req.Scope, VAScopeMachine, VAScopeUser)
	}
	switch strings.ToLower(req.KeyType) {
	case "":
	case KeyRSA:
		req.KeyType = KeyRSA
	case KeyECDSA, "ec":
		req.KeyType = KeyECDSA
	default:
		return VARespondResult{}, invalidArgument("keyType %q: want %q or %q", req.KeyType, KeyRSA, KeyECDSA)
	}
	switch req.APIVersion {
	case "", VAv1, VAv2:
	default:
		return VARespondResult{}, invalidArgument("apiVersion %q: want %q or %q", req.APIVersion, VAv1, VAv2)
	}
	switch req.TPMVersion {
	case "", TPM12, TPM20:
	default:
		return VARespondResult{}, invalidArgument("tpmVersion %q: want %q or %q", req.TPMVersion, TPM12, TPM20)
	}

	data, sig, err := wire.UnmarshalSignedData(req.Challenge)
	if err != nil || len(data) == 0 || !hmac.Equal(sig, e.va.challengeMAC(data)) {
		// Chrome checks Google's signature on the challenge before it answers.
		return VARespondResult{}, invalidArgument("challenge: not a challenge issued by this Verified Access service")
	}
	chKey := hex.EncodeToString(data)
	e.va.mu.Lock()
	ch := e.va.challenges[chKey]
	var version string
	if ch != nil {
		version = ch.version
	}
	e.va.mu.Unlock()
	switch {
	case ch == nil:
		return VARespondResult{}, invalidArgument("challenge: no longer known to the emulator")
	case req.APIVersion != "" && req.APIVersion != version:
		return VARespondResult{}, invalidArgument("apiVersion %q: the challenge was issued by the %s API", req.APIVersion, version)
	}

	key, err := e.vaKey(req.KeyID, req.KeyType)
	if err != nil {
		return VARespondResult{}, err
	}
	if req.Identity == "" {
		req.Identity = DefaultVADomain
		if req.Scope == VAScopeUser {
			req.Identity = DefaultVAUser
		}
	}
	var device VADevice
	if req.Device == nil {
		device = DefaultVADevice(req.Scope, key.id, req.Identity)
	} else if device, err = req.Device.clone(); err != nil {
		return VARespondResult{}, err
	}

	spkacCh, err := spkacChallenge(req.TPMVersion)
	if err != nil {
		return VARespondResult{}, err
	}
	spkac, err := buildSPKAC(key.key, spkacCh, req.RawSignatures)
	if err != nil {
		return VARespondResult{}, err
	}
	if req.TamperSPKAC {
		if spkac, err = corruptSPKACSignature(spkac); err != nil {
			return VARespondResult{}, err
		}
	}
	ki := keyInfo{keyType: keyTypeEMK, domain: req.Identity, deviceID: []byte(device.VirtualDeviceID), spkac: spkac,
		customerID: device.CustomerID}
	if req.Scope == VAScopeUser {
		ki.keyType = keyTypeEUK
	}
	sk, err := e.va.service.load()
	if err != nil {
		return VARespondResult{}, err
	}
	encrypted, err := encryptKeyInfo(&sk.key.PublicKey, sk.id, ki.marshal())
	if err != nil {
		return VARespondResult{}, err
	}
	nonce, err := randomBytes(32)
	if err != nil {
		return VARespondResult{}, err
	}
	payload := challengeResponse{challenge: req.Challenge, nonce: nonce, encryptedKeyInfo: encrypted}.marshal()
	payloadSig, err := key.key.sign(payload, req.RawSignatures)
	if err != nil {
		return VARespondResult{}, fmt.Errorf("sign challenge response: %w", err)
	}
	if req.Tamper {
		payloadSig[len(payloadSig)/2] ^= 0xff
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key.key.signer)
	if err != nil {
		return VARespondResult{}, fmt.Errorf("marshal private key: %w", err)
	}

	rid := hex.EncodeToString(nonce)
	e.va.mu.Lock()
	if ch := e.va.challenges[chKey]; ch != nil {
		ch.responses = append(ch.responses, rid)
	}
	e.va.responses[rid] = &vaResponse{challengeKey: chKey, device: device}
	e.va.stats.Responses++
	e.va.mu.Unlock()
	e.log.Debug("verified access response", zap.String("version", version), zap.String("scope", req.Scope),
		zap.String("key_id", key.id), zap.String("tpm", req.TPMVersion), zap.Bool("raw_signatures", req.RawSignatures),
		zap.Bool("tamper", req.Tamper), zap.Bool("tamper_spkac", req.TamperSPKAC))

	return VARespondResult{
		ChallengeResponse: wire.MarshalSignedData(payload, payloadSig),
		APIVersion:        version,
		KeyID:             key.id,
		KeyType:           key.keyType,
		SPKI:              append([]byte(nil), key.key.spki...),
		PrivateKeyPKCS8:   pkcs8,
	}, nil
}

// vaKey returns the simulated key named id, creating it (RSA unless keyType says otherwise) when
// there is none; an empty id gets a generated one. Keys are kept for the emulator's lifetime so
// that a device can answer several challenges with one key, as Chrome's registered keys do.
func (e *Emulator) vaKey(id, keyType string) (*vaKey, error) {
	e.va.mu.Lock()
	k := e.va.keys[id]
	e.va.mu.Unlock()
	if k != nil {
		if keyType != "" && keyType != k.keyType {
			return nil, invalidArgument("keyType %q: key %q is an %s key", keyType, id, k.keyType)
		}
		return k, nil
	}
	if keyType == "" {
		keyType = KeyRSA
	}
	if id == "" {
		h, err := randomHex(8)
		if err != nil {
			return nil, err
		}
		id = "key-" + h
	}
	dk, err := newDeviceKey(keyType) // slow for RSA: outside the lock
	if err != nil {
		return nil, err
	}
	e.va.mu.Lock()
	defer e.va.mu.Unlock()
	if existing := e.va.keys[id]; existing != nil {
		// Another request created it meanwhile; one key per id.
		if existing.keyType != keyType {
			return nil, invalidArgument("keyType %q: key %q is an %s key", keyType, id, existing.keyType)
		}
		return existing, nil
	}
	k = &vaKey{id: id, keyType: keyType, key: dk}
	e.va.keys[id] = k
	return k, nil
}
