package emulator

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	cm "google.golang.org/api/chromemanagement/v1"
	"google.golang.org/api/googleapi"

	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/process"
)

const (
	typeSignDataMetadata = "type.googleapis.com/google.chrome.management.versions.v1.SignDataMetadata"
	typeSignDataResponse = "type.googleapis.com/google.chrome.management.versions.v1.SignDataResponse"
)

// Handler serves the REST API of chromemanagement v1 (certificateProvisioningProcesses) under
// /v1/, the Verified Access API v1 and v2 (package vagoogle: /v1/challenge, /v1/challenge:verify,
// /v2/challenge:generate, /v2/challenge:verify), the Admin SDK Directory's chromeosdevices.get and
// users.get (directory.go) and the emulator's control API under /emulator/v1/, all on one
// listener. Any Authorization header, or none, is accepted.
func (e *Emulator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/", e.serveAPI)
	mux.HandleFunc("/emulator/v1/", e.serveControl)
	mux.HandleFunc(StatsPath, e.serveStats)
	mux.HandleFunc(NotifyPath, e.serveNotify)
	mux.HandleFunc(directoryPrefix, e.serveDirectory)
	e.va.Register(mux) // exact paths: they take precedence over "/v1/"
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		frontend.WriteError(w, frontend.NotFound("no such resource: %s", r.URL.Path))
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
func parseAPIPath(httpMethod, path string) (apiCall, *frontend.Error) {
	parts := strings.Split(path, "/")
	bad := frontend.NotFound("no such API method: %s %s", httpMethod, "/v1/"+path)
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
		frontend.WriteError(w, aerr)
		return
	}
	// Counted on arrival, as a quota counts it, whatever the answer.
	e.requests.record(call.method, time.Now())

	if !e.faults.Wait(r.Context()) {
		return
	}

	var body []byte
	if r.Method == http.MethodPost {
		b, ferr := frontend.ReadBody(r)
		if ferr != nil {
			frontend.WriteError(w, ferr)
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
	if refusal := e.faults.Refusal(call.method, target, nil); refusal != nil {
		if p != nil {
			p.injected[call.method]++
		}
		e.mu.Unlock()
		e.log.Debug("injected failure", zap.String("method", call.method), zap.Int("status", refusal.Code))
		frontend.WriteError(w, refusal)
		return
	}
	var resp any
	if p == nil {
		aerr = frontend.NotFound("Requested entity was not found.")
	} else {
		resp, aerr = e.applyLocked(call, p, body)
	}
	lost := e.faults.LostResponse(call.method, target)
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
		frontend.WriteError(w, lost)
		return
	}
	if aerr != nil {
		frontend.WriteError(w, aerr)
		return
	}
	frontend.WriteJSON(w, http.StatusOK, resp)
}

// applyLocked executes one API call against p.
func (e *Emulator) applyLocked(call apiCall, p *proc, body []byte) (any, *frontend.Error) {
	switch call.method {
	case MethodGet:
		return p.resource(true), nil
	case MethodOperationsGet:
		if p.opID == "" || call.opID != p.opID {
			return nil, frontend.NotFound("Operation not found: %s/operations/%s", p.name, call.opID)
		}
		return e.operationLocked(p), nil
	case MethodClaim:
		var req cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest
		if err := frontend.DecodeBody(body, &req); err != nil {
			return nil, err
		}
		return e.claimLocked(p, req.CallerInstanceId)
	case MethodSignData:
		var req cm.GoogleChromeManagementVersionsV1SignDataRequest
		if err := frontend.DecodeBody(body, &req); err != nil {
			return nil, err
		}
		return e.signDataLocked(p, req.SignData, req.SignatureAlgorithm)
	case MethodUploadCertificate:
		var req cm.GoogleChromeManagementVersionsV1UploadCertificateRequest
		if err := frontend.DecodeBody(body, &req); err != nil {
			return nil, err
		}
		return e.uploadLocked(p, req.CertificatePem)
	case MethodSetFailure:
		var req cm.GoogleChromeManagementVersionsV1SetFailureRequest
		if err := frontend.DecodeBody(body, &req); err != nil {
			return nil, err
		}
		return e.setFailureLocked(p, req.ErrorMessage)
	default:
		return nil, frontend.NotFound("no such API method %q", call.method)
	}
}

func finishedError(p *proc) *frontend.Error {
	if p.failure != "" {
		return frontend.FailedPrecondition("The certificate provisioning process %s has already failed.", p.id)
	}
	return frontend.FailedPrecondition("The certificate provisioning process %s already has an issued certificate.", p.id)
}

func (e *Emulator) claimLocked(p *proc, instance string) (any, *frontend.Error) {
	if instance == "" {
		return nil, frontend.InvalidArgument("callerInstanceId must not be empty.")
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
			return nil, &frontend.Error{Code: 409, Status: "ABORTED",
				Message: "The certificate provisioning process was already claimed by another adapter instance."}
		}
		return nil, frontend.FailedPrecondition("The certificate provisioning process was already claimed by another adapter instance.")
	}
	return struct{}{}, nil
}

