package emulator

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	cm "google.golang.org/api/chromemanagement/v1"
	"google.golang.org/api/googleapi"

	"github.com/certprov/certprov-adapter/internal/process"
)

const (
	typeSignDataMetadata = "type.googleapis.com/google.chrome.management.versions.v1.SignDataMetadata"
	typeSignDataResponse = "type.googleapis.com/google.chrome.management.versions.v1.SignDataResponse"

	maxBodyBytes = 1 << 20
)

// apiError is an error answered with Google's error envelope.
type apiError struct {
	code    int    // HTTP status
	status  string // google.rpc.Code name
	message string
	details []any // google.rpc error details (AIP-193), each with its @type; nil sends none
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.code, e.status, e.message) }

func invalidArgument(format string, args ...any) *apiError {
	return &apiError{code: 400, status: "INVALID_ARGUMENT", message: fmt.Sprintf(format, args...)}
}

func failedPrecondition(format string, args ...any) *apiError {
	return &apiError{code: 400, status: "FAILED_PRECONDITION", message: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{code: 404, status: "NOT_FOUND", message: fmt.Sprintf(format, args...)}
}

// Handler serves the REST API of chromemanagement v1 (certificateProvisioningProcesses) under
// /v1/, the Verified Access API v1 and v2 (/v1/challenge, /v1/challenge:verify,
// /v2/challenge:generate, /v2/challenge:verify), the Admin SDK Directory's chromeosdevices.get and
// users.get (directory.go) and the emulator's control API under
// /emulator/v1/. Any Authorization header, or none, is accepted.
func (e *Emulator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/", e.serveAPI)
	mux.HandleFunc("/emulator/v1/", e.serveControl)
	mux.HandleFunc(StatsPath, e.serveStats)
	mux.HandleFunc(NotifyPath, e.serveNotify)
	mux.HandleFunc(directoryPrefix, e.serveDirectory)
	e.registerVA(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, notFound("no such resource: %s", r.URL.Path), 0)
	})
	return mux
}

// apiCall is a parsed REST request.
type apiCall struct {
	method       string // MethodGet, MethodClaim, ...
	customer, id string
	opID         string
}

// parseAPIPath maps an HTTP method and path (after /v1/) to an API method.
func parseAPIPath(httpMethod, path string) (apiCall, *apiError) {
	parts := strings.Split(path, "/")
	bad := notFound("no such API method: %s %s", httpMethod, "/v1/"+path)
	if len(parts) < 4 || parts[0] != "customers" || parts[2] != "certificateProvisioningProcesses" || parts[1] == "" {
		return apiCall{}, bad
	}
	c := apiCall{customer: parts[1]}
	switch len(parts) {
	case 4:
		id, verb, hasVerb := strings.Cut(parts[3], ":")
		c.id = id
		switch {
		case !hasVerb && httpMethod == http.MethodGet:
			c.method = MethodGet
		case hasVerb && httpMethod == http.MethodPost:
			switch verb {
			case MethodClaim, MethodSignData, MethodUploadCertificate, MethodSetFailure:
				c.method = verb
			default:
				return apiCall{}, bad
			}
		default:
			return apiCall{}, bad
		}
	case 6:
		if parts[4] != "operations" || parts[5] == "" || httpMethod != http.MethodGet {
			return apiCall{}, bad
		}
		c.id, c.opID, c.method = parts[3], parts[5], MethodOperationsGet
	default:
		return apiCall{}, bad
	}
	if c.id == "" {
		return apiCall{}, bad
	}
	return c, nil
}

