package statuspage_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/sqlite"
	"github.com/certprov/certprov-adapter/internal/ops"
	"github.com/certprov/certprov-adapter/internal/statuspage"
)

// BenchmarkStatusPage renders /status from a SQLite journal holding 200 processes in flight and
// 2,000 finished ones (the rates over the latest 100, and over the default 1,000), with the history and certificate-size
// fields a real record carries: the cost of one page load, journal reads included.
func BenchmarkStatusPage(b *testing.B) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "journal.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close() })
	now := time.Now()
	pem := string(make([]byte, 1200)) // about a leaf's PEM
	for i := range 2200 {
		p := proc(fmt.Sprintf("%032X", i), "device", "corp")
		r := &journal.Record{Name: p.Name, Process: p, ProfileName: "device", CAName: "corp", State: journal.StateSignRequested,
			Created: now.Add(-time.Duration(i) * time.Second), NextDue: now, SignData: make([]byte, 400), CSR: make([]byte, 700)}
		for j := range 6 {
			r.Log(r.Created.Add(time.Duration(j)*time.Millisecond), "step")
		}
		if i >= 200 {
			r.State, r.FinishedAt, r.Outcome, r.CertificatePEM = journal.StateUploaded, now.Add(-time.Duration(i)*time.Second), "issued", pem
			if i%10 == 0 {
				r.State, r.Outcome, r.CertificatePEM, r.FailureMessage = journal.StateFailed, "failed", "", "the CA refused the request"
			}
		}
		if _, err := store.Create(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	reg := ops.Check{Name: "journal", Run: func(context.Context) (string, error) { return "", nil }}
	srv, err := ops.New(ops.Options{Listen: "127.0.0.1:0", Gatherer: prometheus.NewRegistry(), Checks: []ops.Check{reg}})
	if err != nil {
		b.Fatal(err)
	}
	for _, window := range []int{statuspage.DefaultOutcomes, statuspage.DefaultRateWindow} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			page, err := statuspage.New(statuspage.Options{Journal: store, Readiness: srv, InstanceID: "bench", RateWindow: window})
			if err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, ops.PathStatus, nil)
			b.ReportAllocs()
			var size int
			for b.Loop() {
				w := httptest.NewRecorder()
				page.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d", w.Code)
				}
				size = w.Body.Len()
				_, _ = io.Copy(io.Discard, w.Body)
			}
			b.ReportMetric(float64(size), "page-bytes")
		})
	}
}
