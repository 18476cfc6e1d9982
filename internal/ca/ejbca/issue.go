package ejbca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/leafcheck"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// errSearchForbidden is EJBCA refusing this role a certificate search.
var errSearchForbidden = errors.New("EJBCA does not let this administrator role search certificates")

// ticket is what a pending answer leaves the engine to resume with: the approval request to
// finalize, and the enrollment code when it is random (a derived one is made again).
type ticket struct {
	RequestID int64  `json:"requestId"`
	Code      string `json:"code,omitempty"`
}

const ticketPrefix = "ejbca1:"

func (t ticket) encode() string {
	b, _ := json.Marshal(t) // cannot fail: a number and a string
	return ticketPrefix + string(b)
}

func decodeTicket(s string) (ticket, error) {
	var t ticket
	body, ok := strings.CutPrefix(s, ticketPrefix)
	if !ok {
		return t, errors.New("not an EJBCA ticket")
	}
	if err := json.Unmarshal([]byte(body), &t); err != nil {
		return t, err
	}
	if t.RequestID < 0 {
		return t, errors.New("no approval request id")
	}
	return t, nil
}

// Issue has EJBCA issue a certificate for the request's CSR, or, resuming a request an
// administrator must approve, finalizes it.
//
// It first looks for a certificate EJBCA issued to the request's end entity for this key: a
// repeat (after a lost answer, or a retry) returns it instead of enrolling again. When the role
// may not search, that cannot be known: an enrollment whose answer was lost is then not repeated,
// nor is one this run already made.
func (c *Connector) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	if req == nil {
		return nil, ca.Permanentf("%s: no request", c.label())
	}
	what := fmt.Sprintf("%s: issue %s", c.label(), req.Key)
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	}
	// EJBCA checks the CSR too, but a refusal named here is clearer.
	csr, err := req.CheckedCSR()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	// The CA first: once EJBCA has issued, nothing may stand between the certificate and the engine.
	auth, err := c.prepare(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	username := c.username(req.Key)
	spki := csr.RawSubjectPublicKeyInfo
	if req.Ticket != "" {
		return c.finalize(ctx, what, req, username, spki, auth)
	}
	found, err := c.find(ctx, what, username, spki)
	searched := !errors.Is(err, errSearchForbidden)
	switch {
	case err != nil && searched:
		return nil, err
	case found != nil:
		c.log.Info("EJBCA issued a certificate for this request before; using it", zap.String("connector", c.name),
			zap.String("key", req.Key), zap.String("username", username), zap.String("serial", found.leaf.SerialNumber.Text(16)))
		return c.issued(ctx, what, found, auth)
	case !searched && c.askedBefore(req.Key):
		return nil, ca.Permanentf("%s: EJBCA was asked for this request before, and the adapter's role may not search certificates, "+
			"so whether it issued cannot be known; not asking again (grant the role /ra_functionality/view_end_entity, docs/ca-ejbca.md)", what)
	}
	code, derived := c.enrollmentCode(username)
	profile := c.certProfile
	if req.TemplateName != "" {
		profile = req.TemplateName
	}
	body := enrollRequest{
		CertificateRequest:       string(pemutil.EncodeCSR(csr.Raw)),
		CertificateProfileName:   profile,
		EndEntityProfileName:     c.eeProfile,
		CertificateAuthorityName: c.caName,
		Username:                 username,
		Password:                 code,
		IncludeChain:             true,
	}
	a, delivered, err := c.cl.call(ctx, http.MethodPost, "/v1/certificate/pkcs10enroll", nil, body)
	if err != nil {
		if delivered && ctx.Err() == nil {
			if !searched {
				c.remember(req.Key)
				return nil, ca.Permanentf("%s: the enrollment reached EJBCA but its answer was lost (%s), and the adapter's role may not search "+
					"certificates to find what it issued; not asking again", what, ca.ServerText(err.Error(), maxMessage, code))
			}
			return nil, ca.Retryable(fmt.Errorf("%s: the enrollment reached EJBCA but its answer was lost (%s); the next attempt looks for its certificate first",
				what, ca.ServerText(err.Error(), maxMessage, code)), lostRetry)
		}
		return nil, transportError(what, err)
	}
	switch a.status {
	case http.StatusCreated, http.StatusOK:
		if !searched {
			c.remember(req.Key) // a repeat could not be told from a new request
		}
		var r certificateResponse
		if err := json.Unmarshal(a.body, &r); err != nil {
			return nil, c.unusable(what, searched, fmt.Errorf("the answer is not EJBCA's JSON: %w", err))
		}
		p, err := r.parse()
		if err != nil {
			return nil, c.unusable(what, searched, err)
		}
		if !bytes.Equal(p.leaf.RawSubjectPublicKeyInfo, spki) {
			return nil, ca.Permanentf("%s: EJBCA returned certificate %X for another key than the CSR's", what, p.leaf.SerialNumber)
		}
		c.log.Info("EJBCA issued certificate", zap.String("connector", c.name), zap.String("key", req.Key),
			zap.String("username", username), zap.String("serial", p.leaf.SerialNumber.Text(16)), zap.Time("notAfter", p.leaf.NotAfter))
		return c.issued(ctx, what, p, auth)
	case http.StatusAccepted:
		var r approvalResponse
		_ = json.Unmarshal(a.body, &r) // an unreadable body is a 202 without an id, below
		id, ok := r.approvalID()
		return nil, c.pending(what, req.Key, username, id, ok, code, derived, r.InfoMessage)
	case http.StatusBadRequest:
		// Some versions re-throw the approval as a 400 with its message.
		if msg := errorText(a.body, code); approvalWaiting.MatchString(msg) {
			id, ok := idFromText(msg)
			return nil, c.pending(what, req.Key, username, id, ok, code, derived, msg)
		}
	}
	return nil, c.statusError(what+": enroll with certificate profile "+profile, a, code)
}

