package vagoogle

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/emulator/devicekey"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// Verified Access API versions, scopes and defaults. Scopes are named as in the adapter's
// enrollment API ("machine" for an Enterprise Machine Key, "user" for an Enterprise User Key),
// not as in ProcessSpec.
const (
	V1 = "v1"
	V2 = "v2"

	ScopeMachine = "machine"
	ScopeUser    = "user"

	// DefaultChallengeLifetime is how long a challenge stays verifiable, as on Google's side.
	DefaultChallengeLifetime = 60 * time.Second

	// DefaultCustomer is the Google customer a simulated device belongs to when a respond
	// request names none: the emulator's, for both of its APIs (emulator.DefaultCustomer).
	DefaultCustomer = "C0demo"

	// DefaultDomain and DefaultUser are the identities a simulated device or user is enrolled
	// as when a respond request names none.
	DefaultDomain = "example.com"
	DefaultUser   = "user@example.com"

	// vaRetention is how long after its expiry the emulator still remembers a challenge (and the
	// responses to it), so that late verifies get "challenge expired" or "challenge already
	// used" rather than "invalid challenge response". A long-running emulator must forget
	// eventually; ten minutes covers any test.
	vaRetention = 10 * time.Minute
)

// Method names of the Verified Access calls, for FailNext and LoseNextResponses (the "" wildcard
// matches them too).
const (
	MethodChallengeV1 = "va.v1.challenge"
	MethodVerifyV1    = "va.v1.verify"
	MethodGenerateV2  = "va.v2.generate"
	MethodVerifyV2    = "va.v2.verify"
)

// Outcomes of challenge:verify, the keys of Stats.Verifies.
const (
	OutcomeVerified         = "verified"
	OutcomeExpired          = "expired"
	OutcomeInvalid          = "invalid"           // unknown, tampered, forged or wrong-version response
	OutcomeIdentityMismatch = "identity-mismatch" // expectedIdentity differs from the enrolled identity
	OutcomeAlreadyUsed      = "already-used"
	OutcomeMalformed        = "malformed" // request body not valid JSON for the method
	OutcomeInjected         = "injected"  // answered by FailNext, nothing checked
)

// The fixed parts of verify error messages (400 INVALID_ARGUMENT), for people reading logs.
// Google documents no message texts: clients tell refusals apart by status only, and the
// emulator's own tests by Stats outcomes.
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

// Device is what challenge:verify reports about the device or profile that answered: the
// fields of the v2 VerifyChallengeResponseResult that describe it (v1 reports the subset it
// has). Fields are reported exactly as set, empty ones are absent from the answer, and values
// are not checked against Google's enums, so tests can also send values Google may add later.
//
// The Profile* fields exist for managed profiles on unmanaged browsers, which cannot reach an
// enrollment through enterprise.platformKeys (it exists on ChromeOS only); they are kept so that
// a test can send every field of the result.
type Device struct {
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
func (d Device) clone() (Device, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return Device{}, fmt.Errorf("copy device: %w", err)
	}
	var out Device
	if err := json.Unmarshal(b, &out); err != nil {
		return Device{}, fmt.Errorf("copy device: %w", err)
	}
	return out, nil
}

