package stepca

import (
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
)

// Certificates returns the TLS client certificate, the X5C credential and, once the connector
// bootstrapped, the root pinned by rootFingerprint.
func (c *Connector) Certificates() []ca.HeldCertificate {
	out := catls.Held(c.tlsConfig)
	if c.x5c != nil {
		// The X5C credential: once it expires, step-ca refuses every token.
		out = append(out, ca.HeldCertificate{Role: ca.RoleClient, Cert: c.x5c.Leaf})
	}
	if s := c.sess.Load(); s != nil && s.root != nil {
		out = append(out, ca.HeldCertificate{Role: ca.RoleRoot, Cert: s.root})
	}
	return out
}
