package local

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// CRL formats for crlFormat.
const (
	CRLFormatDER = "der"
	CRLFormatPEM = "pem"
)

// DefaultCRLValidity is how long a published CRL is valid (nextUpdate - thisUpdate). It is
// signed again once half of that has passed, so relying parties that fetch it on their own
// schedule never hold an expired one while the adapter runs.
const DefaultCRLValidity = 7 * 24 * time.Hour

// crlBackdate is how far thisUpdate lies in the past, for relying parties whose clocks run behind.
const crlBackdate = time.Minute

// crl is the certificate revocation list the CA publishes. The file is the record of every
// revocation: each change reads it (checking it is this CA's), adds to it and replaces it
// atomically, under a lock file (crlFile + ".lock") shared with other processes, such as
// `certprov-adapter revoke` beside the running daemon. Safe for concurrent use.
type crl struct {
	path     string
	pem      bool
	validity time.Duration
	issuer   *x509.Certificate // with SubjectKeyId set (the CRL's authorityKeyIdentifier)
	signer   crypto.Signer
	log      *zap.Logger

	mu sync.Mutex // one change at a time in this process; the lock file orders processes
}

// revocation is what the CRL says of one serial.
type revocation struct {
	time   time.Time
	reason int
}

// load reads the published CRL; (nil, nil) when there is none yet. A file that is not a CRL
// signed by this CA is an error, never replaced: it may be another CA's, or the operator's.
func (c *crl) load() (*x509.RevocationList, error) {
	b, err := os.ReadFile(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read CRL: %w", err)
	}
	der := b
	if block, _ := pem.Decode(b); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("CRL file %s holds a PEM %q block, not an X509 CRL", c.path, block.Type)
		}
		der = block.Bytes
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("CRL file %s is not a CRL: %w", c.path, err)
	}
	if err := rl.CheckSignatureFrom(c.issuer); err != nil {
		return nil, fmt.Errorf("CRL file %s is not signed by this CA (%s): %w", c.path, c.issuer.Subject, err)
	}
	return rl, nil
}

// status says whether serial is on the published CRL.
func (c *crl) status(serial *big.Int) (revoked bool, r revocation, err error) {
	rl, err := c.load()
	if err != nil || rl == nil {
		return false, r, err
	}
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return true, revocation{time: e.RevocationTime, reason: e.ReasonCode}, nil
		}
	}
	return false, r, nil
}

// revoke adds serial to the CRL and publishes it. A serial already on it stays as it is
// (revoking is idempotent; the first time and reason stand): already reports that.
func (c *crl) revoke(serial *big.Int, reason int, now time.Time) (already bool, err error) {
	err = c.change(func(rl *x509.RevocationList) bool {
		for _, e := range rl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(serial) == 0 {
				already = true
				return false
			}
		}
		rl.RevokedCertificateEntries = append(rl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: new(big.Int).Set(serial), RevocationTime: now.UTC().Truncate(time.Second), ReasonCode: reason,
		})
		return true
	}, now)
	return already, err
}

// refresh signs the CRL again when there is none yet, or half of its validity has passed, and
// returns when the next refresh is due.
func (c *crl) refresh(now time.Time) (next time.Time, err error) {
	var due time.Time
	err = c.change(func(rl *x509.RevocationList) bool {
		due = c.dueAt(rl)
		return rl.Raw == nil || !now.Before(due)
	}, now)
	if err != nil {
		return time.Time{}, err
	}
	if !now.Before(due) {
		// Re-signed just now: due from the new thisUpdate.
		due = now.Add(-crlBackdate).Add(c.validity / 2)
	}
	return due, nil
}

// dueAt is when a published CRL is signed again: half-way through its validity.
func (c *crl) dueAt(rl *x509.RevocationList) time.Time {
	if rl.Raw == nil {
		return time.Time{}
	}
	return rl.ThisUpdate.Add(rl.NextUpdate.Sub(rl.ThisUpdate) / 2)
}

// change reads the CRL under the locks, lets edit change it (an empty list when there is none
// yet) and, when edit says so, signs and publishes it with the next CRL number.
func (c *crl) change(edit func(rl *x509.RevocationList) bool, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	lock, err := os.OpenFile(c.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("CRL lock: %w", err)
	}
	defer func() { _ = lock.Close() }() // releases the lock
	if err := lockExclusive(lock); err != nil {
		return fmt.Errorf("CRL lock: %w", err)
	}
	cur, err := c.load()
	if err != nil {
		return err
	}
	rl := &x509.RevocationList{Number: big.NewInt(0)}
	if cur != nil {
		rl = cur
		rl.RevokedCertificateEntries = slices.Clone(cur.RevokedCertificateEntries)
		for i := range rl.RevokedCertificateEntries {
			// Parsed entries keep their encoding and extensions; a new CRL encodes them afresh.
			rl.RevokedCertificateEntries[i].Raw, rl.RevokedCertificateEntries[i].Extensions = nil, nil
		}
	}
	if !edit(rl) {
		return nil
	}
	number := new(big.Int).Add(rl.Number, big.NewInt(1))
	thisUpdate := now.UTC().Add(-crlBackdate).Truncate(time.Second)
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		RevokedCertificateEntries: rl.RevokedCertificateEntries,
		Number:                    number,
		ThisUpdate:                thisUpdate,
		NextUpdate:                thisUpdate.Add(c.validity),
	}, c.issuer, c.signer)
	if err != nil {
		return fmt.Errorf("sign CRL: %w", err)
	}
	out := der
	if c.pem {
		out = pemutil.EncodeCRL(der)
	}
	if err := writeAtomic(c.path, out, 0o644); err != nil {
		return fmt.Errorf("publish CRL: %w", err)
	}
	c.log.Info("published CRL", zap.String("path", c.path), zap.String("number", number.String()),
		zap.Int("revoked", len(rl.RevokedCertificateEntries)), zap.Time("nextUpdate", thisUpdate.Add(c.validity)))
	return nil
}

// writeAtomic replaces path with data: written to a temporary file beside it, synced, renamed
// over it and the directory synced, so that a reader (a web server publishing the CRL) sees
// the old file or the new one, never a part, and a crash keeps one of the two.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // fails harmlessly once renamed
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}

// crlIssuer is the issuer as CreateRevocationList needs it: with a subjectKeyIdentifier, which
// old roots lack (the leaves' authorityKeyIdentifier is derived the same way).
func crlIssuer(cert *x509.Certificate, keyID []byte) (*x509.Certificate, error) {
	if cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("certificate %q may not sign CRLs (keyUsage lacks cRLSign)", cert.Subject)
	}
	iss := *cert
	iss.SubjectKeyId = keyID
	return &iss, nil
}
