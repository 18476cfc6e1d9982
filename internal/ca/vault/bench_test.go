package vault

import (
	"testing"

	"github.com/certprov/certprov-adapter/internal/ca/catest"
)

// BenchmarkIssue measures one Issue against the fake Vault over TLS (a kept-alive connection, a
// token reused), the CSR built beforehand: the connector's and the SDK's cost per certificate,
// plus the fake's signing. It also checks the token is reused: one login for all iterations.
func BenchmarkIssue(b *testing.B) {
	f := newFakeVault(b)
	c, _ := f.newConnector(b, nil)
	catest.BenchIssue(b, c)
	if n := f.count("PUT", "auth/approle/login"); n != 1 {
		b.Errorf("%d logins for %d certificates, want 1", n, b.N)
	}
}
