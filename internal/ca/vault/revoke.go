package vault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	vaultapi "github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Revoke revokes a certificate of this mount by its serial (POST <mount>/revoke). Vault
// revokes idempotently: a certificate already revoked is answered with its first revocation
// time. Vault records no reason code, and its revocations are final, so certificateHold is
// refused rather than turned into a revocation that cannot be lifted. When the certificate is
// given, it must be the one the mount holds under that serial.
func (c *Connector) Revoke(ctx context.Context, req *ca.RevokeRequest) error {
	if req == nil || req.Serial == nil {
		return ca.Permanentf("%s: revoke: no serial number", c.label())
	}
	serial := colonHex(req.Serial.Bytes())
	if req.Reason == ca.ReasonCertificateHold {
		return ca.Permanentf("%s: revoke %s: Vault cannot put a certificate on hold (its revocations cannot be lifted); choose another reason", c.label(), serial)
	}
	if err := ctx.Err(); err != nil {
		return ca.Retryable(fmt.Errorf("%s: revoke %s: %w", c.label(), serial, err), 0)
	}
	if req.Certificate != nil {
		if err := c.checkHeld(ctx, serial, req); err != nil {
			return err
		}
	}
	p := c.mount + "/revoke"
	sec, ex, err := c.authenticated(ctx, func(ctx context.Context, cl *vaultapi.Client) (*vaultapi.Secret, error) {
		return cl.Logical().WriteWithContext(ctx, p, map[string]any{"serial_number": serial})
	})
	if err != nil {
		var rerr *vaultapi.ResponseError
		if errors.As(err, &rerr) && rerr.StatusCode == 400 {
			if strings.Contains(strings.Join(rerr.Errors, " "), "not found") {
				return ca.Permanentf("%s: revoke %s: mount %s knows no certificate with this serial (issued through another mount, or by a role with no_store): %s",
					c.label(), serial, c.mount, vaultText(rerr.Errors, nil))
			}
		}
		return c.callError("revoke "+serial+" at "+p, err, ex)
	}
	var when any
	if sec != nil && sec.Data != nil {
		when = sec.Data["revocation_time_rfc3339"]
		if when == nil {
			when = sec.Data["revocation_time"]
		}
	}
	c.log.Info("vault revoked certificate", zap.String("connector", c.name), zap.String("serial", serial),
		zap.String("key", req.Key), zap.Stringer("reason", req.Reason), zap.Any("revocationTime", when))
	return nil
}

// checkHeld makes sure the certificate to revoke is the one the mount holds under its serial
// (GET <mount>/cert/<serial>): a certificate of another CA may share a serial with one of
// this mount's, which revoking by serial would revoke instead.
func (c *Connector) checkHeld(ctx context.Context, serial string, req *ca.RevokeRequest) error {
	if req.Certificate.SerialNumber == nil || req.Certificate.SerialNumber.Cmp(req.Serial) != 0 {
		return ca.Permanentf("%s: revoke %s: the certificate given has another serial number", c.label(), serial)
	}
	p := c.mount + "/cert/" + serial
	sec, ex, err := send(ctx, c.base, "", func(ctx context.Context, cl *vaultapi.Client) (*vaultapi.Secret, error) {
		return cl.Logical().ReadWithContext(ctx, p)
	})
	if err != nil {
		return classify(c.label(), "revoke "+serial+": read "+p, err, ex.retryAfter)
	}
	var held string
	if sec != nil && sec.Data != nil {
		held, _ = sec.Data["certificate"].(string)
	}
	if held == "" {
		return ca.Permanentf("%s: revoke %s: mount %s holds no certificate with this serial (issued through another mount, or by a role with no_store)", c.label(), serial, c.mount)
	}
	certs, err := pemutil.ParseCertificates([]byte(held))
	if err != nil || len(certs) == 0 || !certs[0].Equal(req.Certificate) {
		return ca.Permanentf("%s: revoke %s: the certificate given is not the one mount %s issued with this serial (it was issued by %s); not revoking",
			c.label(), serial, c.mount, ca.ServerText(req.Certificate.Issuer.String(), 120))
	}
	return nil
}

// Ping checks what an Issue needs, without issuing: Vault is initialized and unsealed
// (sys/health), the token can be had (login or token file), its policies grant update on the
// sign path (sys/capabilities-self), and the issuer's chain can be read for the roots.
func (c *Connector) Ping(ctx context.Context) error {
	var health *vaultapi.HealthResponse
	_, ex, err := send(ctx, c.base, "", func(ctx context.Context, cl *vaultapi.Client) (*vaultapi.Secret, error) {
		var err error
		health, err = cl.Sys().HealthWithContext(ctx)
		return nil, err
	})
	if err != nil {
		return classify(c.label(), "health (sys/health)", err, ex.retryAfter)
	}
	switch {
	case !health.Initialized:
		return ca.Retryable(fmt.Errorf("%s: Vault at %s is not initialized", c.label(), c.address), 0)
	case health.Sealed:
		return ca.Retryable(fmt.Errorf("%s: Vault at %s is sealed; unseal it", c.label(), c.address), 0)
	}
	var caps []string
	_, ex, err = c.authenticated(ctx, func(ctx context.Context, cl *vaultapi.Client) (*vaultapi.Secret, error) {
		var err error
		caps, err = cl.Sys().CapabilitiesSelfWithContext(ctx, c.signPath)
		return nil, err
	})
	if err != nil {
		return c.callError("capabilities of the token on "+c.signPath+" (sys/capabilities-self)", err, ex)
	}
	if !slices.Contains(caps, "update") && !slices.Contains(caps, "root") {
		return ca.Permanentf("%s: the token's policies do not grant update on %s (they grant %v); add: path %q { capabilities = [\"update\"] }",
			c.label(), c.signPath, caps, c.signPath)
	}
	if _, err := c.roots(ctx); err != nil {
		return err
	}
	return nil
}
