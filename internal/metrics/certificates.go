package metrics

import (
	"crypto/x509"
	"maps"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Kinds of certificate holders, as values of the kind label.
const (
	KindCAConnection   = "ca_connection"   // name: the CA connection
	KindVerifiedAccess = "verified_access" // name: "server", the enrollment server's TLS certificate
)

// CertificateSource returns the certificates a component holds now. It is called on every
// scrape, so it must be cheap and must not wait on the network: it returns what the component
// already holds (a CA certificate fetched earlier, a TLS certificate reloaded since).
type CertificateSource func() []HeldCertificate

// HeldCertificate is a certificate a component relies on, and its role (the role label: what
// ca.HeldCertificate says it is for).
type HeldCertificate struct {
	Role string
	Cert *x509.Certificate
}

// Certificates exports when the certificates the adapter relies on expire, as
// certprov_certificate_expiry_timestamp_seconds{kind,name,role,subject,serial}: the CA
// certificates of the CA connections, their roots and TLS client certificates where the
// connector knows them, and the Verified Access server's TLS certificate. Alert on
// `certprov_certificate_expiry_timestamp_seconds - time() < 30*86400`.
type Certificates struct {
	desc *prometheus.Desc

	mu      sync.Mutex
	sources []certificateSource
}

type certificateSource struct {
	kind, name string
	get        CertificateSource
}

// NewCertificates returns the certificate expiry collector, registered on reg.
func NewCertificates(reg prometheus.Registerer) *Certificates {
	return register(reg, &Certificates{desc: prometheus.NewDesc(
		prometheus.BuildFQName(Namespace, "", "certificate_expiry_timestamp_seconds"),
		"When a certificate the adapter relies on expires (notAfter, Unix seconds), by holder kind and name, role, subject and serial.",
		[]string{"kind", "name", "role", "subject", "serial"}, nil)})
}

// Add exports the certificates get returns for the holder kind and name.
func (c *Certificates) Add(kind, name string, get CertificateSource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources = append(c.sources, certificateSource{kind: kind, name: name, get: get})
}

// SetKind replaces every source of kind with sources, by name: a reload that changed the CA
// connections.
func (c *Certificates) SetKind(kind string, sources map[string]CertificateSource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.sources[:0]
	for _, s := range c.sources {
		if s.kind != kind {
			kept = append(kept, s)
		}
	}
	c.sources = kept
	for _, name := range slices.Sorted(maps.Keys(sources)) {
		c.sources = append(c.sources, certificateSource{kind: kind, name: name, get: sources[name]})
	}
}

// Describe implements prometheus.Collector.
func (c *Certificates) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Certificates) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sources := append([]certificateSource(nil), c.sources...)
	c.mu.Unlock()
	seen := map[[5]string]bool{}
	for _, s := range sources {
		for _, held := range s.get() {
			if held.Cert == nil {
				continue
			}
			labels := [5]string{s.kind, s.name, held.Role, held.Cert.Subject.String(), held.Cert.SerialNumber.Text(16)}
			if seen[labels] {
				continue // one certificate held twice in one role, e.g. a root both pinned and fetched
			}
			seen[labels] = true
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(held.Cert.NotAfter.Unix()), labels[:]...)
		}
	}
}
