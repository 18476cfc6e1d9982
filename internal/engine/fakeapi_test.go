package engine

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/errclass"
	"github.com/certprov/certprov-adapter/internal/process"
)

// The engine's unit tests drive the state machine step by step against fakeAPI, a Certificate
// Provisioning API that keeps Google's view of each process and answers as the API contract
// (API) and docs/google-api.md say Google does, and a fake clock; issuance goes through the
// real built-in CA.

// fault is what a scripted call does instead of answering normally: it fails with err, having
// taken effect first when landed is set (its answer was lost on the way back).
type fault struct {
	err    error
	landed bool
}

// httpError is an API error as *chromeapi.Error classifies it: 429, 408 and 5xx retryable with
// the server's Retry-After, anything else permanent; a 404 matches process.ErrNotFound.
func httpError(method, name string, code int, retryAfter time.Duration) error {
	err := fmt.Errorf("%s %s: HTTP %d %s", method, name, code, http.StatusText(code))
	if code == http.StatusNotFound {
		err = fmt.Errorf("%w: %w", process.ErrNotFound, err)
	}
	class := errclass.Permanent
	if code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500 {
		class = errclass.Retryable
	}
	return errclass.Mark(err, class, retryAfter)
}

// googleProcess is Google's view of one process.
type googleProcess struct {
	p       *process.Process
	owner   string // the claiming instance
	device  crypto.Signer
	op      string // the signData operation
	signed  int    // signData requests that arrived
	mutated int    // uploads and setFailures that arrived
}

// fakeAPI implements API. Its methods are safe for concurrent use.
type fakeAPI struct {
	mu     sync.Mutex
	procs  map[string]*googleProcess
	faults map[string][]fault // by method, consumed in order
	calls  map[string]int     // by method
	nextOp int
}

var _ API = (*fakeAPI)(nil)

func newFakeAPI() *fakeAPI {
	return &fakeAPI{procs: map[string]*googleProcess{}, faults: map[string][]fault{}, calls: map[string]int{}}
}

var (
	deviceKeyOnce sync.Once
	deviceKey     *ecdsa.PrivateKey
)

// add starts a process on "Google" with a P-256 device key, for profile and CA connection.
func (a *fakeAPI) add(t *testing.T, id, profile, caConn string) string {
	t.Helper()
	deviceKeyOnce.Do(func() { deviceKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader) })
	spki, err := x509.MarshalPKIXPublicKey(deviceKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	name := process.Name("C0test", id)
	p := &process.Process{
		Name: name, Customer: "C0test", ID: id, ProfileID: "p", SPKI: spki,
		Device:           &process.Device{SerialNumber: "SN-" + id, DirectoryID: "dir-" + id},
		CAConnectionKind: process.CAConnectionGeneric, CAConnectionRef: caConn, ProfileRef: profile,
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.procs[name] = &googleProcess{p: p, device: deviceKey}
	return name
}

// failNext scripts the next calls of method.
func (a *fakeAPI) failNext(method string, faults ...fault) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.faults[method] = append(a.faults[method], faults...)
}

// call counts a call of method and returns its scripted fault, if any.
func (a *fakeAPI) call(method string) (fault, bool) {
	a.calls[method]++
	if q := a.faults[method]; len(q) > 0 {
		a.faults[method] = q[1:]
		return q[0], true
	}
	return fault{}, false
}

func (a *fakeAPI) count(method string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[method]
}

// view returns Google's view of name.
func (a *fakeAPI) view(name string) googleProcess {
	a.mu.Lock()
	defer a.mu.Unlock()
	g := *a.procs[name]
	g.p = g.p.Clone()
	return g
}

// edit changes Google's view of name, as a device or an administrator would.
func (a *fakeAPI) edit(name string, change func(p *process.Process)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	change(a.procs[name].p)
}

// sign has the device answer signData: it signs the bytes Google holds, or other bytes when
// tamper is set.
func (a *fakeAPI) sign(t *testing.T, name string, tamper bool) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.procs[name]
	data := g.p.SignData
	if tamper {
		data = append([]byte("not the request: "), data...)
	}
	digest := sha256.Sum256(data)
	sig, err := g.device.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	g.p.Signature = sig
}

