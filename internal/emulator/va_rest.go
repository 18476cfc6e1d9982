package emulator

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"go.uber.org/zap"
	va1 "google.golang.org/api/verifiedaccess/v1"
	va2 "google.golang.org/api/verifiedaccess/v2"

	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// Paths of the Verified Access API (as the generated clients call them) and of the emulator's
// Verified Access control endpoints.
const (
	VAPathChallengeV1 = "/v1/challenge"
	VAPathVerifyV1    = "/v1/challenge:verify"
	VAPathGenerateV2  = "/v2/challenge:generate"
	VAPathVerifyV2    = "/v2/challenge:verify"

	VARespondPath = "/emulator/v1/verifiedaccess/respond"
	VAStatsPath   = "/emulator/v1/verifiedaccess/stats"
	// VAServiceKeyPath serves the public key devices encrypt their key info to (VAServiceKey).
	VAServiceKeyPath = "/emulator/v1/verifiedaccess/service-key"
)

// registerVA adds the Verified Access routes to the emulator's mux. The exact paths take
// precedence over the "/v1/" prefix of the certificate provisioning API.
func (e *Emulator) registerVA(mux *http.ServeMux) {
	mux.HandleFunc(VAPathChallengeV1, e.vaHandler(MethodVAChallengeV1, VAv1, e.vaChallengeV1))
	mux.HandleFunc(VAPathVerifyV1, e.vaHandler(MethodVAVerifyV1, VAv1, e.vaVerifyV1))
	mux.HandleFunc(VAPathGenerateV2, e.vaHandler(MethodVAGenerateV2, VAv2, e.vaGenerateV2))
	mux.HandleFunc(VAPathVerifyV2, e.vaHandler(MethodVAVerifyV2, VAv2, e.vaVerifyV2))
	mux.HandleFunc(VARespondPath, e.serveVARespond)
	mux.HandleFunc(VAStatsPath, e.serveVAStats)
	mux.HandleFunc(VAServiceKeyPath, e.serveVAServiceKey)
}

// vaApply handles one Verified Access call: it returns the response body or an error, plus the
// verify outcome to count ("" for challenge creation).
type vaApply func(body []byte) (resp any, outcome string, aerr *apiError)

// vaHandler wraps a Verified Access method with what every emulated Google call gets: POST only,
// the configured latency, a bounded body, and the injected faults of FailNext and
// LoseNextResponses under the method's name.
func (e *Emulator) vaHandler(method, version string, apply vaApply) http.HandlerFunc {
	isVerify := method == MethodVAVerifyV1 || method == MethodVAVerifyV2
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeError(w, notFound("no such API method: %s %s", r.Method, r.URL.Path), 0)
			return
		}
		if !e.waitLatency(r.Context()) {
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
		if err != nil {
			writeError(w, invalidArgument("read request body: %v", err), 0)
			return
		}
		if len(body) > maxBodyBytes {
			writeError(w, invalidArgument("request body larger than %d bytes", maxBodyBytes), 0)
			return
		}

		e.mu.Lock()
		rule := takeRuleLocked(&e.failRules, method, "")
		e.mu.Unlock()
		if rule != nil {
			e.countVA(version, isVerify, VAOutcomeInjected)
			e.log.Debug("injected failure", zap.String("method", method), zap.Int("status", rule.status))
			writeError(w, &apiError{code: rule.status, status: statusName(rule.status),
				message: "injected failure (emulator)", details: vaErrorDetails(rule.status)}, rule.retryAfter)
			return
		}

		resp, outcome, aerr := apply(body)
		e.countVA(version, isVerify, outcome)
		e.mu.Lock()
		lost := takeRuleLocked(&e.loseRules, method, "")
		e.mu.Unlock()

		fields := []zap.Field{zap.String("method", method)}
		if outcome != "" {
			fields = append(fields, zap.String("outcome", outcome))
		}
		if aerr != nil {
			fields = append(fields, zap.String("error", aerr.Error()))
		}
		e.log.Debug("verified access call", fields...)
		switch {
		case lost != nil:
			writeError(w, &apiError{code: lost.status, status: statusName(lost.status),
				message: "The service is currently unavailable (emulator: response lost)."}, lost.retryAfter)
		case aerr != nil:
			writeError(w, aerr, 0)
		default:
			writeJSON(w, http.StatusOK, resp)
		}
	}
}

