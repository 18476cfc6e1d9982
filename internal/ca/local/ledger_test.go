package local

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
)

// openLedgerConn builds a connector over the CA and ledger in dir (as after a restart), logging
// to log (nil: nowhere), and closes it at the end of the test.
func openLedgerConn(t *testing.T, dir string, log *zap.Logger) *Connector {
	t.Helper()
	c, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "ledgerFile": "ledger.jsonl"}, ca.Env{BaseDir: dir, Logger: log})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// observedLogger logs to memory, for tests that check a warning was given.
func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	return zap.New(core), logs
}

func ledgerOf(t *testing.T, c *Connector) *ledger {
	t.Helper()
	l, ok := c.issuances.(*ledger)
	if !ok {
		t.Fatalf("connector has no ledger (%T)", c.issuances)
	}
	return l
}

// leafFor has the CA in dir issue a certificate for key without recording it anywhere, for
// ledgers the tests write by hand.
func leafFor(t *testing.T, dir, key string) *x509.Certificate {
	t.Helper()
	c, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key"}, ca.Env{BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "HAND")
	req.Key = key
	issued, err := c.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return issued.Leaf
}

func entryLine(t *testing.T, key string, leaf *x509.Certificate) []byte {
	t.Helper()
	e := LedgerEntry{Key: key}
	if leaf != nil {
		e.Serial, e.NotAfter, e.Certificate = leaf.SerialNumber.Text(16), leaf.NotAfter.UTC(), leaf.Raw
	}
	line, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return append(line, '\n')
}

func processKey(id string) string { return "customers/C0ledger/certificateProvisioningProcesses/" + id }

func mustRecover(t *testing.T, c *Connector, key string) *x509.Certificate {
	t.Helper()
	got, err := c.Recover(context.Background(), key)
	if err != nil {
		t.Fatalf("Recover(%s): %v", key, err)
	}
	if got == nil {
		return nil
	}
	return got.Leaf
}

// TestLedgerMigratesJSONL: a ledger written before the index existed is indexed once, on the
// first open, and kept as it is; later opens read none of its lines.
func TestLedgerMigratesJSONL(t *testing.T) {
	f := newFixture(t, caSpec{}, nil)
	path := filepath.Join(f.dir, "ledger.jsonl")
	a := leafFor(t, f.dir, processKey("A"))
	b1 := leafFor(t, f.dir, processKey("B"))
	b2 := leafFor(t, f.dir, processKey("B"))
	var old bytes.Buffer
	old.Write(entryLine(t, processKey("OLD"), nil)) // the first ledgers kept no certificate
	old.Write(entryLine(t, processKey("A"), a))
	old.Write(entryLine(t, processKey("B"), b1))
	old.WriteString("\n")
	old.Write(entryLine(t, processKey("B"), b2))
	if err := os.WriteFile(path, old.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	c := openLedgerConn(t, f.dir, nil)
	if n := ledgerOf(t, c).parsed.Load(); n != 5 {
		t.Errorf("first open read %d lines, want all 5", n)
	}
	for _, tc := range []struct {
		key  string
		want *x509.Certificate
	}{{processKey("A"), a}, {processKey("B"), b2}, {processKey("OLD"), nil}, {processKey("NONE"), nil}} {
		got := mustRecover(t, c, tc.key)
		if (got == nil) != (tc.want == nil) || (got != nil && !got.Equal(tc.want)) {
			t.Errorf("Recover(%s) = %v, want serial %v", tc.key, got, tc.want)
		}
	}
	after, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(after, old.Bytes()) {
		t.Fatalf("opening changed the ledger file (%v)", err)
	}
	fi, err := os.Stat(path + IndexSuffix)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("index %v, %v; want mode 0600", fi, err)
	}

	again := openLedgerConn(t, f.dir, nil)
	if n := ledgerOf(t, again).parsed.Load(); n != 0 {
		t.Errorf("second open read %d lines, want 0", n)
	}
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "AFTERMIGRATION")
	issued, err := again.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	third := openLedgerConn(t, f.dir, nil)
	if n := ledgerOf(t, third).parsed.Load(); n != 0 {
		t.Errorf("open after an issuance read %d lines, want 0: the issuance indexed its own line", n)
	}
	if got := mustRecover(t, third, req.Key); got == nil || !got.Equal(issued.Leaf) {
		t.Errorf("Recover after migration = %v", got)
	}
	entries, err := ReadLedger(path)
	if err != nil || len(entries) != 5 || entries[4].Key != req.Key {
		t.Errorf("ledger after migration: %d entries, %v", len(entries), err)
	}
}