func (a *fakeAPI) Get(_ context.Context, name string) (*process.Process, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if f, ok := a.call("get"); ok {
		return nil, f.err
	}
	g := a.procs[name]
	if g == nil {
		return nil, httpError("get", name, http.StatusNotFound, 0)
	}
	return g.p.Clone(), nil
}

func (a *fakeAPI) Claim(_ context.Context, name, instanceID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, faulty := a.call("claim")
	g := a.procs[name]
	if faulty && !f.landed {
		return f.err
	}
	if g.owner != "" && g.owner != instanceID {
		// Google answers 400 to a claim of a process another instance holds.
		return fmt.Errorf("%w: %w", process.ErrClaimedByOther, httpError("claim", name, http.StatusBadRequest, 0))
	}
	g.owner = instanceID
	return f.err
}

func (a *fakeAPI) SignData(_ context.Context, name string, data []byte, algorithm string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, faulty := a.call("signData")
	if faulty && !f.landed {
		return "", f.err
	}
	g := a.procs[name]
	if g.p.Finished() {
		return "", httpError("signData", name, http.StatusBadRequest, 0)
	}
	g.signed++
	if g.signed > 1 {
		// A second request makes the device fail the process (docs/google-api.md).
		g.p.FailureMessage = "the device received a second signing request"
	}
	a.nextOp++
	g.op = fmt.Sprintf("%s/operations/%d", name, a.nextOp)
	g.p.SignData, g.p.SignatureAlgorithm = append([]byte(nil), data...), algorithm
	return g.op, f.err
}

func (a *fakeAPI) GetOperation(_ context.Context, opName string) (*process.Operation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if f, ok := a.call("operations.get"); ok {
		return nil, f.err
	}
	for _, g := range a.procs {
		if g.op != opName {
			continue
		}
		switch {
		case g.p.FailureMessage != "":
			return &process.Operation{Done: true, Error: "code 9: " + g.p.FailureMessage}, nil
		case len(g.p.Signature) > 0:
			return &process.Operation{Done: true, Process: g.p.Clone()}, nil
		}
		return &process.Operation{}, nil
	}
	return nil, httpError("operations.get", opName, http.StatusNotFound, 0)
}

// mutate applies an upload or a setFailure: refused (400) once the process ended.
func (a *fakeAPI) mutate(method, name string, apply func(p *process.Process)) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, faulty := a.call(method)
	if faulty && !f.landed {
		return f.err
	}
	g := a.procs[name]
	if g.p.Finished() {
		return httpError(method, name, http.StatusBadRequest, 0)
	}
	g.mutated++
	apply(g.p)
	return f.err
}

func (a *fakeAPI) UploadCertificate(_ context.Context, name, certPEM string) error {
	return a.mutate("uploadCertificate", name, func(p *process.Process) { p.IssuedCertificate = certPEM })
}

func (a *fakeAPI) SetFailure(_ context.Context, name, message string) error {
	return a.mutate("setFailure", name, func(p *process.Process) { p.FailureMessage = message })
}

// scriptedCA is a CA connection in front of the built-in CA: Issue answers with the scripted
// errors first, hands every request to hook, and otherwise issues through the real CA. It is no
// ca.Recoverer, like a CA that cannot say what it issued.
type scriptedCA struct {
	inner ca.Connector
	mu    sync.Mutex
	errs  []error
	reqs  []ca.Request
	hook  func(*ca.Request)
}

func (c *scriptedCA) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, *req)
	hook := c.hook
	var err error
	if len(c.errs) > 0 {
		err, c.errs = c.errs[0], c.errs[1:]
	}
	c.mu.Unlock()
	if hook != nil {
		hook(req)
	}
	if err != nil {
		return nil, err
	}
	return c.inner.Issue(ctx, req)
}

func (c *scriptedCA) requests() []ca.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ca.Request(nil), c.reqs...)
}
