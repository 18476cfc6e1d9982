package ejbca

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
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/retryafter"
)

// The bodies of the REST API, as EJBCA's OpenAPI description names them.

// enrollRequest is EnrollCertificateRestRequest, the body of POST /v1/certificate/pkcs10enroll.
type enrollRequest struct {
	CertificateRequest       string `json:"certificate_request"`
	CertificateProfileName   string `json:"certificate_profile_name"`
	EndEntityProfileName     string `json:"end_entity_profile_name"`
	CertificateAuthorityName string `json:"certificate_authority_name"`
	Username                 string `json:"username"`
	Password                 string `json:"password"`
	IncludeChain             bool   `json:"include_chain"`
}

// certificateResponse is CertificateRestResponse: what enroll and finalize answer, and each
// certificate a search finds.
type certificateResponse struct {
	Certificate      string   `json:"certificate"`   // base64 DER (response_format DER), or PEM
	SerialNumber     string   `json:"serial_number"` // hex
	ResponseFormat   string   `json:"response_format"`
	CertificateChain []string `json:"certificate_chain"` // base64 DER, the issuing CA first
}

// approvalResponse is EJBCA's 202 answer to an enrollment that an administrator must approve.
// Older versions give only the link, which ends in the request id.
type approvalResponse struct {
	StatusCode  int             `json:"status_code"`
	InfoMessage string          `json:"info_message"`
	Link        string          `json:"link"`
	RequestID   json.RawMessage `json:"request_id"`
}

// errorResponse is the body of EJBCA's error answers.
type errorResponse struct {
	ErrorCode    int    `json:"error_code"`
	ErrorMessage string `json:"error_message"`
}

// finalizeRequest is FinalizeRestRequest, the body of POST /v1/certificate/{request_id}/finalize.
type finalizeRequest struct {
	ResponseFormat string `json:"response_format"`
	Password       string `json:"password"`
}

// searchRequest is SearchCertificatesRestRequest, the body of POST /v1/certificate/search.
type searchRequest struct {
	MaxNumberOfResults int              `json:"max_number_of_results"`
	Criteria           []searchCriteria `json:"criteria"`
}

// searchCriteria is SearchCertificateCriteriaRestRequest.
type searchCriteria struct {
	Property  string `json:"property"`
	Value     string `json:"value"`
	Operation string `json:"operation"`
}

// searchResponse is SearchCertificatesRestResponse.
type searchResponse struct {
	Certificates []certificateResponse `json:"certificates"`
	MoreResults  bool                  `json:"more_results"`
}

// revokeResponse is RevokeStatusRestResponse.
type revokeResponse struct {
	IssuerDN         string `json:"issuer_dn"`
	SerialNumber     string `json:"serial_number"`
	RevocationReason string `json:"revocation_reason"`
	RevocationDate   string `json:"revocation_date"`
	Revoked          bool   `json:"revoked"`
	Message          string `json:"message"`
}

// statusResponse is RestResourceStatusRestResponse.
type statusResponse struct {
	Status   string `json:"status"`
	Version  string `json:"version"`
	Revision string `json:"revision"`
}

// caInfo is CaInfoRestResponse; caList is CaInfosRestResponse.
type caInfo struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	SubjectDN string `json:"subject_dn"`
	IssuerDN  string `json:"issuer_dn"`
}

type caList struct {
	CertificateAuthorities []caInfo `json:"certificate_authorities"`
}

// client makes the REST API's exchanges.
type client struct {
	http *http.Client
	base string // https://host[:port]/ejbca/ejbca-rest-api
}

// answer is one HTTP answer.
type answer struct {
	status     int
	body       []byte
	retryAfter time.Duration
}

// maxBody bounds what is read of an answer: a search answer with its certificates is the largest.
const maxBody = 8 << 20

// call sends one exchange: path is below the base, its variable segments already escaped; in,
// when not nil, is sent as JSON. delivered reports whether the request was written in full,
// for a caller that must know whether EJBCA may have acted on it.
func (cl *client) call(ctx context.Context, method, path string, query url.Values, in any) (a *answer, delivered bool, err error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, false, ca.Permanentf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	u := cl.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, false, ca.Permanentf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, delivered, err := catls.Do(cl.http, req)
	if err != nil {
		return nil, delivered, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, true, fmt.Errorf("read the answer (HTTP %d): %w", resp.StatusCode, err)
	}
	return &answer{status: resp.StatusCode, body: b, retryAfter: retryafter.FromHeader(resp.Header)}, true, nil
}

// errorText is EJBCA's error_message (or the start of a body that is not EJBCA's JSON, from a
// proxy), printable, bounded and without the secrets.
func errorText(body []byte, secrets ...string) string {
	var e errorResponse
	msg := string(body)
	if json.Unmarshal(body, &e) == nil && e.ErrorMessage != "" {
		msg = e.ErrorMessage
	}
	msg = ca.ServerText(msg, maxMessage, secrets...)
	if msg == "" {
		return "no reason given"
	}
	return msg
}