// RespondRequest asks the simulated Chrome to answer a challenge, as the extension API
// enterprise.platformKeys.challengeKey does. Its JSON form is the body of
// POST /emulator/v1/verifiedaccess/respond.
type RespondRequest struct {
	// Challenge is what the extension received: the v2 challenge bytes as returned by
	// challenge:generate, or for v1 the serialized SignedData of the challenge (wire.MarshalSignedData).
	// It must have been issued by this emulator, as Chrome only answers Google-signed challenges.
	Challenge []byte `json:"challenge"`
	// APIVersion the challenge came from (V1 or V2); empty means whichever issued it.
	APIVersion string `json:"apiVersion,omitempty"`
	// Scope is ScopeMachine (default) or ScopeUser.
	Scope string `json:"scope,omitempty"`
	// KeyType is devicekey.RSA (default for new keys) or devicekey.ECDSA ("ec" is accepted too).
	KeyType string `json:"keyType,omitempty"`
	// KeyID names the simulated key: an existing one is reused (KeyType, if set, must match), an
	// unknown one is created under that name, empty creates a key with a generated id.
	KeyID string `json:"keyId,omitempty"`
	// Identity is what the device (machine scope: a domain) or user (user scope: an e-mail) is
	// enrolled as; challenge:verify compares it with expectedIdentity. Empty means
	// DefaultDomain or DefaultUser.
	Identity string `json:"identity,omitempty"`
	// Device is what challenge:verify reports; nil means DefaultDevice(Scope, KeyID, Identity),
	// a healthy managed ChromeOS device. When set it is reported as is, nothing filled in.
	Device *Device `json:"device,omitempty"`
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
func (r *RespondRequest) UnmarshalJSON(b []byte) error {
	type plain RespondRequest
	var w struct {
		plain
		Challenge string `json:"challenge"`
	}
	if err := frontend.DecodeStrict(b, &w); err != nil {
		return err
	}
	*r = RespondRequest(w.plain)
	if w.Challenge != "" {
		c, err := frontend.DecodeBase64(w.Challenge)
		if err != nil {
			return fmt.Errorf("challenge: %w", err)
		}
		r.Challenge = c
	}
	return nil
}

// RespondResult is the simulated extension's answer; its JSON form answers
// POST /emulator/v1/verifiedaccess/respond (byte fields in standard base64).
type RespondResult struct {
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

// Stats counts the Verified Access traffic, for tests that assert what the adapter did.
type Stats struct {
	Challenges  map[string]int `json:"challenges"`  // challenges issued, by API version (V1, V2)
	Responses   int            `json:"responses"`   // successful respond calls
	VerifyCalls map[string]int `json:"verifyCalls"` // challenge:verify calls, by API version
	Verifies    map[string]int `json:"verifies"`    // challenge:verify calls, by Outcome*
}

func (s Stats) clone() Stats {
	return Stats{Challenges: maps.Clone(s.Challenges), Responses: s.Responses,
		VerifyCalls: maps.Clone(s.VerifyCalls), Verifies: maps.Clone(s.Verifies)}
}

// Options configure a Service. The zero value is usable.
type Options struct {
	Logger *zap.Logger // nil => zap.NewNop()
	// Clock decides when challenges expire; nil => time.Now.
	Clock func() time.Time
	// ChallengeLifetime is how long a challenge stays verifiable; 0 means
	// DefaultChallengeLifetime (60 s, as on Google's side). Tests shorten it, or move Clock.
	ChallengeLifetime time.Duration
	// Faults are the front end's injected faults and latency, under the Method* names; nil
	// injects none. The emulator shares its own with the Certificate Provisioning API.
	Faults *frontend.Faults
}

// Service is Google's side of the Verified Access API v1 and v2, and the simulated Chrome that
// answers its challenges (Respond). All methods are safe for concurrent use. It has its own lock,
// so that Verified Access traffic does not contend with certificate provisioning.
type Service struct {
	log      *zap.Logger
	clock    func() time.Time
	faults   *frontend.Faults
	secret   []byte // HMAC key that makes challenges recognisable
	lifetime time.Duration
	// service decrypts the key info of answers (with the SPKAC), as Google does.
	service vaServiceKey

	mu         sync.Mutex
	challenges map[string]*vaChallenge // by hex of the challenge data
	responses  map[string]*vaResponse  // by hex of the answer's nonce
	keys       map[string]*vaKey       // by key id
	lastPurge  time.Time
	stats      Stats
}

// New returns a Service that has issued nothing yet.
func New(opts Options) (*Service, error) {
	lifetime := opts.ChallengeLifetime
	if lifetime == 0 {
		lifetime = DefaultChallengeLifetime
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("verified access challenge lifetime %s: want a positive duration", lifetime)
	}
	secret, err := randomBytes(32)
	if err != nil {
		return nil, fmt.Errorf("verified access secret: %w", err)
	}
	s := &Service{
		log:        opts.Logger,
		clock:      opts.Clock,
		faults:     opts.Faults,
		secret:     secret,
		lifetime:   lifetime,
		challenges: map[string]*vaChallenge{},
		responses:  map[string]*vaResponse{},
		keys:       map[string]*vaKey{},
		stats:      Stats{Challenges: map[string]int{}, VerifyCalls: map[string]int{}, Verifies: map[string]int{}},
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.faults == nil {
		s.faults = &frontend.Faults{}
	}
	return s, nil
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
	device       Device
}

// vaVerified is a verified answer: what verify reports.
type vaVerified struct {
	scope  string
	device Device
	spkac  []byte
}

type vaKey struct {
	id, keyType string
	key         *devicekey.Key
}

// challengeMAC is the emulator's "signature" over challenge data: it lets the emulator (and its
// simulated Chrome) recognise its own challenges without trusting the caller.
func (s *Service) challengeMAC(data []byte) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("certprov-emulator verified access challenge\x00"))
	m.Write(data)
	return m.Sum(nil)
}

// Stats returns a copy of the Verified Access counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.clone()
}