func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request) {
	call, aerr := parseAPIPath(r.Method, strings.TrimPrefix(r.URL.Path, "/v1/"))
	if aerr != nil {
		writeError(w, aerr, 0)
		return
	}
	// Counted on arrival, as a quota counts it, whatever the answer.
	e.requests.record(call.method, time.Now())

	if !e.waitLatency(r.Context()) {
		return
	}

	var body []byte
	if r.Method == http.MethodPost {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
		if err != nil {
			writeError(w, invalidArgument("read request body: %v", err), 0)
			return
		}
		if len(b) > maxBodyBytes {
			writeError(w, invalidArgument("request body larger than %d bytes", maxBodyBytes), 0)
			return
		}
		body = b
	}

	e.mu.Lock()
	p := e.lookupLocked(call.customer, call.id)
	target := process.Name(call.customer, call.id)
	if p != nil {
		p.calls[call.method]++
		target = p.name
	}
	if rule := takeRuleLocked(&e.failRules, call.method, target); rule != nil {
		if p != nil {
			p.injected[call.method]++
		}
		e.mu.Unlock()
		e.log.Debug("injected failure", zap.String("method", call.method), zap.Int("status", rule.status))
		writeError(w, &apiError{code: rule.status, status: statusName(rule.status),
			message: "injected failure (emulator)"}, rule.retryAfter)
		return
	}
	var resp any
	if p == nil {
		aerr = notFound("Requested entity was not found.")
	} else {
		resp, aerr = e.applyLocked(call, p, body)
	}
	lost := takeRuleLocked(&e.loseRules, call.method, target)
	if lost != nil && p != nil {
		p.injected[call.method]++
	}
	e.mu.Unlock()

	logFields := []zap.Field{zap.String("method", call.method), zap.String("id", call.id)}
	if aerr != nil {
		logFields = append(logFields, zap.String("error", aerr.Error()))
	}
	e.log.Debug("api call", logFields...)
	if lost != nil {
		writeError(w, &apiError{code: lost.status, status: statusName(lost.status),
			message: "The service is currently unavailable (emulator: response lost)."}, lost.retryAfter)
		return
	}
	if aerr != nil {
		writeError(w, aerr, 0)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// applyLocked executes one API call against p.
func (e *Emulator) applyLocked(call apiCall, p *proc, body []byte) (any, *apiError) {
	switch call.method {
	case MethodGet:
		return p.resource(true), nil
	case MethodOperationsGet:
		if p.opID == "" || call.opID != p.opID {
			return nil, notFound("Operation not found: %s/operations/%s", p.name, call.opID)
		}
		return e.operationLocked(p), nil
	case MethodClaim:
		var req cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest
		if err := decodeBody(body, &req); err != nil {
			return nil, err
		}
		return e.claimLocked(p, req.CallerInstanceId)
	case MethodSignData:
		var req cm.GoogleChromeManagementVersionsV1SignDataRequest
		if err := decodeBody(body, &req); err != nil {
			return nil, err
		}
		return e.signDataLocked(p, req.SignData, req.SignatureAlgorithm)
	case MethodUploadCertificate:
		var req cm.GoogleChromeManagementVersionsV1UploadCertificateRequest
		if err := decodeBody(body, &req); err != nil {
			return nil, err
		}
		return e.uploadLocked(p, req.CertificatePem)
	case MethodSetFailure:
		var req cm.GoogleChromeManagementVersionsV1SetFailureRequest
		if err := decodeBody(body, &req); err != nil {
			return nil, err
		}
		return e.setFailureLocked(p, req.ErrorMessage)
	default:
		return nil, notFound("no such API method %q", call.method)
	}
}

// decodeBody parses a JSON request body strictly, as Google's front end does (unknown field
// names are rejected).
func decodeBody(body []byte, v any) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidArgument("Invalid JSON payload received. %v", err)
	}
	if dec.More() {
		return invalidArgument("Invalid JSON payload received. Unexpected data after the JSON object.")
	}
	return nil
}

func finishedError(p *proc) *apiError {
	if p.failure != "" {
		return failedPrecondition("The certificate provisioning process %s has already failed.", p.id)
	}
	return failedPrecondition("The certificate provisioning process %s already has an issued certificate.", p.id)
}

func (e *Emulator) claimLocked(p *proc, instance string) (any, *apiError) {
	if instance == "" {
		return nil, invalidArgument("callerInstanceId must not be empty.")
	}
	if p.finished() {
		return nil, finishedError(p)
	}
	switch p.claimedBy {
	case "":
		p.claimedBy = instance
		e.log.Info("process claimed", zap.String("process", p.name), zap.String("instance", instance))
	case instance:
	default:
		if e.conflictStatus == 409 {
			return nil, &apiError{code: 409, status: "ABORTED",
				message: "The certificate provisioning process was already claimed by another adapter instance."}
		}
		return nil, failedPrecondition("The certificate provisioning process was already claimed by another adapter instance.")
	}
	return struct{}{}, nil
}

func (e *Emulator) signDataLocked(p *proc, data64, algorithm string) (any, *apiError) {
	if p.finished() {
		return nil, finishedError(p)
	}
	if p.claimedBy == "" {
		return nil, failedPrecondition("The certificate provisioning process %s has not been claimed.", p.id)
	}
	if data64 == "" {
		return nil, invalidArgument("signData must not be empty.")
	}
	data, err := decodeBase64(data64)
	if err != nil || len(data) == 0 {
		return nil, invalidArgument("signData is not valid base64.")
	}
	switch algorithm {
	case process.AlgorithmRSAPKCS1SHA256, process.AlgorithmECDSASHA256:
	default:
		return nil, invalidArgument("Invalid value for signatureAlgorithm: %q.", algorithm)
	}
	p.signDataCount++
	if p.signData != nil {
		// The device refuses a second proof-of-possession request and fails the whole process.
		e.failLocked(p, failClient, MessageSignDataTwice)
		return nil, failedPrecondition("signData was already requested for the certificate provisioning process %s; "+
			"the client failed the process: %s", p.id, MessageSignDataTwice)
	}
	opID, rerr := randomHex(16)
	if rerr != nil {
		return nil, &apiError{code: 500, status: "INTERNAL", message: rerr.Error()}
	}
	p.signData = data
	p.algorithm = algorithm
	p.opID = opID
	p.opStart = e.clock()
	e.scheduleSignLocked(p)
	e.log.Info("sign data requested", zap.String("process", p.name), zap.String("algorithm", algorithm))
	return e.operationLocked(p), nil
}

