package vagoogle

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"go.uber.org/zap"
	va1 "google.golang.org/api/verifiedaccess/v1"
	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// Paths of the Verified Access API (as the generated clients call them) and of the emulator's
// Verified Access control endpoints.
const (
	PathChallengeV1 = "/v1/challenge"
	PathVerifyV1    = "/v1/challenge:verify"
	PathGenerateV2  = "/v2/challenge:generate"
	PathVerifyV2    = "/v2/challenge:verify"

	RespondPath = "/emulator/v1/verifiedaccess/respond"
	StatsPath   = "/emulator/v1/verifiedaccess/stats"
	// ServiceKeyPath serves the public key devices encrypt their key info to (ServiceKey).
	ServiceKeyPath = "/emulator/v1/verifiedaccess/service-key"
)

// Register adds the Verified Access routes to the emulator's mux. The exact paths take
// precedence over the "/v1/" prefix of the certificate provisioning API.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc(PathChallengeV1, s.handler(MethodChallengeV1, V1, s.challengeV1))
	mux.HandleFunc(PathVerifyV1, s.handler(MethodVerifyV1, V1, s.verifyV1))
	mux.HandleFunc(PathGenerateV2, s.handler(MethodGenerateV2, V2, s.generateV2))
	mux.HandleFunc(PathVerifyV2, s.handler(MethodVerifyV2, V2, s.verifyV2))
	mux.HandleFunc(RespondPath, s.serveRespond)
	mux.HandleFunc(StatsPath, s.serveStats)
	mux.HandleFunc(ServiceKeyPath, s.serveServiceKey)
}

// vaApply handles one Verified Access call: it returns the response body or an error, plus the
// verify outcome to count ("" for challenge creation).
type vaApply func(body []byte) (resp any, outcome string, aerr *frontend.Error)

// handler wraps a Verified Access method with what every emulated Google call gets: POST only,
// the configured latency, a bounded body, and the injected faults under the method's name.
func (s *Service) handler(method, version string, apply vaApply) http.HandlerFunc {
	isVerify := method == MethodVerifyV1 || method == MethodVerifyV2
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			frontend.WriteError(w, frontend.NotFound("no such API method: %s %s", r.Method, r.URL.Path))
			return
		}
		if !s.faults.Wait(r.Context()) {
			return
		}
		body, ferr := frontend.ReadBody(r)
		if ferr != nil {
			frontend.WriteError(w, ferr)
			return
		}
		if refusal := s.faults.Refusal(method, "", errorDetails); refusal != nil {
			s.count(version, isVerify, OutcomeInjected)
			s.log.Debug("injected failure", zap.String("method", method), zap.Int("status", refusal.Code))
			frontend.WriteError(w, refusal)
			return
		}

		resp, outcome, aerr := apply(body)
		s.count(version, isVerify, outcome)
		lost := s.faults.LostResponse(method, "")

		fields := []zap.Field{zap.String("method", method)}
		if outcome != "" {
			fields = append(fields, zap.String("outcome", outcome))
		}
		if aerr != nil {
			fields = append(fields, zap.String("error", aerr.Error()))
		}
		s.log.Debug("verified access call", fields...)
		switch {
		case lost != nil:
			frontend.WriteError(w, lost)
		case aerr != nil:
			frontend.WriteError(w, aerr)
		default:
			frontend.WriteJSON(w, http.StatusOK, resp)
		}
	}
}

