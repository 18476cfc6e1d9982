package adapter

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkTenantIssue measures one process of tenant acme, from its notification to its
// uploaded certificate, beside a tenant beta that is healthy or whose CA holds every call with
// all of beta's workers stuck in it: the isolation's cost to acme should be nothing.
//
//	go test -run '^$' -bench BenchmarkTenantIssue -benchtime 50x ./internal/adapter/
func BenchmarkTenantIssue(b *testing.B) {
	for _, neighbour := range []string{"healthy", "ca-hanging"} {
		b.Run("neighbour="+neighbour, func(b *testing.B) {
			s := newTenantScene(b, nil)
			betaConn := s.localConn(s.caB, "ledger-b.jsonl")
			var hang *hangingCA
			if neighbour == "ca-hanging" {
				hang = newHangingCA(b)
				betaConn = fmt.Sprintf("      corp: {type: webhook, url: %q, timeout: 5m}\n", hang.srv.URL)
				b.Cleanup(hang.release)
			}
			const workers = 4
			s.start(workers,
				s.tenantYAML("acme", customerA, s.subA, "Acme", s.localConn(s.caA, "ledger-a.jsonl"), "rateLimit: {requestsPerSecond: 10000, burst: 1000}"),
				s.tenantYAML("beta", customerB, s.subB, "Beta", betaConn, ""))
			if hang != nil {
				s.startProcesses(customerB, 4*workers)
				for range workers {
					select {
					case <-hang.arrived:
					case <-time.After(30 * time.Second):
						b.Fatal("beta's processes never reached its CA")
					}
				}
			}
			b.ResetTimer()
			for range b.N {
				name := s.startProcesses(customerA, 1)[0]
				s.waitFinished(name)
			}
		})
	}
}
