package cas

import (
	"context"
	"crypto/x509"
	"fmt"

	"cloud.google.com/go/security/privateca/apiv1/privatecapb"
	"go.uber.org/zap"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// reasons maps RFC 5280 reasons onto CAS's, which has one for each.
var reasons = map[ca.Reason]privatecapb.RevocationReason{
	ca.ReasonUnspecified:          privatecapb.RevocationReason_REVOCATION_REASON_UNSPECIFIED,
	ca.ReasonKeyCompromise:        privatecapb.RevocationReason_KEY_COMPROMISE,
	ca.ReasonCACompromise:         privatecapb.RevocationReason_CERTIFICATE_AUTHORITY_COMPROMISE,
	ca.ReasonAffiliationChanged:   privatecapb.RevocationReason_AFFILIATION_CHANGED,
	ca.ReasonSuperseded:           privatecapb.RevocationReason_SUPERSEDED,
	ca.ReasonCessationOfOperation: privatecapb.RevocationReason_CESSATION_OF_OPERATION,
	ca.ReasonCertificateHold:      privatecapb.RevocationReason_CERTIFICATE_HOLD,
	ca.ReasonPrivilegeWithdrawn:   privatecapb.RevocationReason_PRIVILEGE_WITHDRAWN,
	ca.ReasonAACompromise:         privatecapb.RevocationReason_ATTRIBUTE_AUTHORITY_COMPROMISE,
}

// Revoke revokes a certificate of the pool: found by the request key's certificate ID when the
// key is given, otherwise by its serial number. A certificate already revoked is left as it is.
func (c *Connector) Revoke(ctx context.Context, req *ca.RevokeRequest) error {
	if req == nil || req.Serial == nil {
		return ca.Permanentf("%s: revoke: no serial number", c.label())
	}
	serial := req.Serial.Text(16)
	what := fmt.Sprintf("%s: revoke serial %s", c.label(), serial)
	if err := ctx.Err(); err != nil {
		return ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	}
	reason, ok := reasons[req.Reason]
	if !ok {
		return ca.Permanentf("%s: CAS has no revocation reason %s", what, req.Reason)
	}
	tier, err := c.session(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if tier == privatecapb.CaPool_DEVOPS {
		return ca.Permanentf("%s: pool %s is DevOps tier, which keeps no certificates and cannot revoke", what, c.pool)
	}
	cert, err := c.find(ctx, what, req)
	if err != nil {
		return err
	}
	if req.Certificate != nil && !sameDER(cert, req.Certificate) {
		// Another CA's certificate with a serial this pool also issued.
		return ca.Permanentf("%s: the certificate was not issued through this connection (pool %s holds another certificate with this serial)", what, c.pool)
	}
	if cert.GetRevocationDetails() != nil {
		return nil
	}
	cctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err = c.client.RevokeCertificate(cctx, &privatecapb.RevokeCertificateRequest{
		Name:      cert.GetName(),
		Reason:    reason,
		RequestId: requestID("revoke", cert.GetName()),
	})
	if err == nil {
		c.log.Info("CAS revoked certificate", zap.String("connector", c.name), zap.String("certificate", cert.GetName()),
			zap.String("serial", serial), zap.Stringer("reason", req.Reason))
		return nil
	}
	if code := status.Code(err); code == codes.FailedPrecondition || code == codes.AlreadyExists {
		// Revoked meanwhile (a lost answer to the first call): say so only if CAS agrees.
		if again, gerr := c.get(ctx, cert.GetName()); gerr == nil && again.GetRevocationDetails() != nil {
			return nil
		}
	}
	return classify(ctx, what, err)
}

// find returns the pool's certificate named by req: the request key's, when it has this serial,
// else the one CAS lists under the serial.
func (c *Connector) find(ctx context.Context, what string, req *ca.RevokeRequest) (*privatecapb.Certificate, error) {
	if req.Key != "" {
		cert, err := c.get(ctx, c.certificateName(req.Key))
		switch {
		case err == nil && sameSerial(cert, req):
			return cert, nil
		case err != nil && status.Code(err) != codes.NotFound:
			return nil, classify(ctx, what, err)
		}
	}
	// CAS writes serials in lower-case hex; a serial of odd length may be written with a
	// leading zero, so both forms are asked for.
	hexes := []string{req.Serial.Text(16)}
	if len(hexes[0])%2 == 1 {
		hexes = append(hexes, "0"+hexes[0])
	}
	for _, h := range hexes {
		cctx, cancel := withTimeout(ctx)
		it := c.client.ListCertificates(cctx, &privatecapb.ListCertificatesRequest{
			Parent: c.pool,
			Filter: fmt.Sprintf("certificate_description.subject_description.hex_serial_number=%q", h),
		})
		cert, err := it.Next()
		cancel()
		switch {
		case err == nil:
			return cert, nil
		case err != iterator.Done:
			return nil, classify(ctx, what, err)
		}
	}
	return nil, ca.Permanentf("%s: pool %s holds no certificate with this serial number (not issued through this connection)", what, c.pool)
}

func sameSerial(cert *privatecapb.Certificate, req *ca.RevokeRequest) bool {
	leaf, err := parseCertificates(cert.GetPemCertificate())
	return err == nil && len(leaf) == 1 && leaf[0].SerialNumber.Cmp(req.Serial) == 0
}

func sameDER(cert *privatecapb.Certificate, want *x509.Certificate) bool {
	leaf, err := parseCertificates(cert.GetPemCertificate())
	return err == nil && len(leaf) == 1 && leaf[0].Equal(want)
}

func (c *Connector) get(ctx context.Context, name string) (*privatecapb.Certificate, error) {
	cctx, cancel := withTimeout(ctx)
	defer cancel()
	return c.client.GetCertificate(cctx, &privatecapb.GetCertificateRequest{Name: name})
}