// TestLedgerLinesNotIndexed: a process killed between syncing its line and indexing it (or one
// sharing the file whose index update failed) leaves lines only the file knows. Recover finds
// them, in a connector already running and in one opened afterwards.
func TestLedgerLinesNotIndexed(t *testing.T) {
	f := newFixture(t, caSpec{}, ca.Settings{"ledgerFile": "ledger.jsonl"})
	t.Cleanup(func() { _ = f.conn.Close() })
	path := filepath.Join(f.dir, "ledger.jsonl")
	appendUnindexed := func(key string) *x509.Certificate {
		t.Helper()
		leaf := leafFor(t, f.dir, key)
		if _, err := appendLedger(path, entryLine(t, key, leaf), zap.NewNop()); err != nil {
			t.Fatal(err)
		}
		return leaf
	}

	x := appendUnindexed(processKey("X"))
	if got := mustRecover(t, f.conn, processKey("X")); got == nil || !got.Equal(x) {
		t.Fatalf("running connector: Recover(X) = %v", got)
	}

	// A line the index misses, then one this connector indexes: its row lies beyond the
	// progress mark, which must not move past the missing line.
	y := appendUnindexed(processKey("Y"))
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "Z")
	z, err := f.conn.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	restarted := openLedgerConn(t, f.dir, nil)
	if n := ledgerOf(t, restarted).parsed.Load(); n != 2 {
		t.Errorf("open read %d lines, want the 2 after the progress mark", n)
	}
	if got := mustRecover(t, restarted, processKey("Y")); got == nil || !got.Equal(y) {
		t.Errorf("after restart: Recover(Y) = %v", got)
	}
	if got := mustRecover(t, restarted, req.Key); got == nil || !got.Equal(z.Leaf) {
		t.Errorf("after restart: Recover(Z) = %v", got)
	}
	// The restarted connector indexed Z's line again; it is still counted as f.conn's.
	if n, m := f.conn.Issued(req.Key), restarted.Issued(req.Key); n != 1 || m != 0 {
		t.Errorf("Issued(Z): issuer %d, restarted %d; want 1, 0", n, m)
	}
}

// TestLedgerTornLastLine: a line a crash or a full disk cut short is ignored by readers and cut
// off by the next append, so that it cannot merge with the next line.
func TestLedgerTornLastLine(t *testing.T) {
	f := newFixture(t, caSpec{}, ca.Settings{"ledgerFile": "ledger.jsonl"})
	t.Cleanup(func() { _ = f.conn.Close() })
	path := filepath.Join(f.dir, "ledger.jsonl")
	reqA := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "A")
	a, err := f.conn.Issue(context.Background(), reqA)
	if err != nil {
		t.Fatal(err)
	}
	torn := `{"key":"` + processKey("TORN") + `","ser`
	appendFile(t, path, torn)

	log, logs := observedLogger()
	c := openLedgerConn(t, f.dir, log)
	if got := mustRecover(t, c, processKey("TORN")); got != nil {
		t.Errorf("Recover of a torn line = %v", got)
	}
	if got := mustRecover(t, c, reqA.Key); got == nil || !got.Equal(a.Leaf) {
		t.Errorf("Recover(A) = %v", got)
	}
	reqB := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "B")
	b, err := c.Issue(context.Background(), reqB)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ReadLedger(path)
	if err != nil || len(entries) != 2 || entries[0].Key != reqA.Key || entries[1].Key != reqB.Key {
		t.Fatalf("ledger after the append: %+v, %v; want A then B", entries, err)
	}
	if logs.FilterMessageSnippet("cut short").Len() != 1 {
		t.Errorf("no warning about the torn line: %v", logs.All())
	}
	if got := mustRecover(t, openLedgerConn(t, f.dir, nil), reqB.Key); got == nil || !got.Equal(b.Leaf) {
		t.Errorf("after restart: Recover(B) = %v", got)
	}

	// Bytes that are not the start of an entry are not cut: the file may not be a ledger.
	appendFile(t, path, "not an entry")
	before, _ := os.ReadFile(path)
	issued, err := c.Issue(context.Background(), catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "C"))
	if class, _ := ca.Classify(err); err == nil || issued != nil || class != ca.ClassRetryable || !strings.Contains(err.Error(), "not a ledger entry") {
		t.Errorf("Issue over a foreign tail = %v, %v; want a retryable error", issued, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the foreign tail was changed")
	}
}