// countVA records a verify call and its outcome; challenge creation counts itself in vaIssue.
func (e *Emulator) countVA(version string, isVerify bool, outcome string) {
	if !isVerify {
		return
	}
	e.va.mu.Lock()
	defer e.va.mu.Unlock()
	e.va.stats.VerifyCalls[version]++
	e.va.stats.Verifies[outcome]++
}

// vaInvalid is a Verified Access refusal of a request (400 INVALID_ARGUMENT) with the
// google.rpc.BadRequest detail Google's APIs attach to one. Its text is for people: clients
// branch on the status alone.
func vaInvalid(format string, args ...any) *apiError {
	e := invalidArgument(format, args...)
	e.details = []any{map[string]any{
		"@type":           "type.googleapis.com/google.rpc.BadRequest",
		"fieldViolations": []map[string]string{{"field": "challenge_response", "description": e.message}},
	}}
	return e
}

// vaErrorDetails are the details Google's front end attaches to an injected refusal of the
// Verified Access API (AIP-193 ErrorInfo): why a caller may not use it (403), or that it spent
// its quota (429). Other statuses carry none.
func vaErrorDetails(status int) []any {
	reason := map[int]string{http.StatusForbidden: "SERVICE_DISABLED", http.StatusTooManyRequests: "RATE_LIMIT_EXCEEDED"}[status]
	if reason == "" {
		return nil
	}
	return []any{map[string]any{
		"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com",
		"metadata": map[string]string{"service": "verifiedaccess.googleapis.com"},
	}}
}

func internalError(err error) *apiError {
	return &apiError{code: 500, status: "INTERNAL", message: err.Error()}
}

// vaChallengeV1 is POST v1/challenge: the challenge as a SignedData object; alternativeChallenge
// is left out, as Google sends it only while it rotates its signing key.
func (e *Emulator) vaChallengeV1(body []byte) (any, string, *apiError) {
	if aerr := decodeBody(body, &va1.Empty{}); aerr != nil {
		return nil, "", aerr
	}
	data, sig, err := e.vaIssue(VAv1)
	if err != nil {
		return nil, "", internalError(err)
	}
	return &va1.Challenge{Challenge: &va1.SignedData{Data: b64(data), Signature: b64(sig)}}, "", nil
}

// vaGenerateV2 is POST v2/challenge:generate: the challenge as the bytes of a serialized
// SignedData.
func (e *Emulator) vaGenerateV2(body []byte) (any, string, *apiError) {
	if aerr := decodeBody(body, &va2.Empty{}); aerr != nil {
		return nil, "", aerr
	}
	data, sig, err := e.vaIssue(VAv2)
	if err != nil {
		return nil, "", internalError(err)
	}
	return &va2.Challenge{Challenge: b64(wire.MarshalSignedData(data, sig))}, "", nil
}

// vaVerifyV1 is POST v1/challenge:verify.
func (e *Emulator) vaVerifyV1(body []byte) (any, string, *apiError) {
	var req va1.VerifyChallengeResponseRequest
	if aerr := decodeBody(body, &req); aerr != nil {
		return nil, VAOutcomeMalformed, aerr
	}
	if req.ChallengeResponse == nil {
		return nil, VAOutcomeInvalid, vaInvalid("%s: challengeResponse is required", vaMessageInvalid)
	}
	data, err1 := decodeBase64(req.ChallengeResponse.Data)
	sig, err2 := decodeBase64(req.ChallengeResponse.Signature)
	if err := errors.Join(err1, err2); err != nil {
		return nil, VAOutcomeInvalid, vaInvalid("%s: data or signature is not base64", vaMessageInvalid)
	}
	rec, outcome, aerr := e.vaVerify(VAv1, data, sig, req.ExpectedIdentity)
	if aerr != nil {
		return nil, outcome, aerr
	}
	res := &va1.VerifyChallengeResponseResult{
		AttestedDeviceId:            rec.device.AttestedDeviceID,
		DeviceEnrollmentId:          rec.device.DeviceEnrollmentID,
		DevicePermanentId:           rec.device.DevicePermanentID,
		SignedPublicKeyAndChallenge: b64(rec.spkac),
	}
	// The deprecated field: the permanent id for machine keys, the SPKAC for user keys.
	res.VerificationOutput = res.SignedPublicKeyAndChallenge
	if rec.scope == VAScopeMachine {
		res.VerificationOutput = rec.device.DevicePermanentID
	}
	return res, outcome, nil
}

