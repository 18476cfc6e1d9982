package local

import (
	"context"
	"crypto/x509"
	"sync"
	"time"
)

// issuances keeps what the connector issued, for Recover and for Issued: the ledger (file and
// index) with a ledgerFile, memory otherwise. Implementations are safe for concurrent use.
type issuances interface {
	// add records a certificate before it is returned; after an error it must not be returned.
	add(ctx context.Context, key string, leaf *x509.Certificate, now time.Time) error
	// last returns the last certificate recorded for key, or nil when there is none.
	last(ctx context.Context, key string) (*x509.Certificate, error)
	// bySerial returns the certificate recorded with serial (lower-case hex), or nil.
	bySerial(ctx context.Context, serial string) (*x509.Certificate, error)
	// issued counts the certificates this connector (not another sharing a ledger) recorded
	// for key.
	issued(ctx context.Context, key string) (int, error)
	close() error
}

var (
	_ issuances = (*ledger)(nil)
	_ issuances = (*memoryIssuances)(nil)
)

// memoryIssuances is the record without a ledgerFile. It lasts as long as the connector and
// grows with every certificate, which suits tests and demos, not a CA that runs for months.
type memoryIssuances struct {
	mu      sync.Mutex
	counts  map[string]int               // per request key
	leaves  map[string]*x509.Certificate // last leaf per request key
	serials map[string]*x509.Certificate // every leaf, by hex serial
}

func newMemoryIssuances() *memoryIssuances {
	return &memoryIssuances{counts: map[string]int{}, leaves: map[string]*x509.Certificate{}, serials: map[string]*x509.Certificate{}}
}

func (m *memoryIssuances) add(_ context.Context, key string, leaf *x509.Certificate, _ time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[key]++
	m.leaves[key] = leaf
	m.serials[leaf.SerialNumber.Text(16)] = leaf
	return nil
}

func (m *memoryIssuances) bySerial(_ context.Context, serial string) (*x509.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.serials[serial], nil
}

func (m *memoryIssuances) last(_ context.Context, key string) (*x509.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leaves[key], nil
}

func (m *memoryIssuances) issued(_ context.Context, key string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[key], nil
}

func (m *memoryIssuances) close() error { return nil }
