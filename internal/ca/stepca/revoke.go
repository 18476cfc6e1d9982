package stepca

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// revokeRequest is the body of POST /1.0/revoke, as `step ca revoke` sends it with a token.
type revokeRequest struct {
	Serial     string `json:"serial"` // decimal, as step-ca records serials
	OTT        string `json:"ott"`
	ReasonCode int    `json:"reasonCode"`
	Reason     string `json:"reason,omitempty"`
	// Passive is the only kind step-ca implements: it records the revocation (and publishes it
	// in its CRL, when enabled) rather than asking a backing CA.
	Passive bool `json:"passive"`
}

// Revoke revokes a certificate with a revoke token of the provisioner, the exchange of `step ca
// revoke SERIAL --reasonCode N`. Given the certificate, it first checks that the certificate
// chains to the pinned root (through step-ca's intermediates): step-ca itself records the
// revocation of any serial. A certificate step-ca already revoked counts as revoked.
func (c *Connector) Revoke(ctx context.Context, req *ca.RevokeRequest) error {
	if req == nil || req.Serial == nil || req.Serial.Sign() <= 0 {
		return ca.Permanentf("step-ca: revoke: no serial number")
	}
	serial := req.Serial.String()
	what := "revoke serial " + req.Serial.Text(16)
	if err := ctx.Err(); err != nil {
		return ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	}
	s, err := c.session(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if req.Certificate != nil {
		if err := c.checkIssuedHere(ctx, s, req); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	// step-ca compares the token's subject with the request's serial in decimal.
	ott, err := s.token(c, c.revokeAud, serial, nil)
	if err != nil {
		return ca.Permanentf("%s: %w", what, err)
	}
	body := revokeRequest{Serial: serial, OTT: ott, ReasonCode: int(req.Reason), Reason: req.Reason.String(), Passive: true}
	var resp struct {
		Status string `json:"status"`
	}
	err = c.call(ctx, s, http.MethodPost, "/1.0/revoke", body, &resp, ott)
	var he *httpError
	if errors.As(err, &he) && he.code == http.StatusBadRequest && strings.Contains(he.msg, "already revoked") {
		c.log.Info("step-ca: certificate already revoked", zap.String("connector", c.name), zap.String("serial", req.Serial.Text(16)))
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if resp.Status != "ok" {
		return ca.Retryable(fmt.Errorf("%s: step-ca answered status %q, want \"ok\"", what, resp.Status), 0)
	}
	c.log.Info("step-ca revoked certificate", zap.String("connector", c.name), zap.String("serial", req.Serial.Text(16)),
		zap.String("key", req.Key), zap.Stringer("reason", req.Reason))
	return nil
}

// checkIssuedHere refuses a certificate that does not chain to the pinned root: revoking its
// serial would revoke whichever certificate of this CA happens to have it.
func (c *Connector) checkIssuedHere(ctx context.Context, s *session, req *ca.RevokeRequest) error {
	cert := req.Certificate
	if cert.SerialNumber == nil || cert.SerialNumber.Cmp(req.Serial) != 0 {
		return ca.Permanentf("the certificate given has another serial number")
	}
	var inter struct {
		Certificates []string `json:"crts"`
	}
	if err := c.call(ctx, s, http.MethodGet, "/1.0/intermediates", nil, &inter, ""); err != nil {
		return fmt.Errorf("intermediates: %w", err)
	}
	pool := x509.NewCertPool()
	for _, p := range inter.Certificates {
		block, _ := pem.Decode([]byte(p))
		if block == nil {
			continue
		}
		if ic, err := x509.ParseCertificate(block.Bytes); err == nil {
			pool.AddCert(ic)
		}
	}
	// An expired certificate may still be revoked: it is checked as of its last valid moment.
	at := c.now()
	if at.After(cert.NotAfter) {
		at = cert.NotAfter
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: s.roots, Intermediates: pool, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return ca.Permanentf("certificate %q was not issued by this step-ca (it does not chain to the root of rootFingerprint or tls.caFile): %v", cert.Subject, err)
	}
	return nil
}
