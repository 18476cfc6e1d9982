package crashtest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator"
)

// TestRenewalCrash renews 60 devices' certificates while the adapter is SIGKILLed at random
// moments and restarted on the same SQLite journal. The device profile revokes superseded
// certificates a second after the renewal (revokeSuperseded, grace period 1s), and the kills go
// on until at least one landed while renewed certificates were uploaded and their predecessors
// not yet revoked: between the journaled decision to revoke, the CA's revocation and the
// journaling of its outcome. In the
// end every first certificate is on the built-in CA's CRL with reason superseded (revocation
// happens at least once, and revoking twice is harmless), no renewed certificate is, and every
// process of both rounds is issued exactly once.
func TestRenewalCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs the adapter binary for about half a minute")
	}
	seed := crashSeed(t)
	w := newWorld(t)
	w.renewal, w.crl = true, filepath.Join(w.dir, "ca", "ca.crl")
	cfg := w.writeConfig("adapter", "renewal-adapter-1", journalConfig{typ: "sqlite", path: filepath.Join(w.dir, "journal.db")})

	const devices, kills, maxKills = 60, 6, 20
	round := func(r int) []string {
		var names []string
		for i := range devices {
			name, err := w.emu.StartProcess(context.Background(), emulator.ProcessSpec{
				Customer: customer, Scope: "device", ProfileRef: "device", CARef: "builtin",
				KeyType: []string{"rsa", "ecdsa"}[i%2], DeviceDirectoryID: fmt.Sprintf("renewal-device-%02d", i),
				Serial: fmt.Sprintf("RENEW%02d", i), SignDelay: time.Duration(i*7919%1000) * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
			w.caOf[name] = "builtin"
		}
		return names
	}

	// Round 1, no kills: the certificates the renewal supersedes.
	p := w.startAdapter(cfg)
	first := round(1)
	w.waitAll(first, 2*time.Minute)

	// Round 2: the same devices again, new keys, the adapter killed meanwhile.
	second := round(2)
	rng := rand.New(rand.NewPCG(seed, 2))
	killed, killedPending := 0, 0
	for ; killed < kills || killedPending == 0; killed++ {
		if killed == maxKills {
			t.Fatalf("no kill of %d landed while revocations were outstanding", maxKills)
		}
		time.Sleep(time.Duration(200+rng.IntN(1200)) * time.Millisecond)
		if p.exited() {
			w.logAdapterErrors(p)
			t.Fatalf("adapter exited on its own before kill %d", killed+1)
		}
		uploaded := 0
		for _, n := range second {
			if s, _ := w.emu.Process(n); s.State == emulator.StateIssued {
				uploaded++
			}
		}
		if uploaded > len(readCRL(t, w.crl)) {
			killedPending++
		}
		p.kill()
		p = w.startAdapter(cfg)
	}
	w.waitAll(second, 3*time.Minute)

	serials := func(names []string) map[string]string {
		out := map[string]string{}
		for _, n := range names {
			s, _ := w.emu.Process(n)
			leaf, err := emulator.VerifyIssued(s, w.roots, nil)
			if err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			out[leaf.SerialNumber.Text(16)] = n
		}
		return out
	}
	old, renewed := serials(first), serials(second)

	// Revocations follow the uploads; wait until the CRL lists every first certificate.
	var listed map[string]int
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		listed = readCRL(t, w.crl)
		missing := 0
		for s := range old {
			if _, ok := listed[s]; !ok {
				missing++
			}
		}
		if missing == 0 {
			break
		}
	}
	p.stop()

	for s, n := range old {
		reason, ok := listed[s]
		switch {
		case !ok:
			t.Errorf("%s: superseded certificate %s not revoked", n, s)
		case reason != 4: // RFC 5280 superseded
			t.Errorf("%s: certificate %s revoked with reason %d, want 4 (superseded)", n, s, reason)
		}
	}
	for s, n := range renewed {
		if _, ok := listed[s]; ok {
			t.Errorf("%s: the renewed certificate %s was revoked", n, s)
		}
	}
	if len(listed) != len(old) {
		t.Errorf("the CRL lists %d certificates, want the %d superseded ones", len(listed), len(old))
	}
	o := w.check(append(first, second...))
	if o.issued != 2*devices {
		t.Errorf("%d of %d processes issued", o.issued, 2*devices)
	}
	t.Logf("renewal crash test (seed %d): %d devices renewed, %d SIGKILLs (%d with revocations outstanding), %d superseded certificates revoked, %s",
		seed, devices, killed, killedPending, len(listed), o)
}

// readCRL reads the built-in CA's CRL file (DER or PEM): the revoked serials (hex) and their
// reason codes. A CRL not written yet reads as empty.
func readCRL(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(b); block != nil {
		b = block.Bytes
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		t.Fatalf("CRL %s: %v", path, err)
	}
	out := map[string]int{}
	for _, e := range crl.RevokedCertificateEntries {
		out[new(big.Int).Set(e.SerialNumber).Text(16)] = e.ReasonCode
	}
	return out
}
