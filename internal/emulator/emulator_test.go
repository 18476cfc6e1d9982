package emulator

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	cm "google.golang.org/api/chromemanagement/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/certprov/certprov-adapter/internal/emulator/devicekey"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend/frontendtest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/process"
)

func TestDeviceBehaviours(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		spec      ProcessSpec
		setOnline bool // bring the device online after checking it has not signed
		wantSign  bool // the device signs eventually
		wantValid bool // and the signature verifies against the process key
	}{
		{name: "rsa", spec: ProcessSpec{}, wantSign: true, wantValid: true},
		{name: "ec der", spec: ProcessSpec{KeyType: KeyECDSA}, wantSign: true, wantValid: true},
		{name: "ec raw", spec: ProcessSpec{KeyType: KeyECDSA, ECDSARawSignature: true}, wantSign: true, wantValid: true},
		{name: "wrong key rsa", spec: ProcessSpec{Behaviour: BehaviourWrongKey}, wantSign: true},
		{name: "wrong key ec", spec: ProcessSpec{KeyType: KeyECDSA, Behaviour: BehaviourWrongKey}, wantSign: true},
		{name: "never signs", spec: ProcessSpec{Behaviour: BehaviourNeverSign}},
		{name: "offline stays pending", spec: ProcessSpec{Behaviour: BehaviourOffline}},
		{name: "offline then online", spec: ProcessSpec{Behaviour: BehaviourOffline, SignDelay: 10 * time.Millisecond},
			setOnline: true, wantSign: true, wantValid: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			name := v.start(t, tc.spec)
			v.claim(t, name, "a")
			data := []byte("to be signed: " + tc.name)
			op, err := v.signData(name, data, algorithmFor(v.snap(t, name).KeyType))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.wantSign || tc.setOnline {
				// Give a misbehaving device ample opportunity to sign anyway.
				time.Sleep(150 * time.Millisecond)
				got, err := v.api.Operations.Get(op.Name).Do()
				if err != nil {
					t.Fatal(err)
				}
				if got.Done || v.snap(t, name).State != StateSigning {
					t.Fatalf("device signed although it must not (yet): %+v", got)
				}
			}
			if tc.setOnline {
				v.emu.SetOnline(name)
			}
			if !tc.wantSign {
				return
			}
			done := v.waitOp(t, op.Name)
			proc, err := v.api.Get(name).Do()
			if err != nil || done.Error != nil {
				t.Fatalf("get %v, op error %+v", err, done.Error)
			}
			sig, err := base64.StdEncoding.DecodeString(proc.Signature)
			if err != nil || len(sig) == 0 {
				t.Fatalf("signature %q: %v", proc.Signature, err)
			}
			if got := verifyWithStdlib(t, proc.SubjectPublicKeyInfo, data, sig); got != tc.wantValid {
				t.Errorf("signature verifies = %v, want %v", got, tc.wantValid)
			}
			if got := devicekey.Verify(v.snap(t, name).SPKI, data, sig) == nil; got != tc.wantValid {
				t.Errorf("devicekey.Verify = %v, want %v", got, tc.wantValid)
			}
		})
	}
}

// receive collects n messages from the emulator's subscription through a pubsub v2 subscriber.
func receive(t *testing.T, emu *Emulator, n int) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(emu.PubSubAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client, err := pubsub.NewClient(ctx, emu.Project(), option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var mu sync.Mutex
	var got [][]byte
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	err = client.Subscriber(emu.SubscriptionName()).Receive(rctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		mu.Lock()
		defer mu.Unlock()
		got = append(got, m.Data)
		if len(got) >= n {
			rcancel()
		}
	})
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) < n {
		t.Fatalf("received %d messages, want %d", len(got), n)
	}
	return got
}

// decodeProto reads CertificateProvisioningProcessCreatedEventData independently of the encoder.
func decodeProto(t *testing.T, b []byte) (id, customer string) {
	t.Helper()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			t.Fatalf("bad tag in %x", b)
		}
		b = b[n:]
		v, n := protowire.ConsumeString(b)
		if n < 0 {
			t.Fatalf("bad string in %x", b)
		}
		b = b[n:]
		switch num {
		case 1:
			id = v
		case 2:
			customer = v
		}
	}
	return id, customer
}

