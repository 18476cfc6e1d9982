package stepca

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
)

// tokenLifetime is how long a token is valid: five minutes, as `step ca token` makes them. The
// token is sent at once; the margin covers clock skew between adapter and CA (step-ca allows a
// minute of leeway on nbf and exp) and a slow CA.
const tokenLifetime = 5 * time.Minute

// tokenClaims are the claims of a JWK provisioner's sign token, as `step ca token` writes them.
type tokenClaims struct {
	jwt.Claims
	SANs []string `json:"sans,omitempty"`
	SHA  string   `json:"sha,omitempty"` // root fingerprint; informational for step-ca
}

// token makes a one-time token for one call to the endpoint aud (sign or revoke). Every token has its own random jti: step-ca
// records the jti of each token it accepts and refuses it a second time (401), so a retry after
// a failed call must never send the same token again.
func (s *session) token(c *Connector, aud, subject string, sans []string) (string, error) {
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	now := c.now()
	if c.x5c != nil && now.After(c.x5c.Leaf.NotAfter) {
		return "", fmt.Errorf("the x5cCertFile certificate %q expired at %s; renew it (step-ca refuses tokens it signs)",
			c.x5c.Leaf.Subject, c.x5c.Leaf.NotAfter.Format(time.RFC3339))
	}
	claims := tokenClaims{
		Claims: jwt.Claims{
			Issuer:    c.provisioner,
			Subject:   subject,
			Audience:  jwt.Audience{aud},
			ID:        hex.EncodeToString(id[:]),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			Expiry:    jwt.NewNumericDate(now.Add(tokenLifetime)),
		},
		SANs: sans,
		SHA:  s.sha,
	}
	tok, err := jwt.Signed(s.signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign the provisioner token: %w", err)
	}
	return tok, nil
}