// TestLedgerIndexRebuilt: an index that does not describe the file (the file was replaced,
// restored from a backup, or the index damaged) is noticed and rebuilt from the file.
func TestLedgerIndexRebuilt(t *testing.T) {
	// setup returns a directory whose index covers a ledger with the certificates for A and B.
	setup := func(t *testing.T) (dir string, a, b *x509.Certificate) {
		t.Helper()
		f := newFixture(t, caSpec{}, ca.Settings{"ledgerFile": "ledger.jsonl"})
		for _, id := range []string{"A", "B"} {
			req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), id)
			req.Key = processKey(id)
			issued, err := f.conn.Issue(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			a, b = b, issued.Leaf
		}
		if err := f.conn.Close(); err != nil {
			t.Fatal(err)
		}
		return f.dir, a, b
	}
	replace := func(t *testing.T, dir string, ids ...string) map[string]*x509.Certificate {
		t.Helper()
		leaves := map[string]*x509.Certificate{}
		var buf bytes.Buffer
		for _, id := range ids {
			leaves[id] = leafFor(t, dir, processKey(id))
			buf.Write(entryLine(t, processKey(id), leaves[id]))
		}
		if err := os.WriteFile(filepath.Join(dir, "ledger.jsonl"), buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return leaves
	}
	for _, tc := range []struct {
		name string
		ids  []string
	}{
		{"replaced by a shorter file", []string{"C"}},
		{"replaced by a longer file", []string{"C", "D", "E"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _, _ := setup(t)
			leaves := replace(t, dir, tc.ids...)
			log, logs := observedLogger()
			c := openLedgerConn(t, dir, log)
			if logs.FilterMessageSnippet("rebuilding").Len() != 1 {
				t.Errorf("no warning about the rebuild: %v", logs.All())
			}
			for _, id := range tc.ids {
				if got := mustRecover(t, c, processKey(id)); got == nil || !got.Equal(leaves[id]) {
					t.Errorf("Recover(%s) = %v", id, got)
				}
			}
			if got := mustRecover(t, c, processKey("A")); got != nil {
				t.Errorf("Recover(A) found serial %s in a file that does not hold it", got.SerialNumber)
			}
		})
	}
	t.Run("rows pointing elsewhere", func(t *testing.T) {
		dir, a, b := setup(t)
		log, logs := observedLogger()
		c := openLedgerConn(t, dir, log)
		db, err := sql.Open("sqlite", filepath.Join(dir, "ledger.jsonl"+IndexSuffix))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = db.Close() }()
		if _, err := db.Exec(`UPDATE entries SET pos = pos + 1`); err != nil {
			t.Fatal(err)
		}
		for key, want := range map[string]*x509.Certificate{processKey("A"): a, processKey("B"): b} {
			if got := mustRecover(t, c, key); got == nil || !got.Equal(want) {
				t.Errorf("Recover(%s) = %v", key, got)
			}
		}
		if logs.FilterMessageSnippet("rebuilding").Len() != 1 {
			t.Errorf("want one rebuild: %v", logs.All())
		}
	})
	t.Run("index deleted", func(t *testing.T) {
		dir, a, _ := setup(t)
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Remove(filepath.Join(dir, "ledger.jsonl"+IndexSuffix+suffix)); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		c := openLedgerConn(t, dir, nil)
		if got := mustRecover(t, c, processKey("A")); got == nil || !got.Equal(a) {
			t.Errorf("Recover(A) = %v", got)
		}
	})
	t.Run("index from a newer adapter", func(t *testing.T) {
		dir, _, _ := setup(t)
		db, err := sql.Open("sqlite", filepath.Join(dir, "ledger.jsonl"+IndexSuffix))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
		_, err = New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "ledgerFile": "ledger.jsonl"}, ca.Env{BaseDir: dir})
		if err == nil || !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), "delete it to rebuild") {
			t.Errorf("New = %v", err)
		}
	})
}