func TestNotificationsThroughPubSub(t *testing.T) {
	t.Parallel()
	tests := []struct {
		encoding   string
		duplicates int
	}{
		{encoding: EncodingCamel},
		{encoding: EncodingSnake},
		{encoding: EncodingProto, duplicates: 2},
	}
	for _, tc := range tests {
		t.Run(tc.encoding, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			name, err := v.emu.StartProcess(context.Background(), ProcessSpec{
				Customer: "C0pubsub", Encoding: tc.encoding, Duplicates: tc.duplicates})
			if err != nil {
				t.Fatal(err)
			}
			msgs := receive(t, v.emu, 1+tc.duplicates)
			for _, data := range msgs {
				var id, customer string
				switch tc.encoding {
				case EncodingCamel:
					var m struct{ CertificateProvisioningProcessId, CustomerId string }
					if err := strictJSON(data, &m); err != nil {
						t.Fatalf("camel %s: %v", data, err)
					}
					id, customer = m.CertificateProvisioningProcessId, m.CustomerId
				case EncodingSnake:
					var m struct {
						ID       string `json:"certificate_provisioning_process_id"`
						Customer string `json:"customer_id"`
					}
					if err := strictJSON(data, &m); err != nil {
						t.Fatalf("snake %s: %v", data, err)
					}
					id, customer = m.ID, m.Customer
				case EncodingProto:
					if len(data) == 0 || data[0] == '{' {
						t.Fatalf("proto message looks like JSON: %q", data)
					}
					id, customer = decodeProto(t, data)
				}
				if got := process.Name(customer, id); got != name {
					t.Errorf("notification names %q, want %q", got, name)
				}
			}
		})
	}
}

func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func TestPublishRawAndNoPublish(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	if _, err := v.emu.StartProcess(context.Background(), ProcessSpec{NoPublish: true}); err != nil {
		t.Fatal(err)
	}
	if err := v.emu.Publish(context.Background(), []byte("not a notification")); err != nil {
		t.Fatal(err)
	}
	// Only the raw message arrives: NoPublish published nothing before it.
	msgs := receive(t, v.emu, 1)
	if string(msgs[0]) != "not a notification" {
		t.Errorf("first message = %q", msgs[0])
	}
}

func TestFailNext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		method      string
		n, status   int
		retryAfter  time.Duration
		calls       int // claim calls made
		wantCodes   []int
		wantRetry   string
		wantClaimed bool
	}{
		{name: "429 with Retry-After", method: MethodClaim, n: 2, status: 429, retryAfter: 1500 * time.Millisecond,
			calls: 3, wantCodes: []int{429, 429, 200}, wantRetry: "2", wantClaimed: true},
		{name: "503 any method", method: "", n: 1, status: 503,
			calls: 2, wantCodes: []int{503, 200}, wantClaimed: true},
		{name: "other method untouched", method: MethodSignData, n: 1, status: 500,
			calls: 1, wantCodes: []int{200}, wantClaimed: true},
		{name: "ignored bad status", method: MethodClaim, n: 1, status: 200,
			calls: 1, wantCodes: []int{200}, wantClaimed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			name := v.start(t, ProcessSpec{})
			v.emu.FailNext(tc.method, tc.n, tc.status, tc.retryAfter)
			for i := 0; i < tc.calls; i++ {
				_, err := v.api.Claim(name, &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{
					CallerInstanceId: "a"}).Do()
				if tc.wantCodes[i] == 200 {
					if err != nil {
						t.Fatalf("call %d: %v", i, err)
					}
					continue
				}
				gerr := frontendtest.WantError(t, err, tc.wantCodes[i], frontend.StatusName(tc.wantCodes[i]))
				if got := gerr.Header.Get("Retry-After"); got != tc.wantRetry {
					t.Errorf("call %d: Retry-After %q, want %q", i, got, tc.wantRetry)
				}
				if s := v.snap(t, name); s.ClaimedBy != "" {
					t.Errorf("injected failure applied the claim")
				}
			}
			s := v.snap(t, name)
			if (s.ClaimedBy != "") != tc.wantClaimed || s.Calls[MethodClaim] != tc.calls {
				t.Errorf("claimed by %q, calls %v; want claimed %v and %d claim calls", s.ClaimedBy, s.Calls, tc.wantClaimed, tc.calls)
			}
		})
	}
}