// unusable is the error for an issuance answer that cannot be read. EJBCA issued: a repeat finds
// the certificate where the role may search; otherwise it must not be asked again.
func (c *Connector) unusable(what string, searched bool, err error) error {
	if searched {
		return ca.Retryable(fmt.Errorf("%s: EJBCA's answer cannot be used (%v); the next attempt looks for the certificate", what, err), lostRetry)
	}
	return ca.Permanentf("%s: EJBCA's answer cannot be used (%v), and the adapter's role may not search certificates; not asking again", what, err)
}

// pending is the answer for an enrollment held for approval.
func (c *Connector) pending(what, key, username string, id int64, ok bool, code string, derived bool, msg string) error {
	if !ok {
		return ca.Permanentf("%s: EJBCA holds the enrollment for approval but its answer names no approval request id, so the adapter "+
			"cannot finalize it (%s); approve and finalize it in EJBCA, or remove the approval profile", what, ca.ServerText(msg, maxMessage, code))
	}
	t := ticket{RequestID: id}
	if !derived {
		t.Code = code
	}
	c.log.Info("EJBCA holds the enrollment for approval", zap.String("connector", c.name), zap.String("key", key),
		zap.String("username", username), zap.Int64("approval_request", id))
	return &ca.PendingError{Ticket: t.encode(), RetryAfter: pendingRetry,
		Reason: fmt.Sprintf("%s: approval request %d waits for an EJBCA administrator", c.label(), id)}
}