// count records a verify call and its outcome; challenge creation counts itself in issue.
func (s *Service) count(version string, isVerify bool, outcome string) {
	if !isVerify {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.VerifyCalls[version]++
	s.stats.Verifies[outcome]++
}

// vaInvalid is a Verified Access refusal of a request (400 INVALID_ARGUMENT) with the
// google.rpc.BadRequest detail Google's APIs attach to one. Its text is for people: clients
// branch on the status alone.
func vaInvalid(format string, args ...any) *frontend.Error {
	e := frontend.InvalidArgument(format, args...)
	e.Details = []any{map[string]any{
		"@type":           "type.googleapis.com/google.rpc.BadRequest",
		"fieldViolations": []map[string]string{{"field": "challenge_response", "description": e.Message}},
	}}
	return e
}

// errorDetails are the details Google's front end attaches to an injected refusal of the
// Verified Access API (AIP-193 ErrorInfo): why a caller may not use it (403), or that it spent
// its quota (429). Other statuses carry none.
func errorDetails(status int) []any {
	reason := map[int]string{http.StatusForbidden: "SERVICE_DISABLED", http.StatusTooManyRequests: "RATE_LIMIT_EXCEEDED"}[status]
	if reason == "" {
		return nil
	}
	return []any{map[string]any{
		"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com",
		"metadata": map[string]string{"service": "verifiedaccess.googleapis.com"},
	}}
}

// challengeV1 is POST v1/challenge: the challenge as a SignedData object; alternativeChallenge
// is left out, as Google sends it only while it rotates its signing key.
func (s *Service) challengeV1(body []byte) (any, string, *frontend.Error) {
	if aerr := frontend.DecodeBody(body, &va1.Empty{}); aerr != nil {
		return nil, "", aerr
	}
	data, sig, err := s.issue(V1)
	if err != nil {
		return nil, "", frontend.Internal(err)
	}
	return &va1.Challenge{Challenge: &va1.SignedData{Data: frontend.Base64(data), Signature: frontend.Base64(sig)}}, "", nil
}

// generateV2 is POST v2/challenge:generate: the challenge as the bytes of a serialized
// SignedData.
func (s *Service) generateV2(body []byte) (any, string, *frontend.Error) {
	if aerr := frontend.DecodeBody(body, &va2.Empty{}); aerr != nil {
		return nil, "", aerr
	}
	data, sig, err := s.issue(V2)
	if err != nil {
		return nil, "", frontend.Internal(err)
	}
	return &va2.Challenge{Challenge: frontend.Base64(wire.MarshalSignedData(data, sig))}, "", nil
}

// verifyV1 is POST v1/challenge:verify.
func (s *Service) verifyV1(body []byte) (any, string, *frontend.Error) {
	var req va1.VerifyChallengeResponseRequest
	if aerr := frontend.DecodeBody(body, &req); aerr != nil {
		return nil, OutcomeMalformed, aerr
	}
	if req.ChallengeResponse == nil {
		return nil, OutcomeInvalid, vaInvalid("%s: challengeResponse is required", vaMessageInvalid)
	}
	data, err1 := frontend.DecodeBase64(req.ChallengeResponse.Data)
	sig, err2 := frontend.DecodeBase64(req.ChallengeResponse.Signature)
	if err := errors.Join(err1, err2); err != nil {
		return nil, OutcomeInvalid, vaInvalid("%s: data or signature is not base64", vaMessageInvalid)
	}
	rec, outcome, aerr := s.verify(V1, data, sig, req.ExpectedIdentity)
	if aerr != nil {
		return nil, outcome, aerr
	}
	res := &va1.VerifyChallengeResponseResult{
		AttestedDeviceId:            rec.device.AttestedDeviceID,
		DeviceEnrollmentId:          rec.device.DeviceEnrollmentID,
		DevicePermanentId:           rec.device.DevicePermanentID,
		SignedPublicKeyAndChallenge: frontend.Base64(rec.spkac),
	}
	// The deprecated field: the permanent id for machine keys, the SPKAC for user keys.
	res.VerificationOutput = res.SignedPublicKeyAndChallenge
	if rec.scope == ScopeMachine {
		res.VerificationOutput = rec.device.DevicePermanentID
	}
	return res, outcome, nil
}

// verifyV2 is POST v2/challenge:verify.
func (s *Service) verifyV2(body []byte) (any, string, *frontend.Error) {
	var req va2.VerifyChallengeResponseRequest
	if aerr := frontend.DecodeBody(body, &req); aerr != nil {
		return nil, OutcomeMalformed, aerr
	}
	if req.ChallengeResponse == "" {
		return nil, OutcomeInvalid, vaInvalid("%s: challengeResponse is required", vaMessageInvalid)
	}
	raw, err := frontend.DecodeBase64(req.ChallengeResponse)
	if err != nil {
		return nil, OutcomeInvalid, vaInvalid("%s: challengeResponse is not base64", vaMessageInvalid)
	}
	data, sig, err := wire.UnmarshalSignedData(raw)
	if err != nil {
		return nil, OutcomeInvalid, vaInvalid("%s: not a serialized SignedData", vaMessageInvalid)
	}
	rec, outcome, aerr := s.verify(V2, data, sig, req.ExpectedIdentity)
	if aerr != nil {
		return nil, outcome, aerr
	}
	d := rec.device
	res := &va2.VerifyChallengeResponseResult{
		AttestedDeviceId:            d.AttestedDeviceID,
		CustomerId:                  d.CustomerID,
		DeviceEnrollmentId:          d.DeviceEnrollmentID,
		DevicePermanentId:           d.DevicePermanentID,
		DeviceSignals:               d.DeviceSignals,
		KeyTrustLevel:               d.KeyTrustLevel,
		ProfileCustomerId:           d.ProfileCustomerID,
		ProfileKeyTrustLevel:        d.ProfileKeyTrustLevel,
		ProfilePermanentId:          d.ProfilePermanentID,
		SignedPublicKeyAndChallenge: frontend.Base64(rec.spkac),
		VirtualDeviceId:             d.VirtualDeviceID,
		VirtualProfileId:            d.VirtualProfileID,
	}
	if d.DeviceSignals != nil {
		// The deprecated deviceSignal: the same signals as a JSON string.
		s, err := json.Marshal(d.DeviceSignals)
		if err != nil {
			return nil, OutcomeVerified, frontend.Internal(err)
		}
		res.DeviceSignal = string(s)
	}
	return res, outcome, nil
}

// serveRespond is POST /emulator/v1/verifiedaccess/respond, the stand-in for
// enterprise.platformKeys.challengeKey.
func (s *Service) serveRespond(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		frontend.WriteError(w, frontend.MethodNotAllowed("POST", RespondPath))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, frontend.MaxBodyBytes))
	if err != nil {
		frontend.WriteError(w, frontend.InvalidArgument("read request body: %v", err))
		return
	}
	var req RespondRequest
	if err := json.Unmarshal(body, &req); err != nil {
		frontend.WriteError(w, frontend.InvalidArgument("respond: %v", err))
		return
	}
	res, err := s.Respond(r.Context(), req)
	if err != nil {
		var aerr *frontend.Error
		if errors.As(err, &aerr) {
			frontend.WriteError(w, &frontend.Error{Code: aerr.Code, Status: aerr.Status, Message: "respond: " + aerr.Message})
			return
		}
		frontend.WriteError(w, frontend.Internal(err))
		return
	}
	frontend.WriteJSON(w, http.StatusOK, res)
}

// serveStats is GET /emulator/v1/verifiedaccess/stats: Stats as JSON, for tests that run the
// emulator as a separate process.
func (s *Service) serveStats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		frontend.WriteError(w, frontend.MethodNotAllowed("GET", StatsPath))
		return
	}
	frontend.WriteJSON(w, http.StatusOK, s.Stats())
}

// ServiceKey is the answer of GET /emulator/v1/verifiedaccess/service-key: the public key a
// device outside the emulator (the sample extension's stand-in for chrome.enterprise) encrypts
// the KeyInfo of its answer to, as ChromeOS encrypts it to Google's, and its wrapping_key_id.
type ServiceKey struct {
	PublicKey []byte `json:"publicKey"` // DER SubjectPublicKeyInfo, RSA-2048
	KeyID     string `json:"keyId"`
}

func (s *Service) serveServiceKey(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		frontend.WriteError(w, frontend.MethodNotAllowed("GET", ServiceKeyPath))
		return
	}
	sk, err := s.service.load()
	if err != nil {
		frontend.WriteError(w, frontend.Internal(err))
		return
	}
	frontend.WriteJSON(w, http.StatusOK, ServiceKey{PublicKey: sk.spki, KeyID: string(sk.id)})
}