func TestLoseNextResponses(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "Lost CA")
	t.Run("claim applied", func(t *testing.T) {
		t.Parallel()
		v := newEnv(t)
		name := v.start(t, ProcessSpec{})
		v.emu.LoseNextResponses(MethodClaim, 1)
		_, err := v.api.Claim(name, &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{CallerInstanceId: "a"}).Do()
		frontendtest.WantError(t, err, 503, "UNAVAILABLE")
		if s := v.snap(t, name); s.State != StateClaimed || s.ClaimedBy != "a" {
			t.Fatalf("lost claim not applied: %s %q", s.State, s.ClaimedBy)
		}
		v.claim(t, name, "a") // the retry by the same instance succeeds
	})
	t.Run("signData applied, blind retry fails the process", func(t *testing.T) {
		t.Parallel()
		v := newEnv(t)
		name := v.start(t, ProcessSpec{Behaviour: BehaviourNeverSign})
		v.claim(t, name, "a")
		v.emu.LoseNextResponses(MethodSignData, 1)
		_, err := v.signData(name, []byte("x"), process.AlgorithmRSAPKCS1SHA256)
		frontendtest.WantError(t, err, 503, "UNAVAILABLE")
		got, err := v.api.Get(name).Do()
		if err != nil || got.SignData == "" {
			t.Fatalf("lost signData not visible in get: %+v %v", got, err)
		}
		_, err = v.signData(name, []byte("x"), process.AlgorithmRSAPKCS1SHA256)
		frontendtest.WantError(t, err, 400, "FAILED_PRECONDITION")
		if s := v.snap(t, name); s.State != StateFailed || s.SignDataCount != 2 || s.Calls[MethodSignData] != 2 {
			t.Errorf("state %s signDataCount %d calls %v", s.State, s.SignDataCount, s.Calls)
		}
	})
	t.Run("upload applied", func(t *testing.T) {
		t.Parallel()
		v := newEnv(t)
		name := v.start(t, ProcessSpec{})
		v.signed(t, name, []byte("x"))
		v.emu.LoseNextResponses(MethodUploadCertificate, 1)
		err := v.upload(name, ca.issue(t, v.snap(t, name).PublicKey, "x"))
		frontendtest.WantError(t, err, 503, "UNAVAILABLE")
		if s := v.snap(t, name); s.State != StateIssued {
			t.Errorf("state = %s, want issued", s.State)
		}
	})
}

func TestLatency(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	name := v.start(t, ProcessSpec{})
	v.emu.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := v.api.Get(name).Context(ctx).Do(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get with an hour of latency: %v, want deadline exceeded", err)
	}
	v.emu.SetLatency(0)
	if _, err := v.api.Get(name).Do(); err != nil {
		t.Fatalf("get without latency: %v", err)
	}
}

func TestControlAPI(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	body := `{"specs":[
		{"keyType":"ecdsa","scope":"user","profileRef":"user","caRef":"builtin","signDelay":"10ms","noPublish":true},
		{"behaviour":"never-sign","profileRef":"device","noPublish":true,
		 "scepProfile":{"subjectCommonName":"cn","subjectAltNames":[{"type":"DNS_NAME","value":"a.example"}]}}]}`
	code, resp := rawCall(t, v, http.MethodPost, ControlPath, body)
	if code != 200 {
		t.Fatalf("POST = %d %s", code, resp)
	}
	var created CreateProcessesResponse
	if err := json.Unmarshal([]byte(resp), &created); err != nil || len(created.Names) != 2 {
		t.Fatalf("response %s: %v", resp, err)
	}
	_, list := rawCall(t, v, http.MethodGet, ControlPath, "")
	var listed ListProcessesResponse
	if err := json.Unmarshal([]byte(list), &listed); err != nil {
		t.Fatalf("list %s: %v", list, err)
	}
	if len(listed.Processes) != 2 {
		t.Fatalf("listed %d processes", len(listed.Processes))
	}
	byName := map[string]Snapshot{}
	for _, s := range listed.Processes {
		byName[s.Name] = s
	}
	first := byName[created.Names[0]]
	if first.Scope != ScopeUser || first.KeyType != KeyECDSA || first.State != StatePending || first.Customer != DefaultCustomer {
		t.Errorf("first = %+v", first)
	}
	if _, ok := first.PublicKey.(*ecdsa.PublicKey); !ok || len(first.SPKI) == 0 {
		t.Errorf("public key not restored from spki: %T", first.PublicKey)
	}
	direct, _ := v.emu.Process(created.Names[0])
	if !reflect.DeepEqual(first.SPKI, direct.SPKI) || !first.Created.Equal(direct.Created) {
		t.Errorf("control snapshot differs from Process()")
	}
	got, err := v.api.Get(created.Names[1]).Do()
	if err != nil || got.ScepProfile == nil || got.ScepProfile.SubjectAltNames[0].Value != "a.example" {
		t.Errorf("scep profile through control API: %+v %v", got, err)
	}

	for _, bad := range []struct{ method, body string }{
		{http.MethodPost, `{"specs":[{"signDelay":"soon"}]}`},
		{http.MethodPost, `{"specs":[{"noPublish":true},{"scope":"planet"}]}`},
		{http.MethodPost, `{"specs":[{"colour":"red"}]}`},
		{http.MethodPost, `{"specs":[]}`},
		{http.MethodPost, `{"specs":`},
		{http.MethodPut, `{}`},
	} {
		code, resp := rawCall(t, v, bad.method, ControlPath, bad.body)
		if code < 400 || code > 499 || !strings.Contains(resp, `"error"`) {
			t.Errorf("%s %s = %d %s, want a 4xx error envelope", bad.method, bad.body, code, resp)
		}
	}
	if n := len(v.emu.Snapshots()); n != 2 {
		t.Errorf("rejected requests created processes: %d in total", n)
	}
}

