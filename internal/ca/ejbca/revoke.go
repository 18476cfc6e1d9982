package ejbca

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// reasons are EJBCA's names of the RFC 5280 reasons (the revoke call's reason parameter).
var reasons = map[ca.Reason]string{
	ca.ReasonUnspecified:          "UNSPECIFIED",
	ca.ReasonKeyCompromise:        "KEY_COMPROMISE",
	ca.ReasonCACompromise:         "CA_COMPROMISE",
	ca.ReasonAffiliationChanged:   "AFFILIATION_CHANGED",
	ca.ReasonSuperseded:           "SUPERSEDED",
	ca.ReasonCessationOfOperation: "CESSATION_OF_OPERATION",
	ca.ReasonCertificateHold:      "CERTIFICATE_HOLD",
	ca.ReasonPrivilegeWithdrawn:   "PRIVILEGES_WITHDRAWN",
	ca.ReasonAACompromise:         "AA_COMPROMISE",
}

// Revoke revokes a certificate of the connection's CA by its serial number
// (PUT /v1/certificate/{issuer_dn}/{serial}/revoke). A certificate given with the request must
// have been signed by that CA; one already revoked (409) counts as revoked.
func (c *Connector) Revoke(ctx context.Context, req *ca.RevokeRequest) error {
	if req == nil || req.Serial == nil {
		return ca.Permanentf("%s: revoke: no serial number", c.label())
	}
	serial := strings.ToUpper(req.Serial.Text(16))
	what := fmt.Sprintf("%s: revoke serial %s", c.label(), serial)
	if err := ctx.Err(); err != nil {
		return ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	}
	reason, ok := reasons[req.Reason]
	if !ok {
		return ca.Permanentf("%s: EJBCA has no revocation reason %s", what, req.Reason)
	}
	auth, err := c.prepare(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if cert := req.Certificate; cert != nil {
		issuer := auth.certs[0]
		if cert.SerialNumber == nil || cert.SerialNumber.Cmp(req.Serial) != 0 {
			return ca.Permanentf("%s: the certificate given has another serial number", what)
		}
		if !bytes.Equal(cert.RawIssuer, issuer.RawSubject) || cert.CheckSignatureFrom(issuer) != nil {
			return ca.Permanentf("%s: the certificate was not issued by CA %q (it was issued by %s); not revoking",
				what, c.caName, ca.ServerText(cert.Issuer.String(), 120))
		}
	}
	path := "/v1/certificate/" + url.PathEscape(auth.subjectDN) + "/" + serial + "/revoke"
	a, _, err := c.cl.call(ctx, http.MethodPut, path, url.Values{"reason": {reason}}, nil)
	if err != nil {
		// Safe to repeat: a second revocation is answered 409.
		return transportError(what, err)
	}
	switch a.status {
	case http.StatusOK:
		var r revokeResponse
		_ = json.Unmarshal(a.body, &r) // the status says it is done; the body is for the log
		c.log.Info("EJBCA revoked certificate", zap.String("connector", c.name), zap.String("serial", serial),
			zap.String("key", req.Key), zap.String("reason", reason), zap.String("revocationDate", r.RevocationDate))
		return nil
	case http.StatusConflict:
		return nil // revoked before: a retry after a lost answer
	case http.StatusNotFound:
		return ca.Permanentf("%s: CA %q holds no certificate with this serial number (not issued through this connection): %s",
			what, c.caName, errorText(a.body))
	}
	return c.statusError(what, a)
}
