package local

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// Revoke puts the certificate on the CRL this CA publishes (crlFile) and publishes it at once
// (ca.Revoker). The certificate must be this CA's: req.Certificate signed by the issuer key, or,
// given the serial alone, one the connector recorded (in the ledger with ledgerFile; without
// one, in memory since it started). Revoking a revoked certificate succeeds and keeps the first
// revocation's time and reason.
func (c *Connector) Revoke(ctx context.Context, req *ca.RevokeRequest) error {
	if req == nil || req.Serial == nil || req.Serial.Sign() <= 0 {
		return ca.Permanentf("local CA: revoke: no serial number")
	}
	serial := req.Serial.Text(16)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local CA: revoke %s: %w", serial, err)
	}
	if c.crl == nil {
		return ca.Permanentf("local CA %s: revoke %s: this CA publishes no CRL; set crlFile to revoke", c.name, serial)
	}
	if err := c.checkOwn(ctx, req, serial); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local CA: revoke %s: %w", serial, err)
	}
	already, err := c.crl.revoke(req.Serial, int(req.Reason), c.now())
	if err != nil {
		return ca.Retryable(fmt.Errorf("local CA: revoke %s: %w", serial, err), 0)
	}
	if already {
		c.log.Info("certificate already revoked", zap.String("connector", c.name), zap.String("serial", serial))
		return nil
	}
	c.log.Info("revoked certificate", zap.String("connector", c.name), zap.String("serial", serial),
		zap.String("key", req.Key), zap.Stringer("reason", req.Reason))
	return nil
}

// CanRevoke reports that this CA can revoke only with a CRL to publish (ca.RevokeChecker).
func (c *Connector) CanRevoke() error {
	if c.crl == nil {
		return errors.New("it publishes no CRL; set crlFile")
	}
	return nil
}

var _ ca.RevokeChecker = (*Connector)(nil)

// checkOwn makes sure the certificate to revoke is one this CA issued: a CRL entry for another
// CA's serial would revoke, at every relying party, whichever of this CA's certificates has it.
func (c *Connector) checkOwn(ctx context.Context, req *ca.RevokeRequest, serial string) error {
	if cert := req.Certificate; cert != nil {
		if cert.SerialNumber == nil || cert.SerialNumber.Cmp(req.Serial) != 0 {
			return ca.Permanentf("local CA: revoke %s: the certificate given has serial %s", serial, hexSerial(cert.SerialNumber))
		}
		if err := cert.CheckSignatureFrom(c.cert); err != nil {
			return ca.Permanentf("local CA: revoke %s: certificate %q was not issued by this CA (%s): %v", serial, cert.Subject, c.cert.Subject, err)
		}
		return nil
	}
	leaf, err := c.issuances.bySerial(ctx, serial)
	if err != nil {
		return ca.Retryable(fmt.Errorf("local CA: revoke %s: look up the serial: %w", serial, err), 0)
	}
	if leaf == nil {
		where := "in its ledger"
		if _, ok := c.issuances.(*memoryIssuances); ok {
			where = "since it started (without ledgerFile it forgets on restart; give the certificate: revoke --process)"
		}
		return ca.Permanentf("local CA: revoke %s: this CA issued no certificate with that serial %s", serial, where)
	}
	return nil
}

// RevocationStatus reads the published CRL: whether serial is on it, and the RFC 5280 reason.
// Tests and tools use it; relying parties read crlFile themselves.
func (c *Connector) RevocationStatus(serial *big.Int) (revoked bool, reason ca.Reason, err error) {
	if c.crl == nil {
		return false, 0, fmt.Errorf("local CA %s publishes no CRL (no crlFile)", c.name)
	}
	revoked, r, err := c.crl.status(serial)
	return revoked, ca.Reason(r.reason), err
}

func hexSerial(n *big.Int) string {
	if n == nil {
		return "none"
	}
	return n.Text(16)
}