func (e *Emulator) uploadLocked(p *proc, certPEM string) (any, *apiError) {
	if p.finished() {
		return nil, finishedError(p)
	}
	if p.claimedBy == "" {
		return nil, failedPrecondition("The certificate provisioning process %s has not been claimed.", p.id)
	}
	if p.signature == nil {
		return nil, failedPrecondition("The client has not completed the proof of possession for process %s.", p.id)
	}
	cert, err := parseSingleCertificatePEM(certPEM)
	if err != nil {
		return nil, invalidArgument("certificatePem: %v", err)
	}
	if !bytes.Equal(cert.RawSubjectPublicKeyInfo, p.key.spki) {
		return nil, invalidArgument("certificatePem: the certificate's public key does not match the " +
			"subjectPublicKeyInfo of the certificate provisioning process.")
	}
	p.stopTimer()
	p.issuedPEM = certPEM
	p.finishedAt = e.clock()
	e.log.Info("certificate uploaded", zap.String("process", p.name), zap.String("subject", cert.Subject.String()))
	return struct{}{}, nil
}

func (e *Emulator) setFailureLocked(p *proc, message string) (any, *apiError) {
	if p.finished() {
		return nil, finishedError(p)
	}
	if p.claimedBy == "" {
		return nil, failedPrecondition("The certificate provisioning process %s has not been claimed.", p.id)
	}
	if strings.TrimSpace(message) == "" {
		return nil, invalidArgument("errorMessage must not be empty.")
	}
	e.failLocked(p, failAdapter, message)
	return struct{}{}, nil
}

// parseSingleCertificatePEM accepts exactly one PEM CERTIFICATE block (surrounding whitespace
// allowed) holding a parseable X.509 certificate.
func parseSingleCertificatePEM(s string) (*x509.Certificate, error) {
	block, rest := pem.Decode(bytes.TrimSpace([]byte(s)))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("PEM block of type %q, want CERTIFICATE", block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		if next, _ := pem.Decode(rest); next != nil {
			return nil, errors.New("more than one PEM block: upload the leaf certificate only, not a chain")
		}
		return nil, errors.New("unexpected data after the PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}

// decodeBase64 accepts standard and URL-safe base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("invalid base64")
}

type typedMetadata struct {
	Type      string `json:"@type,omitempty"`
	StartTime string `json:"startTime,omitempty"`
}

type typedResponse struct {
	Type    string                                                             `json:"@type,omitempty"`
	Process *cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess `json:"certificateProvisioningProcess,omitempty"`
}

// operationLocked renders the signData LRO of p in its current state: in progress while the
// device has not signed, done with the process once it signed, done with an error once the
// process failed.
func (e *Emulator) operationLocked(p *proc) *cm.GoogleLongrunningOperation {
	typ := func(t string) string {
		if e.lro.OmitType {
			return ""
		}
		return t
	}
	meta, _ := json.Marshal(typedMetadata{Type: typ(typeSignDataMetadata), StartTime: formatTime(p.opStart)})
	op := &cm.GoogleLongrunningOperation{
		Name:     p.name + "/operations/" + p.opID,
		Metadata: googleapi.RawMessage(meta),
	}
	switch {
	case p.failure != "":
		op.Done = true
		op.Error = &cm.GoogleRpcStatus{
			Code: 3,
			Message: fmt.Sprintf("The requested SignData LRO failed because the corresponding certificate provisioning "+
				"process is in failure state %s with the following error message: %s [operationId=%s, cppId=%s, customerId=%s]",
				p.failureState, p.failure, p.opID, p.id, p.customer),
		}
	case p.signature != nil:
		op.Done = true
		resp, _ := json.Marshal(typedResponse{
			Type:    typ(typeSignDataResponse),
			Process: p.resource(!e.lro.OmitSignatureInResponse),
		})
		op.Response = googleapi.RawMessage(resp)
	}
	return op
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"error":{"code":500,"message":"marshal response","status":"INTERNAL"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

type errorEnvelope struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
	Details []any  `json:"details,omitempty"`
}

// writeError answers with Google's error envelope and, when retryAfter > 0, a Retry-After header
// in whole seconds.
func writeError(w http.ResponseWriter, aerr *apiError, retryAfter time.Duration) {
	if retryAfter > 0 {
		secs := int64(math.Ceil(retryAfter.Seconds()))
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	writeJSON(w, aerr.code, errorEnvelope{Error: errorBody{Code: aerr.code, Message: aerr.message, Status: aerr.status, Details: aerr.details}})
}

// waitLatency sleeps the injected latency; false means the client gave up meanwhile.
func (e *Emulator) waitLatency(ctx context.Context) bool {
	e.mu.Lock()
	latency := e.latency
	e.mu.Unlock()
	if latency <= 0 {
		return true
	}
	t := time.NewTimer(latency)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
