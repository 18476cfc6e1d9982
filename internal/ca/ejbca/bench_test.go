package ejbca

import (
	"testing"

	"github.com/certprov/certprov-adapter/internal/ca/catest"
)

// BenchmarkIssue measures one Issue against the fake EJBCA over mTLS (a kept-alive connection),
// the CSR built beforehand: the search before the enrollment, the enrollment, reading the
// answer, plus the fake's signing. It also checks the cost stated in docs/ca-ejbca.md: one
// search and one enrollment per certificate, the CA read once.
func BenchmarkIssue(b *testing.B) {
	f := newFakeEJBCA(b)
	c, _ := f.newConnector(b, nil)
	catest.BenchIssue(b, c)
	if s, e, l := f.count("search"), f.count("enroll"), f.count("calist"); s != b.N || e != b.N || l != 1 {
		b.Errorf("%d searches, %d enrollments, %d CA lists for %d certificates; want %d, %d, 1", s, e, l, b.N, b.N, b.N)
	}
}
