package doctor_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	_ "github.com/certprov/certprov-adapter/internal/ca/install"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/doctor"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

const customer = "C0doctor"

// world is the Google side (the emulator, serving REST on loopback and Pub/Sub over gRPC on its
// own port) and a directory with a built-in CA, for configurations to point at.
type world struct {
	emu  *emulator.Emulator
	rest string
	dir  string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emu, err := emulator.New(ctx, emulator.Options{Project: "doctor", Topic: "certprov", Subscription: "certprov-adapter"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	if _, _, err := local.CreateCA(filepath.Join(dir, "ca"), "ecdsa", "doctor test CA", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	return &world{emu: emu, rest: srv.URL + "/", dir: dir}
}

// config is a healthy configuration of w, changed by the edits (YAML lines replacing keys).
type cfgEdit struct {
	subscription string
	pubsubAddr   string
	credentials  string // the google.credentials block
	extraCA      string // more caConnections entries
	googleExtra  string // more google keys, indented under google
}

func (w *world) load(t *testing.T, e cfgEdit) *config.Config {
	t.Helper()
	if e.subscription == "" {
		e.subscription = "certprov-adapter"
	}
	if e.pubsubAddr == "" {
		e.pubsubAddr = w.emu.PubSubAddr()
	}
	if e.credentials == "" {
		e.credentials = "{type: none}"
	}
	text := fmt.Sprintf(`instanceId: doctor-1
customers: [%s]
pubsub: {project: doctor, subscription: %s, endpoint: %q, insecure: true}
google:
  credentials: %s
  endpoint: %q
%s
journal: {type: memory}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}}
caConnections:
  builtin: {type: local, certificateFile: ca/ca.crt, keyFile: ca/ca.key}
%s`, customer, e.subscription, e.pubsubAddr, e.credentials, w.rest, e.googleExtra, e.extraCA)
	path := filepath.Join(w.dir, "adapter.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	return cfg
}

func runDoctor(t *testing.T, cfg *config.Config) doctor.Report {
	t.Helper()
	ctx := context.Background()
	o, closeClients := doctor.FromConfig(ctx, cfg, nil)
	defer closeClients()
	o.Timeout = 10 * time.Second
	r := doctor.Run(ctx, o)
	for _, c := range r.Checks {
		t.Logf("%s %s: %s -- fix: %s", c.Status, c.Name, c.Detail, c.Fix)
	}
	return r
}

// check returns the named check, failing the test when there is none.
func check(t *testing.T, r doctor.Report, name string) doctor.Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, r.Checks)
	return doctor.Check{}
}

func wantCheck(t *testing.T, r doctor.Report, name string, st doctor.Status, inDetail, inFix []string) {
	t.Helper()
	c := check(t, r, name)
	if c.Status != st {
		t.Errorf("%s: status %s, want %s: %+v", name, c.Status, st, c)
	}
	for _, w := range inDetail {
		if !strings.Contains(c.Detail, w) {
			t.Errorf("%s: detail %q lacks %q", name, c.Detail, w)
		}
	}
	for _, w := range inFix {
		if !strings.Contains(c.Fix, w) {
			t.Errorf("%s: fix %q lacks %q", name, c.Fix, w)
		}
	}
	if st == doctor.Fail && c.Fix == "" {
		t.Errorf("%s fails without a fix", name)
	}
}

func TestHealthy(t *testing.T) {
	w := newWorld(t)
	r := runDoctor(t, w.load(t, cfgEdit{}))
	if !r.OK {
		t.Fatalf("healthy set-up fails: %+v", r.Checks)
	}
	wantCheck(t, r, "google.credentials", doctor.Skip, []string{"none"}, nil)
	wantCheck(t, r, "pubsub.subscription", doctor.OK, []string{"projects/doctor/subscriptions/certprov-adapter exists", "topic projects/doctor/topics/certprov"}, nil)
	wantCheck(t, r, "pubsub.permissions", doctor.Skip, []string{"no IAM"}, nil) // pstest has none
	wantCheck(t, r, "provisioning API customers/"+customer, doctor.OK, []string{"answers"}, nil)
	wantCheck(t, r, "caConnections.builtin", doctor.OK, []string{"local CA passed its health check"}, nil)
	if len(r.Checks) != 5 {
		t.Errorf("checks %+v", r.Checks)
	}
	// The probe read a process; it created, claimed or changed nothing.
	if snaps := w.emu.Snapshots(); len(snaps) != 0 {
		t.Errorf("the emulator has processes: %+v", snaps)
	}
}

// TestDirectory: with google.directory enabled, the doctor reads a device and a user that
// cannot exist through the adapter's Directory client; two 404s pass, a 403 on either fails with
// the delegation to grant and the subject to set, and it reads no record and changes nothing.
func TestDirectory(t *testing.T) {
	w := newWorld(t)
	name := "google.directory customers/" + customer
	load := func() *config.Config {
		return w.load(t, cfgEdit{googleExtra: "  directory: {enabled: true}"})
	}
	r := runDoctor(t, load())
	if !r.OK {
		t.Fatalf("healthy Directory fails: %+v", r.Checks)
	}
	wantCheck(t, r, name, doctor.OK, []string{"read customer " + customer + "'s devices and users"}, nil)
	if d, u := w.emu.DirectoryCalls(emulator.MethodDirectoryDevicesGet), w.emu.DirectoryCalls(emulator.MethodDirectoryUsersGet); d != 1 || u != 1 {
		t.Errorf("Directory calls: %d devices.get, %d users.get; want one each", d, u)
	}

	for _, tc := range []struct{ method, what string }{
		{emulator.MethodDirectoryDevicesGet, "devices"},
		{emulator.MethodDirectoryUsersGet, "users"},
	} {
		w.emu.FailNext(tc.method, 1, http.StatusForbidden, 0)
		r = runDoctor(t, load())
		if r.OK {
			t.Fatalf("a Directory refusing %s passes", tc.what)
		}
		wantCheck(t, r, name, doctor.Fail, []string{"refused to let", customer + "'s " + tc.what, "HTTP 403"},
			[]string{"Domain-wide delegation", "admin.directory.device.chromeos.readonly", "admin.directory.user.readonly", "google.directory.subject"})
	}

	// Not enabled: no check, no call.
	before := w.emu.DirectoryCalls(emulator.MethodDirectoryDevicesGet)
	r = runDoctor(t, w.load(t, cfgEdit{}))
	for _, c := range r.Checks {
		if strings.HasPrefix(c.Name, "google.directory") {
			t.Errorf("a check of a Directory not enabled: %+v", c)
		}
	}
	if w.emu.DirectoryCalls(emulator.MethodDirectoryDevicesGet) != before {
		t.Error("the Directory was called though not enabled")
	}
}

func TestWrongSubscription(t *testing.T) {
	w := newWorld(t)
	r := runDoctor(t, w.load(t, cfgEdit{subscription: "certprov-adaptr"}))
	if r.OK {
		t.Fatal("a missing subscription passes")
	}
	wantCheck(t, r, "pubsub.subscription", doctor.Fail, []string{"projects/doctor/subscriptions/certprov-adaptr does not exist"},
		[]string{`did you mean "certprov-adapter"?`, "gcloud pubsub subscriptions create certprov-adaptr --project doctor", "pubsub.subscription"})
	wantCheck(t, r, "pubsub.permissions", doctor.Skip, nil, nil)
	wantCheck(t, r, "provisioning API customers/"+customer, doctor.OK, nil, nil)
}

func TestPubSubUnreachable(t *testing.T) {
	w := newWorld(t)
	addr := closedAddr(t)
	r := runDoctor(t, w.load(t, cfgEdit{pubsubAddr: addr}))
	if r.OK {
		t.Fatal("an unreachable Pub/Sub passes")
	}
	wantCheck(t, r, "pubsub.subscription", doctor.Fail, []string{"cannot reach Pub/Sub at " + addr},
		[]string{addr + " is reachable from this host", "pubsub.endpoint"})
	wantCheck(t, r, "pubsub.permissions", doctor.Skip, nil, nil)
}

// TestAPIRefuses: the provisioning API answers 403 (the emulator's fault injection): the fix is
// the domain-wide delegation of the provisioning scope to the key's client id.
func TestAPIRefuses(t *testing.T) {
	w := newWorld(t)
	tokens := newTokenEndpoint(t, chromeapi.Scope)
	key := tokens.keyFile(t, w.dir)
	w.emu.FailNext(emulator.MethodGet, 1, http.StatusForbidden, 0)
	r := runDoctor(t, w.load(t, cfgEdit{credentials: fmt.Sprintf("{type: serviceAccountKey, file: %s}", key)}))
	if r.OK {
		t.Fatal("a refusing API passes")
	}
	wantCheck(t, r, "google.credentials", doctor.OK, []string{"token for " + chromeapi.Scope, "as adapter@doctor.iam.gserviceaccount.com"}, nil)
	wantCheck(t, r, "provisioning API customers/"+customer, doctor.Fail, []string{"HTTP 403 PERMISSION_DENIED"},
		[]string{"not authorised for the scope " + chromeapi.Scope, "in the Admin console, Security > API controls > Domain-wide delegation, add client id 112233445566778899 with that scope"})
	if tokens.issued() == 0 {
		t.Error("no token was requested")
	}

	// 401: the token is refused; the fix is the scope again.
	w.emu.FailNext(emulator.MethodGet, 1, http.StatusUnauthorized, 0)
	r = runDoctor(t, w.load(t, cfgEdit{credentials: fmt.Sprintf("{type: serviceAccountKey, file: %s}", key)}))
	wantCheck(t, r, "provisioning API customers/"+customer, doctor.Fail, []string{"refused the token", "HTTP 401"},
		[]string{"the token must be for the scope " + chromeapi.Scope})
}

// TestTokenRefused: the token endpoint does not grant the provisioning scope to a delegated
// subject: the fix names the client id, the subject and the scope; the API is not tried.
func TestTokenRefused(t *testing.T) {
	w := newWorld(t)
	tokens := newTokenEndpoint(t) // authorises no scope
	key := tokens.keyFile(t, w.dir)
	r := runDoctor(t, w.load(t, cfgEdit{credentials: fmt.Sprintf("{type: serviceAccountKey, file: %s, subject: admin@example.com}", key)}))
	wantCheck(t, r, "google.credentials", doctor.Fail, []string{"unauthorized_client"},
		[]string{"may not impersonate admin@example.com", "add client id 112233445566778899 with the scope " + chromeapi.Scope})
	wantCheck(t, r, "provisioning API customers/"+customer, doctor.Skip, []string{"needs a token"}, nil)
	if tokens.subject() != "admin@example.com" {
		t.Errorf("the token request was for %q", tokens.subject())
	}
}

func TestCADown(t *testing.T) {
	w := newWorld(t)
	addr := closedAddr(t)
	r := runDoctor(t, w.load(t, cfgEdit{extraCA: fmt.Sprintf(`  down:
    type: scep
    url: http://%s/scep
    signerKeyFile: state/signer.key
    signerCertFile: state/signer.crt
  broken: {type: local, certificateFile: nope/ca.crt, keyFile: ca/ca.key}
`, addr)}))
	if r.OK {
		t.Fatal("a CA that is down passes")
	}
	wantCheck(t, r, "caConnections.builtin", doctor.OK, nil, nil)
	wantCheck(t, r, "caConnections.down", doctor.Fail, []string{"connection refused"},
		[]string{"nothing accepts connections at " + addr + ": start the CA, or correct caConnections.down.url"})
	wantCheck(t, r, "caConnections.broken", doctor.Fail, []string{"caConnections.broken.certificateFile"}, []string{"validate"})
}

// TestCACertificateExpired: the built-in CA's own certificate expired: renew it.
func TestCACertificateExpired(t *testing.T) {
	w := newWorld(t)
	if _, _, err := local.CreateCA(filepath.Join(w.dir, "old"), "ecdsa", "expired CA", time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	r := runDoctor(t, w.load(t, cfgEdit{extraCA: "  old: {type: local, certificateFile: old/ca.crt, keyFile: old/ca.key}\n"}))
	wantCheck(t, r, "caConnections.old", doctor.Fail, []string{"expired"}, []string{"init-ca", "caConnections.old.certificateFile"})
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// tokenEndpoint is Google's OAuth 2.0 token endpoint for service accounts as far as the adapter
// uses it: the JWT bearer grant (RFC 7523) with an RS256 assertion signed by the key, whose aud
// is the endpoint and whose scope claim names the scopes; a scope that the account is not
// authorised for is refused with unauthorized_client (HTTP 401), as Google does for domain-wide
// delegation.
type tokenEndpoint struct {
	srv        *httptest.Server
	key        *rsa.PrivateKey
	authorised []string

	mu      sync.Mutex
	count   int
	lastSub string
}

func newTokenEndpoint(t *testing.T, authorised ...string) *tokenEndpoint {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	te := &tokenEndpoint{key: key, authorised: authorised}
	te.srv = httptest.NewServer(http.HandlerFunc(te.serve))
	t.Cleanup(te.srv.Close)
	return te
}

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	refuse := func(code int, errCode, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": errCode, "error_description": desc})
	}
	if r.Method != http.MethodPost || r.ParseForm() != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		refuse(400, "unsupported_grant_type", "Invalid grant_type")
		return
	}
	parts := strings.Split(r.PostForm.Get("assertion"), ".")
	if len(parts) != 3 {
		refuse(400, "invalid_grant", "Invalid JWT")
		return
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err != nil || rsa.VerifyPKCS1v15(&te.key.PublicKey, crypto.SHA256, digest[:], sig) != nil {
		refuse(400, "invalid_grant", "Invalid JWT Signature.")
		return
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Iss, Scope, Aud, Sub string
		Exp, Iat             int64
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Aud != te.srv.URL || claims.Exp < time.Now().Unix() {
		refuse(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.")
		return
	}
	te.mu.Lock()
	te.count++
	te.lastSub = claims.Sub
	te.mu.Unlock()
	for _, s := range strings.Fields(claims.Scope) {
		ok := false
		for _, a := range te.authorised {
			ok = ok || a == s
		}
		if !ok {
			refuse(401, "unauthorized_client", "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.")
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "ya29.test-token", "expires_in": 3599, "token_type": "Bearer"})
}

func (te *tokenEndpoint) issued() int {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.count
}

func (te *tokenEndpoint) subject() string {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.lastSub
}

// keyFile writes a service account key whose token_uri is this endpoint.
func (te *tokenEndpoint) keyFile(t *testing.T, dir string) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(te.key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "doctor", "private_key_id": "k1",
		"private_key":  string(pemutil.EncodePrivateKey(der)),
		"client_email": "adapter@doctor.iam.gserviceaccount.com", "client_id": "112233445566778899",
		"token_uri": te.srv.URL,
	})
	path := filepath.Join(dir, "sa.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// iamFake is the google.iam.v1.IAMPolicy service Pub/Sub serves beside its own API, for the one
// call the doctor makes: TestIamPermissions answers the subset of the asked permissions the
// caller holds on the resource, and none (not NOT_FOUND) for a resource that does not exist.
type iamFake struct {
	iampb.UnimplementedIAMPolicyServer
	mu      sync.Mutex
	granted map[string][]string // resource -> permissions
}

func (f *iamFake) TestIamPermissions(_ context.Context, req *iampb.TestIamPermissionsRequest) (*iampb.TestIamPermissionsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &iampb.TestIamPermissionsResponse{}
	for _, p := range req.GetPermissions() {
		if slices.Contains(f.granted[req.GetResource()], p) {
			resp.Permissions = append(resp.Permissions, p)
		}
	}
	return resp, nil
}

// TestPermissionToPull: against a Pub/Sub that has IAM, the doctor says whether the identity
// may pull, and how to grant it.
func TestPermissionToPull(t *testing.T) {
	w := newWorld(t)
	iam := &iamFake{granted: map[string][]string{}}
	ps := pstest.NewServerWithCallback(0, func(s *grpc.Server) { iampb.RegisterIAMPolicyServer(s, iam) })
	t.Cleanup(func() { _ = ps.Close() })
	ctx := context.Background()
	conn, err := grpc.NewClient(ps.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client, err := pubsub.NewClient(ctx, "doctor", option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	const topic, sub = "projects/doctor/topics/certprov", "projects/doctor/subscriptions/certprov-adapter"
	if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sub, Topic: topic}); err != nil {
		t.Fatal(err)
	}
	tokens := newTokenEndpoint(t, chromeapi.Scope)
	cfg := w.load(t, cfgEdit{pubsubAddr: ps.Addr, credentials: fmt.Sprintf("{type: serviceAccountKey, file: %s}", tokens.keyFile(t, w.dir))})

	iam.mu.Lock()
	iam.granted[sub] = []string{"pubsub.subscriptions.get"}
	iam.mu.Unlock()
	r := runDoctor(t, cfg)
	wantCheck(t, r, "pubsub.permissions", doctor.Fail, []string{"adapter@doctor.iam.gserviceaccount.com may not pull from " + sub},
		[]string{"gcloud pubsub subscriptions add-iam-policy-binding certprov-adapter --project doctor --member serviceAccount:adapter@doctor.iam.gserviceaccount.com --role roles/pubsub.subscriber"})
	if r.OK {
		t.Error("an identity that may not pull passes")
	}

	iam.mu.Lock()
	iam.granted[sub] = []string{"pubsub.subscriptions.consume"}
	iam.mu.Unlock()
	r = runDoctor(t, cfg)
	wantCheck(t, r, "pubsub.permissions", doctor.OK, []string{"may pull from " + sub}, nil)
	if !r.OK {
		t.Errorf("fails with the permission: %+v", r.Checks)
	}
}

// TestNoCredentials: Application Default Credentials that are not there: the fix says where
// they come from; the API is not tried without a token.
func TestNoCredentials(t *testing.T) {
	w := newWorld(t)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(w.dir, "missing.json"))
	r := runDoctor(t, w.load(t, cfgEdit{credentials: "{type: adc}"}))
	wantCheck(t, r, "google.credentials", doctor.Fail, []string{"missing.json"},
		[]string{"GOOGLE_APPLICATION_CREDENTIALS", "google.credentials.type serviceAccountKey"})
	wantCheck(t, r, "provisioning API customers/"+customer, doctor.Skip, []string{"needs a token"}, nil)
	if r.OK {
		t.Error("missing credentials pass")
	}
}