// statusError classifies an answer that is not the call's success, keeping EJBCA's reason.
// what names the call ("EJBCA corp: enroll customers/…").
func (c *Connector) statusError(what string, a *answer, secrets ...string) error {
	msg := errorText(a.body, secrets...)
	head := fmt.Sprintf("%s: HTTP %d", what, a.status)
	switch code := a.status; {
	case code == http.StatusBadRequest:
		return ca.Permanentf("%s, EJBCA refused the request: %s", head, msg)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return ca.Permanentf("%s, not authorized: %s (the administrator role of the adapter's client certificate needs the access rules in docs/ca-ejbca.md)", head, msg)
	case code == http.StatusNotFound:
		return ca.Permanentf("%s, not found: %s (check certificateAuthorityName, certificateProfileName, endEntityProfileName and url)", head, msg)
	case code == http.StatusConflict:
		return ca.Permanentf("%s, conflict: %s", head, msg)
	case code == http.StatusRequestEntityTooLarge:
		return ca.Permanentf("%s, too large: %s", head, msg)
	case code == http.StatusUnprocessableEntity:
		return ca.Permanentf("%s, the request does not fulfil end entity profile %s: %s (allow the profile's subject and names in it)", head, c.eeProfile, msg)
	case code == http.StatusTooManyRequests:
		return ca.Retryable(fmt.Errorf("%s, EJBCA is rate limiting: %s", head, msg), a.retryAfter)
	case code == http.StatusServiceUnavailable:
		return ca.Retryable(fmt.Errorf("%s, EJBCA is unavailable (CA or crypto token offline?): %s", head, msg), a.retryAfter)
	case code >= 500 || code == http.StatusRequestTimeout:
		return ca.Retryable(fmt.Errorf("%s, EJBCA failed: %s", head, msg), a.retryAfter)
	case code >= 400:
		return ca.Permanentf("%s: %s (is url EJBCA's REST API?)", head, msg)
	default:
		return ca.Retryable(fmt.Errorf("%s, unexpected answer: %s", head, msg), a.retryAfter)
	}
}

// transportError classifies an error of the HTTP client: no answer came.
func transportError(what string, err error) error {
	err = catls.Cause(err)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	case catls.NotVerified(err):
		return ca.Permanentf("%s: EJBCA's TLS certificate does not verify (check url, tls.caFile and tls.serverName): %w", what, err)
	case strings.Contains(err.Error(), "remote error: tls:"):
		// The TLS alert is the listener's refusal of the client certificate.
		return ca.Permanentf("%s: EJBCA refused the TLS client certificate (%v): tls.certFile must be an administrator's certificate from a CA that EJBCA's TLS listener trusts", what, err)
	}
	return ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
}

// parseCertificate reads a certificate of an answer: base64 DER, as EJBCA writes it for
// response_format DER, or PEM.
func parseCertificate(s string) (*x509.Certificate, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		certs, err := pemutil.ParseCertificates([]byte(s))
		if err != nil {
			return nil, err
		}
		if len(certs) != 1 {
			return nil, fmt.Errorf("%d certificates where one was expected", len(certs))
		}
		return certs[0], nil
	}
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64 DER: %w", err)
	}
	return x509.ParseCertificate(der)
}

// parsed is a certificate of an answer with its chain.
type parsed struct {
	leaf  *x509.Certificate
	chain []*x509.Certificate
}

// parse reads the certificate and chain of r.
func (r *certificateResponse) parse() (*parsed, error) {
	if r.Certificate == "" {
		return nil, errors.New("no certificate")
	}
	leaf, err := parseCertificate(r.Certificate)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if r.SerialNumber != "" {
		if n, ok := parseHex(r.SerialNumber); !ok || n != strings.ToUpper(leaf.SerialNumber.Text(16)) {
			return nil, fmt.Errorf("serial_number %q is not the certificate's (%X)", ca.ServerText(r.SerialNumber, 80), leaf.SerialNumber)
		}
	}
	p := &parsed{leaf: leaf}
	for i, s := range r.CertificateChain {
		cert, err := parseCertificate(s)
		if err != nil {
			return nil, fmt.Errorf("certificate_chain[%d]: %w", i, err)
		}
		p.chain = append(p.chain, cert)
	}
	return p, nil
}

// parseHex normalises a hex serial number: upper case, without leading zeros.
func parseHex(s string) (string, bool) {
	s = strings.TrimLeft(strings.ToUpper(strings.TrimSpace(s)), "0")
	if s == "" {
		return "0", true
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'F') {
			return "", false
		}
	}
	return s, true
}

var (
	// approvalWaiting recognises EJBCA's text for an enrollment held for approval.
	approvalWaiting = regexp.MustCompile(`(?i)(waiting|awaiting|added) for approval`)
	// finalizeLink is the request id in a finalize link.
	finalizeLink = regexp.MustCompile(`/v1/certificate/([0-9]{1,10})/finalize\b`)
	// idInText is a request id in EJBCA's text ("Request with Id '12' is …").
	idInText = regexp.MustCompile(`(?i)\b(?:request[ _-]?)?id\b[^0-9A-Za-z]{0,4}([0-9]{1,10})\b`)
)

// approvalID reads the approval request id from a 202 answer: request_id, or the finalize link,
// or the text. ok is false when none can be found.
func (r *approvalResponse) approvalID() (int64, bool) {
	if len(r.RequestID) > 0 {
		s := strings.Trim(string(r.RequestID), `"`)
		if id, err := strconv.ParseInt(s, 10, 32); err == nil && id >= 0 {
			return id, true
		}
	}
	if m := finalizeLink.FindStringSubmatch(r.Link); m != nil {
		return atoiID(m[1])
	}
	return idFromText(r.InfoMessage)
}

// idFromText reads a request id from EJBCA's text.
func idFromText(s string) (int64, bool) {
	if m := finalizeLink.FindStringSubmatch(s); m != nil {
		return atoiID(m[1])
	}
	if m := idInText.FindStringSubmatch(s); m != nil {
		return atoiID(m[1])
	}
	return 0, false
}

func atoiID(s string) (int64, bool) {
	id, err := strconv.ParseInt(s, 10, 32) // the OpenAPI description: int32
	return id, err == nil && id >= 0
}
