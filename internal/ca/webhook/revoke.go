package webhook

import (
	"context"
	"fmt"
	"net/http"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Revoke posts a revoke request (ca.Revoker). The service answers "revoked" (also for a
// certificate it had revoked before), "notFound" for a serial, or a certificate, it did not
// issue, or an error; a service that does not implement revocation answers an error, which
// fails the revocation permanently.
func (c *Connector) Revoke(ctx context.Context, req *ca.RevokeRequest) error {
	if req == nil || req.Serial == nil || req.Serial.Sign() <= 0 {
		return ca.Permanentf("%s: revoke: no serial number", c.label())
	}
	serial := req.Serial.Text(16)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: revoke %s: %w", c.label(), serial, err)
	}
	body := revokeRequest{
		APIVersion: APIVersion, Revoke: true, SerialNumber: serial, RequestID: req.Key,
		Reason: req.Reason.String(), ReasonCode: int(req.Reason),
	}
	if cert := req.Certificate; cert != nil {
		if cert.SerialNumber == nil || cert.SerialNumber.Cmp(req.Serial) != 0 {
			return ca.Permanentf("%s: revoke %s: the certificate given has another serial number", c.label(), serial)
		}
		body.Certificate = string(pemutil.Encode(cert))
	}
	r, err := c.post(ctx, "revoke", req.Key, body)
	if err != nil {
		return err
	}
	return c.revokeAnswer(r, serial)
}

// revokeAnswer turns the answer to a revoke request for serial into nil (revoked) or a
// classified error; never a *ca.PendingError.
func (c *Connector) revokeAnswer(r *reply, serial string) error {
	if r.body != nil && (r.code/100 == 2 || r.code == http.StatusNotFound) {
		switch r.body.Status {
		case StatusRevoked:
			return nil
		case StatusNotFound:
			return ca.Permanentf("%s: revoke %s: the service issued no such certificate", c.label(), serial)
		}
	}
	return c.unexpected("a revoke request", r)
}
