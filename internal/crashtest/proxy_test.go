package crashtest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scepProxy stands between the adapter and scepserver. The server makes each enrolment answer
// (operation PKIOperation) on a context of its own, so the CA issues whatever the adapter does;
// hold then keeps the answer back — the CA has signed, the adapter does not know yet, the moment
// a stop or a crash must not lose — and reports whether to send it (false: the adapter gave up,
// the certificate stays issued). Everything else passes straight through.
type scepProxy struct {
	URL      string
	upstream string
	hold     func(r *http.Request) bool
	// enrolling counts enrolments between their arrival and the end of their answer: CA calls in
	// flight, as the adapter sees them.
	enrolling atomic.Int64
}

func newSCEPProxy(t *testing.T, upstream string, hold func(r *http.Request) bool) *scepProxy {
	t.Helper()
	p := &scepProxy{upstream: upstream, hold: hold}
	srv := httptest.NewServer(p)
	p.URL = srv.URL + "/scep"
	t.Cleanup(srv.Close)
	return p
}

func (p *scepProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	enrol := r.URL.Query().Get("operation") == "PKIOperation"
	if enrol {
		p.enrolling.Add(1)
		defer p.enrolling.Add(-1)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := http.NewRequestWithContext(context.Background(), r.Method, p.upstream+"?"+r.URL.RawQuery, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	answer, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if enrol && !p.hold(r) {
		return
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

// waitEnrolling waits until a CA call is in flight, and reports whether one was within timeout.
func (p *scepProxy) waitEnrolling(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for p.enrolling.Load() == 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// newDelayProxy delays every enrolment answer by d: a slow CA.
func newDelayProxy(t *testing.T, upstream string, d time.Duration) *scepProxy {
	return newSCEPProxy(t, upstream, func(r *http.Request) bool {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
			return true
		case <-r.Context().Done():
			return false
		}
	})
}

// holdingProxy holds every enrolment answer until releaseAll.
type holdingProxy struct {
	*scepProxy
	held    chan struct{} // one value per answer held
	release chan struct{} // closed to let every held answer go
	once    sync.Once
}

func newHoldingProxy(t *testing.T, upstream string) *holdingProxy {
	t.Helper()
	p := &holdingProxy{held: make(chan struct{}, 16), release: make(chan struct{})}
	p.scepProxy = newSCEPProxy(t, upstream, func(r *http.Request) bool {
		p.held <- struct{}{}
		select {
		case <-p.release:
			return true
		case <-r.Context().Done():
			return false
		}
	})
	t.Cleanup(p.releaseAll) // runs before the server closes: no handler stays blocked
	return p
}

func (p *holdingProxy) waitHeld(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.held:
	case <-time.After(timeout):
		t.Fatalf("no enrolment reached the CA within %s", timeout)
	}
}

func (p *holdingProxy) releaseAll() { p.once.Do(func() { close(p.release) }) }

// depotCounts counts the certificates in a scepserver depot by the SubjectPublicKeyInfo they
// carry (the map key is the DER, as a string): the CA's issuance log.
func depotCounts(t *testing.T, depot string) map[string]int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(depot, "*.pem"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(b)
		if block == nil || block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !c.IsCA {
			out[string(c.RawSubjectPublicKeyInfo)]++
		}
	}
	return out
}