// finalize asks for the certificate of an approved enrollment.
func (c *Connector) finalize(ctx context.Context, what string, req *ca.Request, username string, spki []byte, auth *authority) (*ca.Issued, error) {
	t, err := decodeTicket(req.Ticket)
	if err != nil {
		return nil, ca.Permanentf("%s: the pending ticket: %v", what, err)
	}
	code := t.Code
	if code == "" {
		var derived bool
		if code, derived = c.enrollmentCode(username); !derived {
			return nil, ca.Permanentf("%s: the pending ticket carries no enrollment code, and enrollmentCodeSecretFile is not set (was it removed?)", what)
		}
	}
	what = fmt.Sprintf("%s: finalize approval request %d", what, t.RequestID)
	path := "/v1/certificate/" + strconv.FormatInt(t.RequestID, 10) + "/finalize"
	a, _, err := c.cl.call(ctx, http.MethodPost, path, nil, finalizeRequest{ResponseFormat: "DER", Password: code})
	if err != nil {
		// Safe to repeat: a second finalize is answered "already finalized", then looked up.
		return nil, transportError(what, err)
	}
	pendingAgain := &ca.PendingError{Ticket: req.Ticket, RetryAfter: pendingRetry,
		Reason: fmt.Sprintf("%s: approval request %d waits for an EJBCA administrator", c.label(), t.RequestID)}
	switch a.status {
	case http.StatusCreated, http.StatusOK:
		var r certificateResponse
		if err := json.Unmarshal(a.body, &r); err != nil {
			return nil, ca.Retryable(fmt.Errorf("%s: the answer is not EJBCA's JSON: %w", what, err), 0)
		}
		p, err := r.parse()
		if err != nil {
			return nil, ca.Retryable(fmt.Errorf("%s: EJBCA's answer cannot be used: %w", what, err), 0)
		}
		if !bytes.Equal(p.leaf.RawSubjectPublicKeyInfo, spki) {
			return nil, ca.Permanentf("%s: EJBCA returned certificate %X for another key than the CSR's", what, p.leaf.SerialNumber)
		}
		c.log.Info("EJBCA issued the approved certificate", zap.String("connector", c.name), zap.String("key", req.Key),
			zap.Int64("approval_request", t.RequestID), zap.String("serial", p.leaf.SerialNumber.Text(16)))
		return c.issued(ctx, what, p, auth)
	case http.StatusAccepted:
		return nil, pendingAgain
	case http.StatusBadRequest:
		msg := errorText(a.body, code)
		low := strings.ToLower(msg)
		switch {
		case approvalWaiting.MatchString(msg):
			return nil, pendingAgain
		case strings.Contains(low, "already been finalized"):
			// A finalize whose answer was lost: the certificate exists.
			found, err := c.find(ctx, what, username, spki)
			if errors.Is(err, errSearchForbidden) {
				return nil, ca.Permanentf("%s: EJBCA finalized the request before (%s), and the adapter's role may not search certificates to find it", what, msg)
			}
			if err != nil {
				return nil, err
			}
			if found == nil {
				return nil, ca.Permanentf("%s: EJBCA finalized the request before (%s), but holds no active certificate for end entity %s and this key", what, msg, username)
			}
			return c.issued(ctx, what, found, auth)
		case strings.Contains(low, "rejected"):
			return nil, ca.Permanentf("%s: an EJBCA administrator rejected the request: %s", what, msg)
		case strings.Contains(low, "expired"):
			return nil, ca.Permanentf("%s: the approval request expired before an administrator approved it: %s", what, msg)
		}
	}
	return nil, c.statusError(what, a, code)
}

// find returns the newest active certificate EJBCA issued to username for the key spki, or nil.
func (c *Connector) find(ctx context.Context, what, username string, spki []byte) (*parsed, error) {
	certs, err := c.search(ctx, what, username)
	if err != nil {
		return nil, err
	}
	var best *parsed
	for _, p := range certs {
		if bytes.Equal(p.leaf.RawSubjectPublicKeyInfo, spki) && (best == nil || p.leaf.NotBefore.After(best.leaf.NotBefore)) {
			best = p
		}
	}
	return best, nil
}

// maxSearch is how many certificates of one end entity a search reads: more than the adapter
// ever asks for one key.
const maxSearch = 50

