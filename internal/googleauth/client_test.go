package googleauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	va2 "google.golang.org/api/verifiedaccess/v2"
)

// TestClientOptions: a generated client built from Client.Options calls the endpoint given,
// through the wrapped transport, without a token when the credentials are none.
func TestClientOptions(t *testing.T) {
	var auth, agent atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization"))
		agent.Store(r.Header.Get("User-Agent"))
		_, _ = w.Write([]byte(`{"challenge":"AA=="}`))
	}))
	defer srv.Close()
	var wrapped atomic.Int32
	opts, ts, err := Client{Credentials: Credentials{Type: None}, Scopes: []string{"https://www.googleapis.com/auth/verifiedaccess"},
		Endpoint: srv.URL + "/", UserAgent: "certprov-adapter/v9.8.7", Wrap: func(next http.RoundTripper) http.RoundTripper {
			return roundTripper(func(r *http.Request) (*http.Response, error) { wrapped.Add(1); return next.RoundTrip(r) })
		}}.Options(context.Background())
	if err != nil || ts != nil {
		t.Fatalf("Options: token source %v, %v; want none and no error", ts, err)
	}
	svc, err := va2.NewService(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Challenge.Generate(&va2.Empty{}).Do(); err != nil {
		t.Fatalf("generate through the options: %v", err)
	}
	if a, _ := auth.Load().(string); a != "" {
		t.Errorf("Authorization %q sent with credentials type none", a)
	}
	// The product token first, then the generated client's own, which names the library.
	if a, _ := agent.Load().(string); !strings.HasPrefix(a, "certprov-adapter/v9.8.7 ") || !strings.Contains(a, "google-api-go-client/") {
		t.Errorf("User-Agent %q, want certprov-adapter/v9.8.7 before the client library's token", a)
	}
	if wrapped.Load() != 1 {
		t.Errorf("the wrapped transport saw %d requests, want 1", wrapped.Load())
	}
	if _, _, err := (Client{Credentials: Credentials{Type: "bogus"}}).Options(context.Background()); err == nil {
		t.Error("Options accepted an unknown credentials type")
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