func TestProcessSpecJSONRoundTrip(t *testing.T) {
	t.Parallel()
	in := ProcessSpec{
		Customer: "C1", Scope: ScopeUser, KeyType: KeyECDSA, ProfileRef: "p", CARef: "c", SCEPCAConnection: true,
		SCEPProfile: &process.SCEPProfile{CommonName: "cn", Organization: "o", OrganizationalUnits: []string{"u"},
			Locality: "l", State: "s", Country: "JP", TemplateName: "t",
			SANs: []process.SAN{{Type: process.SANUPN, Value: "a@b"}}, KeyUsages: []string{process.KeyUsageKeyEncipherment}},
		Serial: "S", DeviceDirectoryID: "D", UserEmail: "E", UserDirectoryID: "U", AffiliatedUser: true,
		SignDelay: 2 * time.Second, Behaviour: BehaviourOffline, ECDSARawSignature: true, Encoding: EncodingProto,
		Duplicates: 3, NoPublish: true,
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"signDelay":"2s"`) || !strings.Contains(string(b), `"ecdsaRawSignature":true`) {
		t.Errorf("wire form %s", b)
	}
	var out ProcessSpec
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n in %+v\nout %+v", in, out)
	}
}

func TestInvalidSpecs(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	for _, spec := range []ProcessSpec{
		{Customer: "a/b"},
		{Scope: "machine"},
		{KeyType: "dsa"},
		{Behaviour: "sulk"},
		{Encoding: "xml"},
		{SignDelay: -time.Second},
		{Duplicates: -1},
		{AffiliatedUser: true},
	} {
		if _, err := v.emu.StartProcess(context.Background(), spec); err == nil {
			t.Errorf("StartProcess(%+v) succeeded", spec)
		}
	}
	if n := len(v.emu.Snapshots()); n != 0 {
		t.Errorf("invalid specs created %d processes", n)
	}
}

func TestSnapshotsSortedAndLookup(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	for i := 0; i < 5; i++ {
		v.start(t, ProcessSpec{KeyType: KeyECDSA})
	}
	snaps := v.emu.Snapshots()
	if len(snaps) != 5 || !sort.SliceIsSorted(snaps, func(i, j int) bool { return snaps[i].Name < snaps[j].Name }) {
		t.Errorf("snapshots not 5 sorted: %d", len(snaps))
	}
	if _, ok := v.emu.Process("customers/C0demo/certificateProvisioningProcesses/nope"); ok {
		t.Error("Process found a missing process")
	}
	if err := v.emu.ClaimAs("customers/C0demo/certificateProvisioningProcesses/nope", "x"); err == nil {
		t.Error("ClaimAs of a missing process succeeded")
	}
	if err := v.emu.ClaimAs(snaps[0].Name, "x"); err != nil {
		t.Fatal(err)
	}
	if err := v.emu.ClaimAs(snaps[0].Name, "y"); err == nil {
		t.Error("ClaimAs over another claimant succeeded")
	}
	v.emu.SetOnline("unknown") // must not panic
}

func TestCloseAndListenErrors(t *testing.T) {
	t.Parallel()
	emu, err := New(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := emu.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := emu.StartProcess(context.Background(), ProcessSpec{}); err == nil {
		t.Error("StartProcess after Close succeeded")
	}
	if err := emu.Publish(context.Background(), []byte("x")); err == nil {
		t.Error("Publish after Close succeeded")
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if emu, err := New(context.Background(), Options{PubSubListen: l.Addr().String()}); err == nil {
		_ = emu.Close()
		t.Error("New on a busy port succeeded")
	}
	if _, err := New(context.Background(), Options{AckDeadline: time.Second}); err == nil {
		t.Error("New with a 1s ack deadline succeeded")
	}
}

func TestVerifyIssued(t *testing.T) {
	t.Parallel()
	root := newTestCA(t, "Root")
	other := newTestCA(t, "Other root")
	inter := newIntermediate(t, root)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	issued := func(pemText string) Snapshot {
		return Snapshot{Name: "p", State: StateIssued, CertificatePEM: pemText, SPKI: spki, PublicKey: key.Public()}
	}
	leaf := root.issue(t, key.Public(), "leaf")
	tests := []struct {
		name          string
		snap          Snapshot
		roots, inters *x509.CertPool
		wantErr       string
	}{
		{name: "ok", snap: issued(leaf), roots: root.pool},
		{name: "through intermediate", snap: issued(inter.issue(t, key.Public(), "leaf")), roots: root.pool, inters: inter.pool},
		{name: "intermediate missing", snap: issued(inter.issue(t, key.Public(), "leaf")), roots: root.pool, wantErr: "chain"},
		{name: "other root", snap: issued(leaf), roots: other.pool, wantErr: "chain"},
		{name: "nil roots", snap: issued(leaf), wantErr: "no root"},
		{name: "not issued", snap: Snapshot{Name: "p", State: StateFailed, FailureMessage: "boom"}, roots: root.pool, wantErr: "boom"},
		{name: "chain uploaded", snap: issued(leaf + root.pem), roots: root.pool, wantErr: "more than one"},
		{name: "wrong key", snap: issued(root.issue(t, otherKey(t), "leaf")), roots: root.pool, wantErr: "differs"},
		{name: "expired", snap: issued(root.issueAt(t, key.Public(), "old", time.Now().Add(-48*time.Hour))), roots: root.pool, wantErr: "expired"},
		{name: "not yet valid", snap: issued(root.issueAt(t, key.Public(), "new", time.Now().Add(48*time.Hour))), roots: root.pool, wantErr: "not valid before"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cert, err := VerifyIssued(tc.snap, tc.roots, tc.inters)
			if tc.wantErr == "" {
				if err != nil || cert == nil {
					t.Fatalf("VerifyIssued: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("VerifyIssued error = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestCertPoolFromPEM(t *testing.T) {
	t.Parallel()
	root := newTestCA(t, "Root")
	inter := newIntermediate(t, root)
	key := otherKey(t)
	spki, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	snap := Snapshot{Name: "p", State: StateIssued, CertificatePEM: inter.issue(t, key, "leaf"), SPKI: spki}
	for _, tc := range []struct {
		name, bundle string
		wantErr      bool
	}{
		{name: "root and intermediate", bundle: inter.pem + root.pem},
		{name: "intermediate only (anchor)", bundle: inter.pem},
		{name: "empty", bundle: "nothing here", wantErr: true},
	} {
		roots, inters, err := CertPoolFromPEM([]byte(tc.bundle))
		if tc.wantErr {
			if err == nil {
				t.Errorf("%s: no error", tc.name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if _, err := VerifyIssued(snap, roots, inters); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestConcurrentUse drives many processes at once, under -race, through the generated client.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	ca := newTestCA(t, "Concurrent CA")
	v.emu.FailNext(MethodGet, 3, 429, 0)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 8; i++ {
		name := v.start(t, ProcessSpec{KeyType: []string{KeyRSA, KeyECDSA}[i%2], SignDelay: time.Duration(i) * time.Millisecond})
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- drive(v, ca, name)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, s := range v.emu.Snapshots() {
		if _, err := VerifyIssued(s, ca.pool, nil); err != nil {
			t.Error(err)
		}
	}
}

// drive is a minimal adapter: get (retrying injected 429s), claim, sign, poll, upload.
func drive(v *env, ca *testCA, name string) error {
	for {
		_, err := v.api.Get(name).Do()
		var gerr *googleapi.Error
		if errors.As(err, &gerr) && gerr.Code == 429 {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	if _, err := v.api.Claim(name, &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{CallerInstanceId: "a"}).Do(); err != nil {
		return err
	}
	s, _ := v.emu.Process(name)
	op, err := v.signData(name, []byte("data"), algorithmFor(s.KeyType))
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(20 * time.Second); !op.Done; {
		if time.Now().After(deadline) {
			return errors.New("operation not done")
		}
		time.Sleep(5 * time.Millisecond)
		if op, err = v.api.Operations.Get(op.Name).Do(); err != nil {
			return err
		}
	}
	cert, err := x509Leaf(ca, s)
	if err != nil {
		return err
	}
	return v.upload(name, cert)
}

func x509Leaf(ca *testCA, s Snapshot) (string, error) {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: s.ID()},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, s.PublicKey, ca.key)
	if err != nil {
		return "", err
	}
	return string(pemutil.EncodeCertificateDER(der)), nil
}