// search lists the active certificates of username from the connection's CA. A role that may
// not search gets errSearchForbidden.
func (c *Connector) search(ctx context.Context, what, username string) ([]*parsed, error) {
	body := searchRequest{MaxNumberOfResults: maxSearch, Criteria: []searchCriteria{
		{Property: "QUERY", Value: username, Operation: "EQUAL"},
		{Property: "CA", Value: c.caName, Operation: "EQUAL"},
		{Property: "STATUS", Value: "CERT_ACTIVE", Operation: "EQUAL"},
	}}
	what += ": search the certificates of " + username
	a, _, err := c.cl.call(ctx, http.MethodPost, "/v1/certificate/search", nil, body)
	if err != nil {
		return nil, transportError(what, err)
	}
	switch a.status {
	case http.StatusOK:
	case http.StatusForbidden, http.StatusUnauthorized:
		if !c.searchForbidden.Swap(true) {
			c.log.Warn("EJBCA refuses this connection's role a certificate search: interrupted requests cannot be recovered, and one whose answer is lost fails",
				zap.String("connector", c.name), zap.String("reason", errorText(a.body)))
		}
		return nil, fmt.Errorf("%s: %w: %s", what, errSearchForbidden, errorText(a.body))
	default:
		return nil, c.statusError(what, a)
	}
	c.searchForbidden.Store(false)
	var r searchResponse
	if err := json.Unmarshal(a.body, &r); err != nil {
		return nil, ca.Retryable(fmt.Errorf("%s: the answer is not EJBCA's JSON: %w", what, err), 0)
	}
	out := make([]*parsed, 0, len(r.Certificates))
	for i := range r.Certificates {
		p, err := r.Certificates[i].parse()
		if err != nil {
			return nil, ca.Retryable(fmt.Errorf("%s: certificates[%d]: %w", what, i, err), 0)
		}
		out = append(out, p)
	}
	return out, nil
}

// Recover returns the newest active certificate EJBCA issued to the key's end entity, or nil
// when there is none (the interrupted enrollment never reached EJBCA, was refused, or waits for
// approval).
func (c *Connector) Recover(ctx context.Context, key string) (*ca.Issued, error) {
	what := fmt.Sprintf("%s: look up %s", c.label(), key)
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	}
	auth, err := c.prepare(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	certs, err := c.search(ctx, what, c.username(key))
	if errors.Is(err, errSearchForbidden) {
		return nil, ca.Permanentf("%s: the adapter's role may not search certificates, so what an interrupted request issued cannot be known "+
			"(grant it /ra_functionality/view_end_entity, docs/ca-ejbca.md)", what)
	}
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, nil
	}
	newest := slices.MaxFunc(certs, func(a, b *parsed) int { return a.leaf.NotBefore.Compare(b.leaf.NotBefore) })
	return c.issued(ctx, what, newest, auth)
}

// issued completes p with the CA's chain, when EJBCA sent none, and the connection's roots.
func (c *Connector) issued(ctx context.Context, what string, p *parsed, auth *authority) (*ca.Issued, error) {
	out := &ca.Issued{Leaf: p.leaf, Chain: p.chain}
	if len(out.Chain) == 0 {
		out.Chain = auth.certs
	}
	out.Roots = auth.roots
	if c.pinned != nil {
		return out, nil
	}
	if _, err := leafcheck.VerifyChain(out.Leaf, out.Chain, out.Roots, out.Leaf.NotBefore.Add(time.Second)); err == nil {
		return out, nil
	}
	// The CA may have been renewed since its chain was read: read it again, once.
	fresh, err := c.readAuthority(ctx, auth)
	if err != nil {
		c.log.Warn("EJBCA: reading the CA's chain again failed", zap.String("connector", c.name), zap.String("call", what), zap.Error(err))
		return out, nil
	}
	out.Roots = fresh.roots
	if len(p.chain) == 0 {
		out.Chain = fresh.certs
	}
	return out, nil
}

// prepare returns the CA as read before, or reads it.
func (c *Connector) prepare(ctx context.Context) (*authority, error) {
	if a := c.authority.Load(); a != nil {
		return a, nil
	}
	return c.readAuthority(ctx, nil)
}