// issue creates a challenge for an API version: 32 random bytes of data and the emulator's
// HMAC over them as signature.
func (s *Service) issue(version string) (data, signature []byte, err error) {
	data, err = randomBytes(32)
	if err != nil {
		return nil, nil, fmt.Errorf("issue challenge: %w", err)
	}
	signature = s.challengeMAC(data)
	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(now)
	s.challenges[hex.EncodeToString(data)] = &vaChallenge{version: version, issued: now}
	s.stats.Challenges[version]++
	return data, signature, nil
}

// purgeLocked forgets challenges (and their responses) that expired more than vaRetention ago.
// It runs at most once per lifetime so that issuing stays cheap.
func (s *Service) purgeLocked(now time.Time) {
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

// verify checks a challenge response (the SignedData's data and signature) for the API version,
// as Google does with a device's answer: data is a ChallengeResponse whose challenge must be one
// of this service's, whose key info decrypts with the service key and carries the SPKAC, and
// whose signature verifies with the SPKAC's key (the key challengeKey registered). The order of
// the checks decides which error an answer that is wrong in several ways gets: authenticity
// first (invalid), then reuse, then age, then identity. The first authentic verify of a
// challenge consumes it, even when the identity does not match, because a challenge is a
// one-time token; a forged or tampered one does not.
func (s *Service) verify(version string, data, signature []byte, expectedIdentity string) (*vaVerified, string, *frontend.Error) {
	invalid := func(reason string) (*vaVerified, string, *frontend.Error) {
		return nil, OutcomeInvalid, vaInvalid("%s: %s", vaMessageInvalid, reason)
	}
	if len(data) == 0 || len(signature) == 0 {
		return invalid("data or signature empty")
	}
	cr, err := parseChallengeResponse(data)
	if err != nil {
		return invalid("not an answer to a challenge of this service")
	}
	chData, chSig, err := wire.UnmarshalSignedData(cr.challenge)
	if err != nil || len(chData) == 0 || !hmac.Equal(chSig, s.challengeMAC(chData)) {
		return invalid("the challenge was not issued by this service")
	}
	sk, err := s.service.load()
	if err != nil {
		return nil, OutcomeInvalid, frontend.Internal(err)
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
	if err := devicekey.Verify(spki, data, signature); err != nil {
		return invalid("the response signature does not verify")
	}
	scope := ScopeMachine
	if ki.keyType == keyTypeEUK {
		scope = ScopeUser
	}

	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.challenges[hex.EncodeToString(chData)]
	switch {
	case ch == nil:
		return invalid("unknown challenge")
	case ch.version != version:
		return invalid(fmt.Sprintf("the challenge was issued by the %s API", ch.version))
	case ch.used:
		return nil, OutcomeAlreadyUsed, vaInvalid("%s: each challenge can be verified once", vaMessageAlreadyUsed)
	case now.Sub(ch.issued) > s.lifetime:
		return nil, OutcomeExpired, vaInvalid("%s: issued %s ago, valid for %s", vaMessageExpired,
			now.Sub(ch.issued).Round(time.Millisecond), s.lifetime)
	}
	ch.used = true
	if expectedIdentity != "" && !strings.EqualFold(expectedIdentity, ki.domain) {
		return nil, OutcomeIdentityMismatch, vaInvalid("%s: the key does not belong to the expected identity",
			vaMessageIdentityMismatch)
	}
	out := &vaVerified{scope: scope, spkac: ki.spkac}
	if rec := s.responses[hex.EncodeToString(cr.nonce)]; rec != nil {
		out.device = rec.device
	} else {
		sum := sha256.Sum256(spki)
		out.device = DefaultDevice(scope, "spki-"+hex.EncodeToString(sum[:8]), ki.domain)
	}
	return out, OutcomeVerified, nil
}

// Respond plays enterprise.platformKeys.challengeKey with registerKey on ChromeOS: it creates
// (or reuses) the simulated key, builds the SPKAC over a random hex challenge signed by that key
// (CreateSPKACInternal), puts it in a KeyInfo encrypted to the service key, and returns the
// SignedData{ChallengeResponse{challenge, nonce, encrypted key info}, signature by the key},
// remembering by the nonce what challenge:verify must report about the device. Invalid input (an
// unknown scope or key type, a challenge this emulator did not issue, a key id reused with another
// key type) is an error; over HTTP it is 400 INVALID_ARGUMENT, other failures 500.
func (s *Service) Respond(ctx context.Context, req RespondRequest) (RespondResult, error) {
	res, err := s.respond(ctx, req)
	if err != nil {
		return RespondResult{}, fmt.Errorf("verified access respond: %w", err)
	}
	return res, nil
}

func (s *Service) respond(ctx context.Context, req RespondRequest) (RespondResult, error) {
	if err := ctx.Err(); err != nil {
		return RespondResult{}, err
	}
	switch req.Scope {
	case "":
		req.Scope = ScopeMachine
	case ScopeMachine, ScopeUser:
	default:
		return RespondResult{}, frontend.InvalidArgument("scope %q: want %q or %q", req.Scope, ScopeMachine, ScopeUser)
	}
	keyType, err := devicekey.ParseType(req.KeyType)
	if err != nil {
		return RespondResult{}, frontend.InvalidArgument("%v", err)
	}
	req.KeyType = keyType
	switch req.APIVersion {
	case "", V1, V2:
	default:
		return RespondResult{}, frontend.InvalidArgument("apiVersion %q: want %q or %q", req.APIVersion, V1, V2)
	}
	switch req.TPMVersion {
	case "", TPM12, TPM20:
	default:
		return RespondResult{}, frontend.InvalidArgument("tpmVersion %q: want %q or %q", req.TPMVersion, TPM12, TPM20)
	}

	data, sig, err := wire.UnmarshalSignedData(req.Challenge)
	if err != nil || len(data) == 0 || !hmac.Equal(sig, s.challengeMAC(data)) {
		// Chrome checks Google's signature on the challenge before it answers.
		return RespondResult{}, frontend.InvalidArgument("challenge: not a challenge issued by this Verified Access service")
	}
	chKey := hex.EncodeToString(data)
	s.mu.Lock()
	ch := s.challenges[chKey]
	var version string
	if ch != nil {
		version = ch.version
	}
	s.mu.Unlock()
	switch {
	case ch == nil:
		return RespondResult{}, frontend.InvalidArgument("challenge: no longer known to the emulator")
	case req.APIVersion != "" && req.APIVersion != version:
		return RespondResult{}, frontend.InvalidArgument("apiVersion %q: the challenge was issued by the %s API", req.APIVersion, version)
	}

	key, err := s.registeredKey(req.KeyID, req.KeyType)
	if err != nil {
		return RespondResult{}, err
	}
	if req.Identity == "" {
		req.Identity = DefaultDomain
		if req.Scope == ScopeUser {
			req.Identity = DefaultUser
		}
	}
	var device Device
	if req.Device == nil {
		device = DefaultDevice(req.Scope, key.id, req.Identity)
	} else if device, err = req.Device.clone(); err != nil {
		return RespondResult{}, err
	}

	spkacCh, err := spkacChallenge(req.TPMVersion)
	if err != nil {
		return RespondResult{}, err
	}
	spkac, err := buildSPKAC(key.key, spkacCh, req.RawSignatures)
	if err != nil {
		return RespondResult{}, err
	}
	if req.TamperSPKAC {
		if spkac, err = corruptSPKACSignature(spkac); err != nil {
			return RespondResult{}, err
		}
	}
	ki := keyInfo{keyType: keyTypeEMK, domain: req.Identity, deviceID: []byte(device.VirtualDeviceID), spkac: spkac,
		customerID: device.CustomerID}
	if req.Scope == ScopeUser {
		ki.keyType = keyTypeEUK
	}
	sk, err := s.service.load()
	if err != nil {
		return RespondResult{}, err
	}
	encrypted, err := encryptKeyInfo(&sk.key.PublicKey, sk.id, ki.marshal())
	if err != nil {
		return RespondResult{}, err
	}
	nonce, err := randomBytes(32)
	if err != nil {
		return RespondResult{}, err
	}
	payload := challengeResponse{challenge: req.Challenge, nonce: nonce, encryptedKeyInfo: encrypted}.marshal()
	payloadSig, err := key.key.Sign(payload, req.RawSignatures)
	if err != nil {
		return RespondResult{}, fmt.Errorf("sign challenge response: %w", err)
	}
	if req.Tamper {
		payloadSig[len(payloadSig)/2] ^= 0xff
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key.key.Signer)
	if err != nil {
		return RespondResult{}, fmt.Errorf("marshal private key: %w", err)
	}

	rid := hex.EncodeToString(nonce)
	s.mu.Lock()
	if ch := s.challenges[chKey]; ch != nil {
		ch.responses = append(ch.responses, rid)
	}
	s.responses[rid] = &vaResponse{challengeKey: chKey, device: device}
	s.stats.Responses++
	s.mu.Unlock()
	s.log.Debug("verified access response", zap.String("version", version), zap.String("scope", req.Scope),
		zap.String("key_id", key.id), zap.String("tpm", req.TPMVersion), zap.Bool("raw_signatures", req.RawSignatures),
		zap.Bool("tamper", req.Tamper), zap.Bool("tamper_spkac", req.TamperSPKAC))

	return RespondResult{
		ChallengeResponse: wire.MarshalSignedData(payload, payloadSig),
		APIVersion:        version,
		KeyID:             key.id,
		KeyType:           key.keyType,
		SPKI:              append([]byte(nil), key.key.SPKI...),
		PrivateKeyPKCS8:   pkcs8,
	}, nil
}

// vaKey returns the simulated key named id, creating it (RSA unless keyType says otherwise) when
// there is none; an empty id gets a generated one. Keys are kept for the emulator's lifetime so
// that a device can answer several challenges with one key, as Chrome's registered keys do.
func (s *Service) registeredKey(id, keyType string) (*vaKey, error) {
	s.mu.Lock()
	k := s.keys[id]
	s.mu.Unlock()
	if k != nil {
		if keyType != "" && keyType != k.keyType {
			return nil, frontend.InvalidArgument("keyType %q: key %q is an %s key", keyType, id, k.keyType)
		}
		return k, nil
	}
	if keyType == "" {
		keyType = devicekey.RSA
	}
	if id == "" {
		h, err := randomHex(8)
		if err != nil {
			return nil, err
		}
		id = "key-" + h
	}
	dk, err := devicekey.New(keyType) // slow for RSA: outside the lock
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if existing := s.keys[id]; existing != nil {
		// Another request created it meanwhile; one key per id.
		if existing.keyType != keyType {
			return nil, frontend.InvalidArgument("keyType %q: key %q is an %s key", keyType, id, existing.keyType)
		}
		return existing, nil
	}
	k = &vaKey{id: id, keyType: keyType, key: dk}
	s.keys[id] = k
	return k, nil
}
