package vault

import (
	"context"
	"fmt"
	"testing"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
)

// BenchmarkIssue measures one Issue against the fake Vault over TLS (a kept-alive connection, a
// token reused), the CSR built beforehand: the connector's and the SDK's cost per certificate,
// plus the fake's signing. It also checks the token is reused: one login for all iterations.
func BenchmarkIssue(b *testing.B) {
	f := newFakeVault(b)
	c, _ := f.newConnector(b, nil)
	key := catest.DeviceKey(b, catest.P256)
	reqs := make([]*ca.Request, b.N)
	for i := range reqs {
		reqs[i] = catest.NewRequest(b, key, fmt.Sprintf("BENCH%027d", i))
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := c.Issue(ctx, reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if n := f.count("PUT", "auth/approle/login"); n != 1 {
		b.Errorf("%d logins for %d certificates, want 1", n, b.N)
	}
}