// TestLedgerFilesArePrivate: the ledger and its index are created 0600; a directory or files
// that group or others may access are reported, path by path, and left as they are.
func TestLedgerFilesArePrivate(t *testing.T) {
	f := newFixture(t, caSpec{}, nil)
	ledgerPath := filepath.Join(f.dir, "ledger.jsonl")
	files := []string{ledgerPath, ledgerPath + IndexSuffix, ledgerPath + IndexSuffix + "-wal", ledgerPath + IndexSuffix + "-shm"}
	checkModes := func(t *testing.T, want map[string]os.FileMode) {
		t.Helper()
		for p, mode := range want {
			fi, err := os.Stat(p)
			if err != nil || fi.Mode().Perm() != mode {
				t.Errorf("%s: %v, %v; want mode %04o", p, fi, err, mode)
			}
		}
	}
	if err := os.Chmod(f.dir, 0o700); err != nil { // t.TempDir makes it 0755
		t.Fatal(err)
	}
	log, logs := observedLogger()
	c := openLedgerConn(t, f.dir, log) // the index is in WAL mode: -wal and -shm exist while open
	checkModes(t, map[string]os.FileMode{files[0]: 0o600, files[1]: 0o600, files[2]: 0o600, files[3]: 0o600})
	if logs.Len() != 0 {
		t.Errorf("warnings for private files: %v", logs.All())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	for _, p := range files[:2] {
		if err := os.Chmod(p, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(f.dir, 0o750); err != nil {
		t.Fatal(err)
	}
	log, logs = observedLogger()
	openLedgerConn(t, f.dir, log)
	checkModes(t, map[string]os.FileMode{f.dir: 0o750, files[0]: 0o640, files[1]: 0o640})
	warned := map[string]bool{}
	for _, e := range logs.FilterMessageSnippet("accessible to group or others").All() {
		warned[e.ContextMap()["path"].(string)] = true
	}
	for _, p := range []string{f.dir, files[0], files[1]} {
		if !warned[p] {
			t.Errorf("no warning for %s: %v", p, logs.All())
		}
	}
}

// TestLedgerIndexFailureKeepsTheCertificate: once the line is synced the certificate exists, so
// an index that cannot be written does not make Issue fail (the caller would ask for a second
// certificate); the next open indexes it.
func TestLedgerIndexFailureKeepsTheCertificate(t *testing.T) {
	f := newFixture(t, caSpec{}, nil)
	log, logs := observedLogger()
	c := openLedgerConn(t, f.dir, log)
	if err := ledgerOf(t, c).db.Close(); err != nil {
		t.Fatal(err)
	}
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "NOINDEX")
	issued, err := c.Issue(context.Background(), req)
	if err != nil {
		t.Fatalf("Issue with a broken index: %v", err)
	}
	catest.CheckIssued(t, req, issued, pool(f.cert))
	if logs.FilterMessageSnippet("index not updated").Len() != 1 {
		t.Errorf("no warning about the index: %v", logs.All())
	}
	counts, err := LedgerCounts(filepath.Join(f.dir, "ledger.jsonl"))
	if err != nil || counts[req.Key] != 1 {
		t.Fatalf("ledger counts %v, %v", counts, err)
	}
	if got := mustRecover(t, openLedgerConn(t, f.dir, nil), req.Key); got == nil || !got.Equal(issued.Leaf) {
		t.Errorf("after restart: Recover = %v", got)
	}
}

// TestLedgerSharedByConnectors: connectors sharing one ledger (each with its own file lock and
// index connection, as replicas have) issue at the same time; every line stays whole, each is
// indexed once, and each connector counts only its own.
func TestLedgerSharedByConnectors(t *testing.T) {
	f := newFixture(t, caSpec{}, nil)
	const conns, each = 3, 8
	var cs []*Connector
	for range conns {
		cs = append(cs, openLedgerConn(t, f.dir, nil))
	}
	device := catest.DeviceKey(t, catest.P256)
	serials := make([][]string, conns)
	var wg sync.WaitGroup
	for i, c := range cs {
		serials[i] = make([]string, each)
		for j := range each {
			wg.Go(func() {
				req := catest.NewRequest(t, device, fmt.Sprintf("SHARED%d-%d", i, j))
				issued, err := c.Issue(context.Background(), req)
				if err != nil {
					t.Errorf("Issue: %v", err)
					return
				}
				serials[i][j] = issued.Leaf.SerialNumber.Text(16)
			})
		}
	}
	wg.Wait()
	entries, err := ReadLedger(filepath.Join(f.dir, "ledger.jsonl"))
	if err != nil || len(entries) != conns*each {
		t.Fatalf("ledger: %d entries, %v; want %d", len(entries), err, conns*each)
	}
	fresh := openLedgerConn(t, f.dir, nil)
	for i := range conns {
		for j := range each {
			key := catest.NewRequest(t, device, fmt.Sprintf("SHARED%d-%d", i, j)).Key
			if got := mustRecover(t, fresh, key); got == nil || got.SerialNumber.Text(16) != serials[i][j] {
				t.Errorf("Recover(%s) = %v, want serial %s", key, got, serials[i][j])
			}
			for k, c := range cs {
				want := 0
				if k == i {
					want = 1
				}
				if n := c.Issued(key); n != want {
					t.Errorf("connector %d: Issued(%s) = %d, want %d", k, key, n, want)
				}
			}
		}
	}
}

// childEnv names the directory the child of TestLedgerSurvivesSIGKILL issues into.
const childEnv = "CERTPROV_TEST_LEDGER_CHILD_DIR"

// TestLedgerChild is the child process of TestLedgerSurvivesSIGKILL, not a test of its own: it
// issues certificates into the ledger and prints "key serial" after each Issue returned, until
// it is killed.
func TestLedgerChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("run by TestLedgerSurvivesSIGKILL")
	}
	c, err := New(ca.Settings{"certificateFile": "ca.crt", "keyFile": "ca.key", "ledgerFile": "ledger.jsonl"}, ca.Env{BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	req := catest.NewRequest(t, catest.DeviceKey(t, catest.P256), "CHILD")
	prefix := os.Getenv(childEnv + "_PREFIX")
	// Bounded, so that a child whose parent died does not run on; the parent kills it long before.
	for i := range 100_000 {
		req.Key = processKey(fmt.Sprintf("%s%06d", prefix, i))
		issued, err := c.Issue(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("%s %s\n", req.Key, issued.Leaf.SerialNumber.Text(16))
	}
}

// TestLedgerSurvivesSIGKILL: two processes issue into one ledger and are killed with SIGKILL at
// whatever point they reached (mid-append, mid-index). Every certificate either returned is
// recovered with its serial, every line is whole, and no key has two certificates.
func TestLedgerSurvivesSIGKILL(t *testing.T) {
	f := newFixture(t, caSpec{}, ca.Settings{"ledgerFile": "ledger.jsonl"})
	if err := f.conn.Close(); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type child struct {
		cmd    *exec.Cmd
		out    *bufio.Scanner
		stderr bytes.Buffer
	}
	var children []*child
	for _, prefix := range []string{"KILLA", "KILLB"} {
		ch := &child{cmd: exec.Command(exe, "-test.run=^TestLedgerChild$", "-test.count=1")}
		ch.cmd.Env = append(os.Environ(), childEnv+"="+f.dir, childEnv+"_PREFIX="+prefix)
		ch.cmd.Stderr = &ch.stderr
		stdout, err := ch.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		ch.out = bufio.NewScanner(stdout)
		if err := ch.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children = append(children, ch)
	}
	returned := map[string]string{} // key → serial, for every certificate a child got back
	readLine := func(ch *child) bool {
		if !ch.out.Scan() {
			return false
		}
		if key, serial, ok := strings.Cut(ch.out.Text(), " "); ok && strings.HasPrefix(key, processKey("KILL")) {
			returned[key] = serial
		}
		return true
	}
	for _, ch := range children {
		for range 10 {
			if !readLine(ch) {
				t.Fatalf("child ended early: %s", ch.stderr.String())
			}
		}
	}
	for _, ch := range children {
		if err := ch.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		for readLine(ch) { // what it printed before it died
		}
		_ = ch.cmd.Wait()
	}

	c := openLedgerConn(t, f.dir, nil)
	counts, err := LedgerCounts(filepath.Join(f.dir, "ledger.jsonl"))
	if err != nil {
		t.Fatalf("ledger after SIGKILL: %v", err)
	}
	if len(returned) < 20 {
		t.Fatalf("%d certificates returned, want at least 20", len(returned))
	}
	for key, serial := range returned {
		if got := mustRecover(t, c, key); got == nil || got.SerialNumber.Text(16) != serial {
			t.Errorf("Recover(%s) = %v, want serial %s", key, got, serial)
		}
	}
	for key, n := range counts {
		if n != 1 {
			t.Errorf("%s has %d certificates", key, n)
		}
		// Issued but killed before it could say so: recoverable all the same.
		if mustRecover(t, c, key) == nil {
			t.Errorf("Recover(%s) found nothing; the ledger has it", key)
		}
	}
	t.Logf("%d certificates returned, %d in the ledger", len(returned), len(counts))
}
