package stepca

import (
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catls"
)

// Certificates returns the TLS client certificate and, once the connector bootstrapped, the
// root pinned by rootFingerprint.
func (c *Connector) Certificates() []ca.HeldCertificate {
	out := catls.Held(c.tlsConfig)
	if s := c.sess.Load(); s != nil && s.root != nil {
		out = append(out, ca.HeldCertificate{Role: ca.RoleRoot, Cert: s.root})
	}
	return out
}