func (e *Emulator) signDataLocked(p *proc, data64, algorithm string) (any, *frontend.Error) {
	if p.finished() {
		return nil, finishedError(p)
	}
	if p.claimedBy == "" {
		return nil, frontend.FailedPrecondition("The certificate provisioning process %s has not been claimed.", p.id)
	}
	if data64 == "" {
		return nil, frontend.InvalidArgument("signData must not be empty.")
	}
	data, err := frontend.DecodeBase64(data64)
	if err != nil || len(data) == 0 {
		return nil, frontend.InvalidArgument("signData is not valid base64.")
	}
	switch algorithm {
	case process.AlgorithmRSAPKCS1SHA256, process.AlgorithmECDSASHA256:
	default:
		return nil, frontend.InvalidArgument("Invalid value for signatureAlgorithm: %q.", algorithm)
	}
	p.signDataCount++
	if p.signData != nil {
		// The device refuses a second proof-of-possession request and fails the whole process.
		e.failLocked(p, failClient, MessageSignDataTwice)
		return nil, frontend.FailedPrecondition("signData was already requested for the certificate provisioning process %s; "+
			"the client failed the process: %s", p.id, MessageSignDataTwice)
	}
	opID, rerr := randomHex(16)
	if rerr != nil {
		return nil, frontend.Internal(rerr)
	}
	p.signData = data
	p.algorithm = algorithm
	p.opID = opID
	p.opStart = e.clock()
	e.scheduleSignLocked(p)
	e.log.Info("sign data requested", zap.String("process", p.name), zap.String("algorithm", algorithm))
	return e.operationLocked(p), nil
}

func (e *Emulator) uploadLocked(p *proc, certPEM string) (any, *frontend.Error) {
	if p.finished() {
		return nil, finishedError(p)
	}
	if p.claimedBy == "" {
		return nil, frontend.FailedPrecondition("The certificate provisioning process %s has not been claimed.", p.id)
	}
	if p.signature == nil {
		return nil, frontend.FailedPrecondition("The client has not completed the proof of possession for process %s.", p.id)
	}
	cert, err := parseSingleCertificatePEM(certPEM)
	if err != nil {
		return nil, frontend.InvalidArgument("certificatePem: %v", err)
	}
	if !bytes.Equal(cert.RawSubjectPublicKeyInfo, p.key.SPKI) {
		return nil, frontend.InvalidArgument("certificatePem: the certificate's public key does not match the " +
			"subjectPublicKeyInfo of the certificate provisioning process.")
	}
	p.stopTimer()
	p.issuedPEM = certPEM
	p.finishedAt = e.clock()
	e.log.Info("certificate uploaded", zap.String("process", p.name), zap.String("subject", cert.Subject.String()))
	return struct{}{}, nil
}

func (e *Emulator) setFailureLocked(p *proc, message string) (any, *frontend.Error) {
	if p.finished() {
		return nil, finishedError(p)
	}
	if p.claimedBy == "" {
		return nil, frontend.FailedPrecondition("The certificate provisioning process %s has not been claimed.", p.id)
	}
	if strings.TrimSpace(message) == "" {
		return nil, frontend.InvalidArgument("errorMessage must not be empty.")
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
