package verifiedaccess

import (
	"crypto/x509"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// Certificates returns the TLS certificate the server serves with now (a reload may have
// replaced it), for the certificate expiry metric; none when it serves plain HTTP.
func (s *Server) Certificates() []ca.HeldCertificate {
	pair := s.cert.Load()
	if pair == nil || len(pair.Certificate) == 0 {
		return nil
	}
	leaf := pair.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil
		}
	}
	return []ca.HeldCertificate{{Role: ca.RoleServer, Cert: leaf}}
}