// vaVerifyV2 is POST v2/challenge:verify.
func (e *Emulator) vaVerifyV2(body []byte) (any, string, *apiError) {
	var req va2.VerifyChallengeResponseRequest
	if aerr := decodeBody(body, &req); aerr != nil {
		return nil, VAOutcomeMalformed, aerr
	}
	if req.ChallengeResponse == "" {
		return nil, VAOutcomeInvalid, vaInvalid("%s: challengeResponse is required", vaMessageInvalid)
	}
	raw, err := decodeBase64(req.ChallengeResponse)
	if err != nil {
		return nil, VAOutcomeInvalid, vaInvalid("%s: challengeResponse is not base64", vaMessageInvalid)
	}
	data, sig, err := wire.UnmarshalSignedData(raw)
	if err != nil {
		return nil, VAOutcomeInvalid, vaInvalid("%s: not a serialized SignedData", vaMessageInvalid)
	}
	rec, outcome, aerr := e.vaVerify(VAv2, data, sig, req.ExpectedIdentity)
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
		SignedPublicKeyAndChallenge: b64(rec.spkac),
		VirtualDeviceId:             d.VirtualDeviceID,
		VirtualProfileId:            d.VirtualProfileID,
	}
	if d.DeviceSignals != nil {
		// The deprecated deviceSignal: the same signals as a JSON string.
		s, err := json.Marshal(d.DeviceSignals)
		if err != nil {
			return nil, VAOutcomeVerified, internalError(err)
		}
		res.DeviceSignal = string(s)
	}
	return res, outcome, nil
}

// serveVARespond is POST /emulator/v1/verifiedaccess/respond, the stand-in for
// enterprise.platformKeys.challengeKey.
func (e *Emulator) serveVARespond(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, &apiError{code: http.StatusMethodNotAllowed, status: "UNIMPLEMENTED",
			message: "use POST on " + VARespondPath}, 0)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, invalidArgument("read request body: %v", err), 0)
		return
	}
	var req VARespondRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, invalidArgument("respond: %v", err), 0)
		return
	}
	res, err := e.VARespond(r.Context(), req)
	if err != nil {
		var aerr *apiError
		if errors.As(err, &aerr) {
			writeError(w, &apiError{code: aerr.code, status: aerr.status, message: "respond: " + aerr.message}, 0)
			return
		}
		writeError(w, internalError(err), 0)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// serveVAStats is GET /emulator/v1/verifiedaccess/stats: VAStats as JSON, for tests that run the
// emulator as a separate process.
func (e *Emulator) serveVAStats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, &apiError{code: http.StatusMethodNotAllowed, status: "UNIMPLEMENTED",
			message: "use GET on " + VAStatsPath}, 0)
		return
	}
	writeJSON(w, http.StatusOK, e.VAStats())
}

// VAServiceKey is the answer of GET /emulator/v1/verifiedaccess/service-key: the public key a
// device outside the emulator (the sample extension's stand-in for chrome.enterprise) encrypts
// the KeyInfo of its answer to, as ChromeOS encrypts it to Google's, and its wrapping_key_id.
type VAServiceKey struct {
	PublicKey []byte `json:"publicKey"` // DER SubjectPublicKeyInfo, RSA-2048
	KeyID     string `json:"keyId"`
}

func (e *Emulator) serveVAServiceKey(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, &apiError{code: http.StatusMethodNotAllowed, status: "UNIMPLEMENTED",
			message: "use GET on " + VAServiceKeyPath}, 0)
		return
	}
	sk, err := e.va.service.load()
	if err != nil {
		writeError(w, internalError(err), 0)
		return
	}
	writeJSON(w, http.StatusOK, VAServiceKey{PublicKey: sk.spki, KeyID: string(sk.id)})
}
