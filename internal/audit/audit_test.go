package audit_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

// issue makes a CA and a leaf it signed for a fresh device key, with every kind of SAN.
func issue(t testing.TB) (leaf *x509.Certificate, deviceSPKI []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Audit Test CA", Organization: []string{"Example"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	devKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("urn:chromeos:device:dir-1")
	tmpl := &x509.Certificate{SerialNumber: new(big.Int).SetBytes([]byte{0x0a, 0xbc, 0xde, 0xf0, 0x12}), Subject: pkix.Name{CommonName: "5CD1234<&>", Organization: []string{"Example Corp"}},
		NotBefore: time.Now().Add(-time.Minute).Truncate(time.Second), NotAfter: time.Now().Add(24 * time.Hour).Truncate(time.Second),
		DNSNames: []string{"dev.example.com"}, EmailAddresses: []string{"ada@example.com"}, URIs: []*url.URL{u}, IPAddresses: []net.IP{net.ParseIP("192.0.2.7")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &devKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	spki, err := x509.MarshalPKIXPublicKey(&devKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return leaf, spki
}

func finalRecord(t testing.TB) (*journal.Record, *x509.Certificate) {
	leaf, spki := issue(t)
	created := time.Date(2026, 5, 1, 10, 0, 0, 0, time.FixedZone("UTC+2", 7200))
	rec := &journal.Record{
		Name: process.Name("C0abc", "ABCDEF0123456789ABCDEF0123456789"),
		Process: &process.Process{Name: process.Name("C0abc", "ABCDEF0123456789ABCDEF0123456789"), Customer: "C0abc", ID: "ABCDEF0123456789ABCDEF0123456789",
			SPKI: spki, User: &process.User{Email: "ada@example.com"}, ProfileRef: "wifi-user", CAConnectionRef: "corp-ca",
			SignData: []byte("sign-data-bytes"), Signature: []byte("device-signature-bytes")},
		State: journal.StateUploaded, ProfileName: "wifi-user", CAName: "corp-ca", Outcome: "issued",
		SignData: []byte("sign-data-bytes"), Signature: []byte("device-signature-bytes"), CSR: []byte("csr-bytes"),
		CertificatePEM: string(pemutil.Encode(leaf)),
		Created:        created, FinishedAt: created.Add(1500 * time.Millisecond),
	}
	return rec, leaf
}

func TestProvisioningEvent(t *testing.T) {
	rec, leaf := finalRecord(t)
	ev := audit.Provisioning(rec, "adapter-1")
	sum := sha256.Sum256(rec.Process.SPKI)
	want := &audit.Event{
		SchemaVersion: audit.SchemaVersion, ID: rec.Name, Kind: audit.KindProvisioning,
		Time: rec.FinishedAt.UTC(), InstanceID: "adapter-1", Customer: "C0abc", Scope: audit.ScopeUser,
		Profile: "wifi-user", CAConnection: "corp-ca", Outcome: "issued", SPKISHA256: hex.EncodeToString(sum[:]),
		Certificate: &audit.Certificate{
			Serial: "abcdef012", Issuer: "CN=Audit Test CA,O=Example", Subject: leaf.Subject.String(),
			SANs:      &audit.SANs{DNS: []string{"dev.example.com"}, Email: []string{"ada@example.com"}, URI: []string{"urn:chromeos:device:dir-1"}, IP: []string{"192.0.2.7"}},
			NotBefore: leaf.NotBefore.UTC(), NotAfter: leaf.NotAfter.UTC(), SPKISHA256: hex.EncodeToString(sum[:]),
		},
		DurationMS: 1500,
	}
	got, _ := json.Marshal(ev)
	exp, _ := json.Marshal(want)
	if !bytes.Equal(got, exp) {
		t.Fatalf("event\n got %s\nwant %s", got, exp)
	}
	// The same record gives the same line: what a retry after a crash writes.
	again, _ := json.Marshal(audit.Provisioning(rec.Clone(), "adapter-1"))
	if !bytes.Equal(got, again) {
		t.Fatalf("event not deterministic:\n%s\n%s", got, again)
	}
	for _, secret := range []string{"sign-data-bytes", "device-signature-bytes", "csr-bytes", "BEGIN CERTIFICATE"} {
		if strings.Contains(string(got), secret) {
			t.Errorf("event carries %q: %s", secret, got)
		}
	}
}

func TestProvisioningFailureEvent(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	base := func() *journal.Record {
		return &journal.Record{
			Name:    "customers/C0abc/certificateProvisioningProcesses/P1",
			Process: &process.Process{Customer: "C0abc", SPKI: []byte{0x30, 0x01}, Device: &process.Device{SerialNumber: "S"}, ProfileRef: "nope", CAConnectionRef: "corp-ca"},
			State:   journal.StateFailed, Created: now, FinishedAt: now.Add(time.Minute),
		}
	}
	rec := base()
	rec.FailureMessage, rec.Outcome, rec.LastError = `the certificate adapter has no profile named "nope"`, "failed", "an older retry error"
	ev := audit.Provisioning(rec, "a1")
	if ev.Outcome != "failed" || ev.Failure != rec.FailureMessage || ev.Scope != audit.ScopeDevice || ev.Profile != "nope" ||
		ev.Certificate != nil || ev.DurationMS != 60000 || ev.SPKISHA256 != audit.SPKISHA256([]byte{0x30, 0x01}) {
		t.Fatalf("failure event %+v", ev)
	}
	// Failed by Google: no message of ours; the reason is what Google said.
	rec = base()
	rec.Outcome, rec.LastError = "failed_by_google", "process failed on Google's side: device rebooted"
	if ev := audit.Provisioning(rec, "a1"); ev.Failure != rec.LastError || ev.Outcome != "failed_by_google" {
		t.Fatalf("failed_by_google event %+v", ev)
	}
}

func readLines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func event(id string) *audit.Event {
	return &audit.Event{SchemaVersion: audit.SchemaVersion, ID: id, Kind: audit.KindEnrollment, Outcome: "issued",
		Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), InstanceID: "a1"}
}

func TestFileLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new-dir")
	path := filepath.Join(dir, "audit.jsonl")
	l, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"e1", "e2"} {
		if err := l.Write(event(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(event("late")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", p, st.Mode().Perm(), want)
		}
	}
	// Opened again, the file is appended to, never truncated.
	l, err = audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Write(event("e3")); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 3 {
		t.Fatalf("%d lines: %q", len(lines), lines)
	}
	for i, line := range lines {
		var ev audit.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.ID != fmt.Sprintf("e%d", i+1) || ev.SchemaVersion != 1 {
			t.Fatalf("line %d %q: %v", i, line, err)
		}
	}
	for id, want := range map[string]bool{"e1": true, "e3": true, "e": false, "e4": false} {
		if got, err := l.Written(id); err != nil || got != want {
			t.Errorf("Written(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
}

// A crash in the middle of a write leaves a partial line: it does not count as written, and
// the next event starts on a line of its own.
func TestTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	whole, _ := json.Marshal(event("whole"))
	torn, _ := json.Marshal(event("torn"))
	if err := os.WriteFile(path, append(append(whole, '\n'), torn[:len(torn)-9]...), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for id, want := range map[string]bool{"whole": true, "torn": false} {
		if got, err := l.Written(id); err != nil || got != want {
			t.Fatalf("Written(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
	if err := l.Write(event("torn")); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 3 || lines[2] != string(torn) {
		t.Fatalf("lines after the torn one: %q", lines)
	}
	if got, err := l.Written("torn"); err != nil || !got {
		t.Fatalf("Written(torn) after the rewrite = %v, %v", got, err)
	}
}

// A line longer than any event, with an id in it, is skipped rather than stopping the search.
func TestWrittenSkipsLongLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	long := `{"id":"x","junk":"` + strings.Repeat("a", 2<<20) + `"}` + "\n"
	whole, _ := json.Marshal(event("after"))
	if err := os.WriteFile(path, append([]byte(long), append(whole, '\n')...), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for id, want := range map[string]bool{"after": true, "x": false} {
		if got, err := l.Written(id); err != nil || got != want {
			t.Fatalf("Written(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
}

func TestStream(t *testing.T) {
	var buf bytes.Buffer
	l := audit.NewStream(&buf)
	if err := l.Write(event("s1")); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Written("s1"); err != nil || got {
		t.Fatalf("a stream cannot tell what it holds: Written = %v, %v", got, err)
	}
	if !strings.HasSuffix(buf.String(), "\n") || strings.Count(buf.String(), "\n") != 1 || !strings.Contains(buf.String(), `"id":"s1"`) {
		t.Fatalf("stream got %q", buf.String())
	}
}

// Reopen after logrotate moved the file: new events go to a new file at the path. A path that
// cannot be opened leaves the log on its old sink.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Write(event("before")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(path); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(event("after")); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, path); len(got) != 1 || !strings.Contains(got[0], `"after"`) {
		t.Fatalf("new file: %q", got)
	}
	if got := readLines(t, path+".1"); len(got) != 1 || !strings.Contains(got[0], `"before"`) {
		t.Fatalf("rotated file: %q", got)
	}
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(filepath.Join(blocker, "audit.jsonl")); err == nil {
		t.Fatal("Reopen under a file succeeded")
	}
	if err := l.Write(event("still")); err != nil || l.Path() != path {
		t.Fatalf("after a failed Reopen: %v, path %s", err, l.Path())
	}
	if got := readLines(t, path); len(got) != 2 {
		t.Fatalf("old sink not kept: %q", got)
	}
}

// Concurrent writers (engine workers, the enrollment server) never interleave lines.
func TestConcurrentWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := l.Write(event(fmt.Sprintf("w%d-%d", w, i))); err != nil {
					t.Error(err)
				}
			}
		})
		wg.Go(func() {
			if _, err := l.Written("w0-0"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, line := range readLines(t, path) {
		var ev audit.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("interleaved line %q: %v", line, err)
		}
		seen[ev.ID] = true
	}
	if len(seen) != writers*each {
		t.Fatalf("%d distinct events, want %d", len(seen), writers*each)
	}
}

func TestWarnsAboutSharedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	l, err := audit.Open(path, newLogger(&buf))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !strings.Contains(buf.String(), "audit log file is accessible to group or others") {
		t.Fatalf("no warning for a 0644 audit log: %q", buf.String())
	}
}

// BenchmarkFileWrite is the cost of one event on a file: encoding, the append and the fsync,
// which the engine pays once per finished process.
func BenchmarkFileWrite(b *testing.B) {
	l, err := audit.Open(filepath.Join(b.TempDir(), "audit.jsonl"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	rec, _ := finalRecord(b)
	ev := audit.Provisioning(rec, "a1")
	b.ResetTimer()
	for b.Loop() {
		if err := l.Write(ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWritten is the search a retried write makes after a crash, through a file of 10,000
// events (about 8 MB) that does not hold the id.
func BenchmarkWritten(b *testing.B) {
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	rec, _ := finalRecord(b)
	line, _ := json.Marshal(audit.Provisioning(rec, "a1"))
	var buf bytes.Buffer
	for range 10000 {
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	l, err := audit.Open(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.SetBytes(int64(buf.Len()))
	b.ResetTimer()
	for b.Loop() {
		if found, err := l.Written("customers/C0abc/certificateProvisioningProcesses/absent"); err != nil || found {
			b.Fatal(found, err)
		}
	}
}

func newLogger(w io.Writer) *zap.Logger {
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(w), zap.DebugLevel))
}
