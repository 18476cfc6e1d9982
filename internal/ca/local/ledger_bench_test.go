package local

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
)

// The ledger sizes the benchmarks compare: memory and lookups must not depend on them.
var benchSizes = []struct {
	label string
	n     int
}{{"1K", 1_000}, {"100K", 100_000}}

func benchKey(i int) string {
	return fmt.Sprintf("customers/C0bench/certificateProvisioningProcesses/%08d", i)
}

// benchLedgerDir returns a directory holding a CA and a ledger of n certificates. The ledger is
// written in bulk (one real leaf, n keys and serials, one sync) rather than by n Issue calls, so
// that setting up 100K entries takes seconds.
func benchLedgerDir(b *testing.B, n int) string {
	b.Helper()
	f := newFixture(b, caSpec{}, nil)
	req := catest.NewRequest(b, catest.DeviceKey(b, catest.P256), "BENCH")
	issued, err := f.conn.Issue(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	fh, err := os.OpenFile(filepath.Join(f.dir, "ledger.jsonl"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(fh, 1<<20)
	enc := json.NewEncoder(w)
	e := LedgerEntry{Time: time.Now().UTC(), NotAfter: issued.Leaf.NotAfter.UTC(), Certificate: issued.Leaf.Raw}
	for i := range n {
		e.Key, e.Serial = benchKey(i), fmt.Sprintf("%x", i+1)
		if err := enc.Encode(&e); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		b.Fatal(err)
	}
	// The first open indexes the file (the migration of a ledger written by an older adapter);
	// the benchmarks measure the connector as it runs from then on.
	closeConn(b, openBenchLedger(b, f.dir))
	return f.dir
}

func openBenchLedger(b *testing.B, dir string) *Connector {
	b.Helper()
	c, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "ledgerFile": "ledger.jsonl"}, ca.Env{BaseDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func closeConn(b *testing.B, c *Connector) {
	b.Helper()
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLedgerIssue: one issuance (sign, append and sync the ledger, index it) next to a
// ledger of 1K or 100K certificates.
func BenchmarkLedgerIssue(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("ledger="+size.label, func(b *testing.B) {
			c := openBenchLedger(b, benchLedgerDir(b, size.n))
			defer closeConn(b, c)
			req := catest.NewRequest(b, catest.DeviceKey(b, catest.P256), "BENCHISSUE")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Issue(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLedgerRecover: Recover after a restart, for a key the ledger holds (hit) and for one
// it does not (miss: the CA never issued, the common case after a crash before the CA call).
func BenchmarkLedgerRecover(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("ledger="+size.label, func(b *testing.B) {
			c := openBenchLedger(b, benchLedgerDir(b, size.n))
			defer closeConn(b, c)
			keys := make([]string, 1024)
			for i := range keys {
				keys[i] = benchKey(i * 7919 % size.n)
			}
			b.Run("hit", func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					got, err := c.Recover(context.Background(), keys[i%len(keys)])
					if err != nil || got == nil {
						b.Fatalf("Recover(%s) = %v, %v", keys[i%len(keys)], got, err)
					}
					i++
				}
			})
			b.Run("miss", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					got, err := c.Recover(context.Background(), "customers/C0bench/certificateProvisioningProcesses/never")
					if err != nil || got != nil {
						b.Fatalf("Recover = %v, %v", got, err)
					}
				}
			})
		})
	}
}

// BenchmarkLedgerOpen: building the connector (a restart) over a ledger of 1K or 100K
// certificates.
func BenchmarkLedgerOpen(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("ledger="+size.label, func(b *testing.B) {
			dir := benchLedgerDir(b, size.n)
			b.ReportAllocs()
			for b.Loop() {
				closeConn(b, openBenchLedger(b, dir))
			}
		})
	}
}

// BenchmarkLedgerMigrate: the first open of a ledger without an index (one written by an
// adapter before the index existed), which reads the whole file once.
func BenchmarkLedgerMigrate(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("ledger="+size.label, func(b *testing.B) {
			dir := benchLedgerDir(b, size.n)
			index := filepath.Join(dir, "ledger.jsonl"+IndexSuffix)
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				for _, suffix := range []string{"", "-wal", "-shm"} {
					if err := os.Remove(index + suffix); err != nil && !os.IsNotExist(err) {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				closeConn(b, openBenchLedger(b, dir))
			}
		})
	}
}

// BenchmarkLedgerOpenHeap reports the live Go heap a connector holds after opening a ledger of
// 1K and of 100K certificates, and their ratio: 1 means memory does not grow with the ledger.
func BenchmarkLedgerOpenHeap(b *testing.B) {
	dirs := make([]string, len(benchSizes))
	for i, size := range benchSizes {
		dirs[i] = benchLedgerDir(b, size.n)
	}
	heap := make([]float64, len(benchSizes))
	for b.Loop() {
		for i, dir := range dirs {
			heap[i] = heapAfterOpen(b, dir)
		}
	}
	for i, size := range benchSizes {
		b.ReportMetric(heap[i], "live-heap-"+size.label+"-B")
	}
	b.ReportMetric(heap[1]/heap[0], "ratio-100K/1K")
}

// heapAfterOpen is the growth of the live heap (HeapAlloc after a collection) that opening the
// connector over dir leaves behind while the connector is alive.
func heapAfterOpen(b *testing.B, dir string) float64 {
	b.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := openBenchLedger(b, dir)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(c)
	closeConn(b, c)
	return float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
}
