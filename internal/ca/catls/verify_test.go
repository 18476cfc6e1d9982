package catls

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestNotVerified: a server whose certificate the client does not trust is told apart from one
// that answers or cannot be reached, through the *url.Error the HTTP client wraps it in.
func TestNotVerified(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()

	_, err := http.Get(srv.URL) // the default client does not trust httptest's certificate
	var uerr *url.Error
	if !errors.As(err, &uerr) || !NotVerified(err) || !NotVerified(Cause(err)) {
		t.Fatalf("untrusted server: %v, NotVerified %v", err, NotVerified(err))
	}
	if errors.As(Cause(err), &uerr) {
		t.Errorf("Cause(%v) still a *url.Error", err)
	}

	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	_, err = srv.Client().Do(req)
	if NotVerified(err) || !errors.Is(Cause(err), context.Canceled) {
		t.Errorf("cancelled call: %v, NotVerified %v", err, NotVerified(err))
	}
}
