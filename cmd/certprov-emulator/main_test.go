package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	cm "google.golang.org/api/chromemanagement/v1"
	"google.golang.org/api/option"

	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// syncBuffer is a goroutine-safe bytes.Buffer for captured output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{args: nil, wantCode: exitUsage},
		{args: []string{"frobnicate"}, wantCode: exitUsage},
		{args: []string{"version"}, wantCode: exitOK, wantOut: "certprov-emulator "},
		{args: []string{"help"}, wantCode: exitOK, wantOut: "provision"},
		{args: []string{"serve", "--no-such-flag"}, wantCode: exitUsage},
		{args: []string{"serve", "extra"}, wantCode: exitUsage},
		{args: []string{"serve", "--log-level", "loud"}, wantCode: exitUsage},
		{args: []string{"provision", "--mix", "device-dsa", "--ca-cert", "x"}, wantCode: exitUsage},
		{args: []string{"provision"}, wantCode: exitUsage}, // --ca-cert missing
		{args: []string{"provision", "--ca-cert", "/nonexistent/ca.pem"}, wantCode: exitUsage},
		{args: []string{"provision", "--count", "0", "--ca-cert", "x"}, wantCode: exitUsage},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			var out, errOut syncBuffer
			code := run(context.Background(), tc.args, &out, &errOut)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.wantCode, errOut.String())
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("stdout %q lacks %q", out.String(), tc.wantOut)
			}
		})
	}
}

