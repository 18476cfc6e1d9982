package catest

import (
	"context"
	"fmt"
	"testing"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// BenchIssue runs b.N issuances through c, each for its own process and one P-256 key, with the
// requests built before the timer starts: what a connector and its CA cost per certificate.
func BenchIssue(b *testing.B, c ca.Connector) {
	b.Helper()
	key := DeviceKey(b, P256)
	reqs := make([]*ca.Request, b.N)
	for i := range reqs {
		reqs[i] = NewRequest(b, key, fmt.Sprintf("BENCH%027d", i))
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
}