// readAuthority finds the CA among those EJBCA lists (GET /v1/ca) and reads its chain
// (GET /v1/ca/{subject_dn}/certificate/download) over the verified TLS connection, never from an
// issuance answer, which cannot vouch for itself. stale is the authority the caller found
// wanting; when another call replaced it meanwhile, that one is returned.
func (c *Connector) readAuthority(ctx context.Context, stale *authority) (*authority, error) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	if a := c.authority.Load(); a != nil && a != stale {
		return a, nil
	}
	what := "list the CAs (GET /v1/ca)"
	a, _, err := c.cl.call(ctx, http.MethodGet, "/v1/ca", nil, nil)
	if err != nil {
		return nil, transportError(what, err)
	}
	if a.status != http.StatusOK {
		return nil, c.statusError(what, a)
	}
	var list caList
	if err := json.Unmarshal(a.body, &list); err != nil {
		return nil, ca.Permanentf("%s: the answer is not EJBCA's JSON (is url EJBCA's REST API?): %v", what, err)
	}
	var info *caInfo
	names := make([]string, 0, len(list.CertificateAuthorities))
	for i := range list.CertificateAuthorities {
		ci := &list.CertificateAuthorities[i]
		names = append(names, ci.Name)
		if ci.Name == c.caName {
			info = ci
		}
	}
	if info == nil || info.SubjectDN == "" {
		return nil, ca.Permanentf("%s: EJBCA lists no CA named %q to this role (it lists %s); check certificateAuthorityName and the role's access to the CA",
			what, c.caName, ca.ServerText(strings.Join(names, ", "), 200))
	}
	what = fmt.Sprintf("read the chain of CA %q (GET /v1/ca/{subject_dn}/certificate/download)", c.caName)
	a, _, err = c.cl.call(ctx, http.MethodGet, "/v1/ca/"+url.PathEscape(info.SubjectDN)+"/certificate/download", nil, nil)
	if err != nil {
		return nil, transportError(what, err)
	}
	if a.status != http.StatusOK {
		return nil, c.statusError(what, a)
	}
	certs, err := pemutil.ParseCertificates(a.body)
	if err != nil || len(certs) == 0 {
		return nil, ca.Permanentf("%s: not a PEM chain: %v", what, err)
	}
	auth := &authority{subjectDN: info.SubjectDN, certs: certs}
	if c.pinned != nil {
		auth.roots, auth.rootCerts = c.pinned, c.pinnedCerts
	} else {
		for _, cert := range certs {
			if isSelfSigned(cert) {
				auth.rootCerts = append(auth.rootCerts, cert)
			}
		}
		if len(auth.rootCerts) == 0 {
			auth.rootCerts = certs[len(certs)-1:] // a chain without its root: trust its top
		}
		auth.roots = x509.NewCertPool()
		for _, r := range auth.rootCerts {
			auth.roots.AddCert(r)
		}
	}
	c.authority.Store(auth)
	return auth, nil
}

// Ping checks what an Issue needs, without issuing: the REST API's certificate resource is up
// (GET /v1/certificate/status), the role sees the CA (GET /v1/ca), and its chain can be read.
func (c *Connector) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return ca.Retryable(fmt.Errorf("%s: ping: %w", c.label(), err), 0)
	}
	what := c.label() + ": status of the REST API (GET /v1/certificate/status)"
	a, _, err := c.cl.call(ctx, http.MethodGet, "/v1/certificate/status", nil, nil)
	if err != nil {
		return transportError(what, err)
	}
	if a.status != http.StatusOK {
		return c.statusError(what, a)
	}
	var st statusResponse
	if err := json.Unmarshal(a.body, &st); err != nil {
		return ca.Permanentf("%s: the answer is not EJBCA's JSON (is url EJBCA's REST API?): %v", what, err)
	}
	if st.Status != "OK" {
		return ca.Retryable(fmt.Errorf("%s: status %q, want \"OK\"", what, ca.ServerText(st.Status, 80)), 0)
	}
	if _, err := c.readAuthority(ctx, c.authority.Load()); err != nil { // afresh: a renewed CA shows here
		return fmt.Errorf("%s: %w", c.label(), err)
	}
	return nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}