func TestServe(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		code := runServe(ctx, []string{"--listen", "127.0.0.1:0", "--pubsub-listen", "127.0.0.1:0",
			"--project", "p1", "--topic", "t1", "--subscription", "s1"}, pw, &stderr)
		_ = pw.Close()
		done <- code
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("read ready line: %v (stderr: %s)", err, stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	m := regexp.MustCompile(`^emulator ready rest=(http://\S+) pubsub=(\S+)\n$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("ready line %q", line)
	}
	if _, _, err := net.SplitHostPort(m[2]); err != nil {
		t.Errorf("pubsub address %q: %v", m[2], err)
	}
	resp, err := http.Get(m[1] + emulator.ControlPath)
	if err != nil {
		t.Fatalf("control API: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("control API status %d", resp.StatusCode)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("serve exit %d, want 0; stderr: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "projects/p1/subscriptions/s1") {
		t.Errorf("logs do not name the subscription: %s", stderr.String())
	}
}

func TestServeBusyPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, args := range [][]string{
		{"--listen", l.Addr().String(), "--pubsub-listen", "127.0.0.1:0"},
		{"--listen", "127.0.0.1:0", "--pubsub-listen", l.Addr().String()},
	} {
		var out, errOut syncBuffer
		if code := runServe(context.Background(), args, &out, &errOut); code != exitFail {
			t.Errorf("%v: exit %d, want %d", args, code, exitFail)
		}
		if strings.Contains(out.String(), "ready") {
			t.Errorf("%v: printed ready although it failed", args)
		}
	}
}

func TestParseMix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    []kind
		wantErr bool
	}{
		{in: "device-rsa,device-ec,user-rsa,user-ec", want: []kind{
			{"device", "rsa"}, {"device", "ecdsa"}, {"user", "rsa"}, {"user", "ecdsa"}}},
		{in: " user-ecdsa , ", want: []kind{{"user", "ecdsa"}}},
		{in: "", wantErr: true},
		{in: "device", wantErr: true},
		{in: "machine-rsa", wantErr: true},
		{in: "device-dsa", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseMix(tc.in)
		if (err != nil) != tc.wantErr || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseMix(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestPlanSpecs(t *testing.T) {
	t.Parallel()
	mix, err := parseMix("device-rsa,user-ec")
	if err != nil {
		t.Fatal(err)
	}
	specs := plan{count: 3, mix: mix, customer: "C9", profile: "dp", userProfile: "up", caRef: "ca",
		signDelay: time.Second}.specs()
	want := []emulator.ProcessSpec{
		{Customer: "C9", Scope: "device", KeyType: "rsa", ProfileRef: "dp", CARef: "ca", SignDelay: time.Second},
		{Customer: "C9", Scope: "user", KeyType: "ecdsa", ProfileRef: "up", CARef: "ca", SignDelay: time.Second},
		{Customer: "C9", Scope: "device", KeyType: "rsa", ProfileRef: "dp", CARef: "ca", SignDelay: time.Second},
	}
	if !reflect.DeepEqual(specs, want) {
		t.Errorf("specs = %+v", specs)
	}
}

// testCA issues leaves for arbitrary keys.
type testCA struct {
	*catest.CA
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	c := catest.NewRoot(t, "Provision CA")
	return &testCA{CA: c, pool: c.Pool()}
}

func (ca *testCA) leaf(t *testing.T, s emulator.Snapshot, cn string) string {
	t.Helper()
	return string(pemutil.Encode(ca.Sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}, s.PublicKey)))
}

func (ca *testCA) writeFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pemutil.Encode(ca.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEvaluateAndTable(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	base := emulator.Snapshot{Scope: "device", KeyType: "ecdsa", SPKI: spki, PublicKey: key.Public()}
	mk := func(id, state string, mod func(*emulator.Snapshot)) emulator.Snapshot {
		s := base
		s.Name, s.State = "customers/C/certificateProvisioningProcesses/"+id, state
		if mod != nil {
			mod(&s)
		}
		return s
	}
	snaps := []emulator.Snapshot{
		mk("A1", emulator.StateIssued, func(s *emulator.Snapshot) { s.CertificatePEM = ca.leaf(t, *s, "host-a") }),
		mk("B2", emulator.StateFailed, func(s *emulator.Snapshot) { s.FailureMessage = "CA said\nno" }),
		mk("C3", emulator.StateSigning, nil),
		mk("D4", emulator.StateIssued, func(s *emulator.Snapshot) { s.CertificatePEM = "garbage" }),
	}
	names := []string{snaps[3].Name, snaps[0].Name, snaps[1].Name, snaps[2].Name, "customers/C/certificateProvisioningProcesses/E5"}
	outcomes := evaluate(names, snaps, ca.pool, nil)
	wantKinds := []string{outcomeInvalid, outcomeIssued, outcomeFailed, outcomeUnfinished, outcomeMissing}
	for i, o := range outcomes {
		if o.Kind != wantKinds[i] {
			t.Errorf("outcome %d = %+v, want kind %s", i, o, wantKinds[i])
		}
	}
	var buf bytes.Buffer
	if err := writeTable(&buf, outcomes); err != nil {
		t.Fatal(err)
	}
	table := buf.String()
	for _, want := range []string{"PROCESS", "A1", "issued CN=host-a", "failed: CA said no", "unfinished (signing)", "invalid: ", "E5"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if lines := strings.Count(table, "\n"); lines != 1+len(names) {
		t.Errorf("table has %d lines, want %d:\n%s", lines, 1+len(names), table)
	}

	tests := []struct {
		name     string
		outcomes []outcome
		wantOK   bool
		wantLine string
	}{
		{name: "all issued", outcomes: []outcome{{Kind: outcomeIssued}, {Kind: outcomeIssued}}, wantOK: true,
			wantLine: "2 processes: 2 issued, 0 failed, 0 invalid, 0 unfinished - OK"},
		{name: "mixed", outcomes: outcomes, wantLine: "5 processes: 1 issued, 1 failed, 1 invalid, 1 unfinished, 1 missing - FAIL"},
		{name: "none", outcomes: nil, wantLine: "0 processes: 0 issued, 0 failed, 0 invalid, 0 unfinished - FAIL"},
	}
	for _, tc := range tests {
		line, ok := summarize(tc.outcomes)
		if ok != tc.wantOK || line != tc.wantLine {
			t.Errorf("%s: summarize = %q, %v; want %q, %v", tc.name, line, ok, tc.wantLine, tc.wantOK)
		}
	}
}

// fakeAdapter drives every pending process of emu through the REST API with the generated
// client until ctx ends: claim, signData, poll, then upload a leaf from ca or, when fail says so,
// setFailure.
func fakeAdapter(ctx context.Context, t *testing.T, emu *emulator.Emulator, url string, ca *testCA,
	fail func(emulator.Snapshot) bool) *sync.WaitGroup {
	svc, err := cm.NewService(ctx, option.WithEndpoint(url+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	api := svc.Customers.CertificateProvisioningProcesses
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		seen := map[string]bool{}
		for ctx.Err() == nil {
			for _, s := range emu.Snapshots() {
				if seen[s.Name] || s.State != emulator.StatePending {
					continue
				}
				seen[s.Name] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := driveOne(ctx, api, s, ca, fail(s), t); err != nil && ctx.Err() == nil {
						t.Errorf("adapter %s: %v", s.Name, err)
					}
				}()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return &wg
}

func driveOne(ctx context.Context, api *cm.CustomersCertificateProvisioningProcessesService, s emulator.Snapshot,
	ca *testCA, fail bool, t *testing.T) error {
	if _, err := api.Claim(s.Name, &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{
		CallerInstanceId: "fake"}).Context(ctx).Do(); err != nil {
		return err
	}
	if fail {
		_, err := api.SetFailure(s.Name, &cm.GoogleChromeManagementVersionsV1SetFailureRequest{
			ErrorMessage: "no profile for user processes"}).Context(ctx).Do()
		return err
	}
	alg := "SIGNATURE_ALGORITHM_RSA_PKCS1_V1_5_SHA256"
	if s.KeyType == emulator.KeyECDSA {
		alg = "SIGNATURE_ALGORITHM_ECDSA_SHA256"
	}
	op, err := api.SignData(s.Name, &cm.GoogleChromeManagementVersionsV1SignDataRequest{
		SignData: base64.StdEncoding.EncodeToString([]byte("cri")), SignatureAlgorithm: alg}).Context(ctx).Do()
	if err != nil {
		return err
	}
	for !op.Done {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if op, err = api.Operations.Get(op.Name).Context(ctx).Do(); err != nil {
			return err
		}
	}
	_, err = api.UploadCertificate(s.Name, &cm.GoogleChromeManagementVersionsV1UploadCertificateRequest{
		CertificatePem: ca.leaf(t, s, "cn-"+s.ID())}).Context(ctx).Do()
	return err
}

func TestProvisionEndToEnd(t *testing.T) {
	t.Parallel()
	never := func(emulator.Snapshot) bool { return false }
	tests := []struct {
		name      string
		adapter   bool
		fail      func(emulator.Snapshot) bool
		otherCA   bool // verify against a CA that did not issue
		timeout   string
		wantCode  int
		wantTable []string
		wantLine  string
	}{
		{name: "all issued", adapter: true, fail: never, timeout: "60s", wantCode: exitOK,
			wantTable: []string{"issued CN=cn-"}, wantLine: "4 processes: 4 issued, 0 failed, 0 invalid, 0 unfinished - OK"},
		{name: "user processes failed", adapter: true, timeout: "60s", wantCode: exitFail,
			fail:      func(s emulator.Snapshot) bool { return s.Scope == emulator.ScopeUser },
			wantTable: []string{"failed: no profile for user processes", "issued CN="},
			wantLine:  "4 processes: 2 issued, 2 failed, 0 invalid, 0 unfinished - FAIL"},
		{name: "nobody serves the processes", timeout: "200ms", wantCode: exitFail,
			wantTable: []string{"unfinished (pending)"}, wantLine: "4 processes: 0 issued, 0 failed, 0 invalid, 4 unfinished - FAIL"},
		{name: "certificates from another CA", adapter: true, fail: never, otherCA: true, timeout: "60s", wantCode: exitFail,
			wantTable: []string{"invalid: verify"}, wantLine: "4 processes: 0 issued, 0 failed, 4 invalid, 0 unfinished - FAIL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			emu, err := emulator.New(ctx, emulator.Options{Logger: zaptest.NewLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(emu.Handler())
			ca := newTestCA(t)
			caFile := ca.writeFile(t)
			if tc.otherCA {
				caFile = newTestCA(t).writeFile(t)
			}
			var wg *sync.WaitGroup
			if tc.adapter {
				wg = fakeAdapter(ctx, t, emu, srv.URL, ca, tc.fail)
			}
			defer func() {
				cancel()
				if wg != nil {
					wg.Wait()
				}
				srv.Close()
				_ = emu.Close()
			}()

			var out, errOut syncBuffer
			code := runProvision(ctx, []string{"--emulator", srv.URL, "--count", "4", "--mix", "device-rsa,device-ec,user-rsa,user-ec",
				"--ca-cert", caFile, "--timeout", tc.timeout, "--sign-delay", "5ms", "--poll", "20ms"}, &out, &errOut)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, out.String(), errOut.String())
			}
			for _, want := range tc.wantTable {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			if !strings.Contains(out.String(), tc.wantLine+"\n") {
				t.Errorf("output lacks summary %q:\n%s", tc.wantLine, out.String())
			}
			snaps := emu.Snapshots()
			if len(snaps) != 4 {
				t.Fatalf("%d processes started, want 4", len(snaps))
			}
			scopes := map[string]int{}
			for _, s := range snaps {
				scopes[s.Scope+"-"+s.KeyType]++
			}
			if !reflect.DeepEqual(scopes, map[string]int{"device-rsa": 1, "device-ecdsa": 1, "user-rsa": 1, "user-ecdsa": 1}) {
				t.Errorf("mix = %v", scopes)
			}
		})
	}
}

func TestProvisionEmulatorDown(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	var out, errOut syncBuffer
	code := runProvision(context.Background(), []string{"--emulator", url, "--ca-cert", ca.writeFile(t), "--count", "1"}, &out, &errOut)
	if code != exitUsage || !strings.Contains(errOut.String(), "create processes") {
		t.Errorf("exit %d stderr %q", code, errOut.String())
	}
}
