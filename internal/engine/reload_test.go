package engine_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/engine"
)

// gateCA holds every Issue until released, so that a test can act while a CA call is in flight.
type gateCA struct {
	inner   ca.Connector
	started chan struct{}
	release chan struct{}
}

func (g *gateCA) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	g.started <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ca.Retryable(ctx.Err(), 0)
	}
	return g.inner.Issue(ctx, req)
}

func chainsTo(c *x509.Certificate, roots *x509.CertPool) bool {
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// Reconfigure swaps profiles and CA connections between steps: a CA call in flight finishes
// with the connector it started with, and the steps after the swap use the new ones — a new
// profile works, and a connection of the same name is the new CA.
func TestReconfigureSwapsBetweenSteps(t *testing.T) {
	var gate *gateCA
	h := newHarness(t, harnessOptions{extraCAs: func(builtin *local.Connector) map[string]ca.Connector {
		gate = &gateCA{inner: builtin, started: make(chan struct{}, 1), release: make(chan struct{})}
		return map[string]ca.Connector{"gated": gate}
	}})
	inFlight := h.start(emulator.ProcessSpec{CARef: "gated"})
	select {
	case <-gate.started:
	case <-time.After(30 * time.Second):
		t.Fatal("the CA was never asked")
	}

	newCA, newRoots := h.NewLocalCA("new CA")
	tmpl, err := csr.Compile(testProfile("new-{{.Device.SerialNumber}}", "", 30*time.Second).Spec())
	if err != nil {
		t.Fatal(err)
	}
	conn := &engine.CAConnection{Connector: newCA, Timeout: 10 * time.Second}
	idle := h.Engine().Reconfigure(
		map[string]*engine.Profile{"device": {Template: tmpl, Validity: time.Hour, SignDeadline: 30 * time.Second},
			"added": {Template: tmpl, Validity: time.Hour, SignDeadline: 30 * time.Second}},
		map[string]*engine.CAConnection{"builtin": conn, "gated": conn})
	select {
	case <-idle:
		t.Fatal("the old set was reported unused while a CA call on it is in flight")
	default:
	}

	// New processes resolve against the new set, while the old call is still held.
	fresh := []string{h.start(emulator.ProcessSpec{}), h.start(emulator.ProcessSpec{ProfileRef: "added"})}
	snaps := h.waitFinished(fresh, 30*time.Second)
	for _, name := range fresh {
		leaf := h.MustIssue(snaps[name], newRoots)
		if chainsTo(leaf, h.Roots) || leaf.Subject.CommonName[:4] != "new-" {
			t.Errorf("%s: issued by the old CA or profile: %s", name, leaf.Subject)
		}
	}

	close(gate.release)
	old := h.waitFinished([]string{inFlight}, 30*time.Second)[inFlight]
	leaf := h.MustIssue(old, h.Roots) // the old connection's CA, through the old gated connector
	if chainsTo(leaf, newRoots) {
		t.Error("the in-flight call was switched to the new CA")
	}
	select {
	case <-idle:
	case <-time.After(10 * time.Second):
		t.Fatal("the old set was never reported unused")
	}
	if n := newCA.Issued(inFlight); n != 0 {
		t.Errorf("the new CA issued %d certificates for the in-flight process", n)
	}
}
