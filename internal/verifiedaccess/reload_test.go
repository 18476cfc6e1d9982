package verifiedaccess

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/tlstest"
)

// A reload serves a new TLS certificate to the next handshakes without a restart, and
// refuses a pair it cannot load (a missing file, a key of another certificate), keeping the one
// it serves and the profiles it has.
func TestReloadTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := tlstest.WriteServerCert(t, dir, 1)
	h := newHarness(t, harnessOptions{})
	profiles := h.srv.profiles.Load()
	va := noLimits()
	va.TLS = config.ServerTLS{CertFile: certFile, KeyFile: keyFile}
	srv, err := NewServer(ServerOptions{Config: va, Profiles: profiles, Google: h.srv.google})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenLoopback(t)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := ln.Addr().String()
	if got := tlstest.ServedSerial(t, addr); got != 1 {
		t.Fatalf("serving serial %d, want 1", got)
	}

	tlstest.WriteServerCert(t, dir, 2)
	r, err := srv.Prepare(va, profiles)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if got := tlstest.ServedSerial(t, addr); got != 1 {
		t.Fatalf("serving serial %d before Apply, want 1", got)
	}
	r.Apply()
	if got := tlstest.ServedSerial(t, addr); got != 2 {
		t.Fatalf("after the reload serving serial %d, want 2", got)
	}

	missing := va
	missing.TLS.CertFile = filepath.Join(dir, "missing.crt")
	other := t.TempDir()
	_, otherKey := tlstest.WriteServerCert(t, other, 3)
	mismatched := va
	mismatched.TLS.KeyFile = otherKey
	for name, c := range map[string]config.VerifiedAccess{"missing certificate file": missing, "key of another certificate": mismatched} {
		if _, err := srv.Prepare(c, map[string]*Profile{}); err == nil {
			t.Errorf("%s: Prepare accepted it", name)
		}
		if got := tlstest.ServedSerial(t, addr); got != 2 {
			t.Errorf("%s: serving serial %d after a refused reload, want 2", name, got)
		}
		if len(srv.profiles.Load()) != len(profiles) {
			t.Errorf("%s: the profiles changed on a refused reload", name)
		}
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	// The pair in memory keeps serving whatever happens to the files.
	if got := tlstest.ServedSerial(t, addr); got != 2 {
		t.Fatalf("serving serial %d once the files are gone", got)
	}
}
