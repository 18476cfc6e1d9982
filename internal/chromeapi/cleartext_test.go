package chromeapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/oauth2"

	"github.com/certprov/certprov-adapter/internal/cleartext"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/googleauth"
)

// remoteHost is a name that is not loopback; the test's dialer sends it to a local fake.
const remoteHost = "chromemanagement.example.com"

// TestNewRefusesTokenInClear builds the client for a plain-http endpoint on a host that is not
// loopback, with real service-account credentials. Without the opt-out New fails before any token
// is minted or sent; with it, the token does go to that host in clear, and a warning says so.
func TestNewRefusesTokenInClear(t *testing.T) {
	var tokenRequests atomic.Int32
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokenRequests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok-123","token_type":"Bearer","expires_in":3600}`))
	}))
	defer tokenSrv.Close()
	api := &fakeAPI{handler: processJSON}
	apiSrv := httptest.NewServer(api)
	defer apiSrv.Close()
	var hosts []string
	// Every connection to remoteHost:80 lands on the fake API, so a request the client sends
	// there is observed rather than lost.
	dialer := &net.Dialer{}
	transport := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == remoteHost+":80" {
			addr = apiSrv.Listener.Addr().String()
		}
		return dialer.DialContext(ctx, network, addr)
	}}
	defer transport.CloseIdleConnections()
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: transport})
	api.handler = func(w http.ResponseWriter, r *http.Request) {
		hosts = append(hosts, r.Host)
		processJSON(w, r)
	}

	google := Options{
		Endpoint:    "http://" + remoteHost + "/",
		Credentials: googleauth.Credentials{Type: googleauth.ServiceAccountKey, File: writeServiceAccountKey(t, tokenSrv.URL)},
		Cleartext:   config.EndpointRule(config.SectionGoogle),
		RateLimit:   RateLimit{RequestsPerSecond: 1000, Burst: 10}, RequestTimeout: 2 * time.Second,
	}
	_, err := New(ctx, google)
	var e *cleartext.Exposure
	if !errors.As(err, &e) || e.Setting != "google.endpoint" || e.Host != remoteHost {
		t.Fatalf("New = %v, want the google.endpoint exposure", err)
	}
	if !strings.Contains(err.Error(), "google.insecureAllowCleartext") {
		t.Errorf("error %q does not name the opt-out", err)
	}
	if n := tokenRequests.Load(); n != 0 || len(api.auth) != 0 {
		t.Fatalf("refused client still made %d token and %d API requests", n, len(api.auth))
	}

	google.InsecureAllowCleartext = true
	core, logs := observer.New(zapcore.WarnLevel)
	google.Logger = zap.New(core)
	c, err := New(ctx, google)
	if err != nil {
		t.Fatalf("New with the opt-out: %v", err)
	}
	warnings := logs.FilterField(zap.String("setting", "google.endpoint")).All()
	if len(warnings) != 1 || warnings[0].ContextMap()["host"] != remoteHost {
		t.Fatalf("start-up warnings %+v, want one for google.endpoint", logs.All())
	}
	if _, err := c.Get(ctx, procName); err != nil {
		t.Fatalf("Get with the opt-out: %v", err)
	}
	if len(api.auth) != 1 || api.auth[0] != "Bearer tok-123" || hosts[0] != remoteHost {
		t.Fatalf("API saw Authorization %q for hosts %q", api.auth, hosts)
	}
}

// Loopback http with real credentials (a local proxy or sidecar) needs no opt-out and logs nothing.
func TestNewAcceptsLoopbackWithoutWarning(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	_, err := New(context.Background(), Options{
		Endpoint: "http://127.0.0.1:1/", Credentials: googleauth.Credentials{
			Type: googleauth.ServiceAccountKey, File: writeServiceAccountKey(t, "http://127.0.0.1:1/token")},
		Cleartext: config.EndpointRule(config.SectionGoogle),
		RateLimit: RateLimit{RequestsPerSecond: 1000, Burst: 10}, RequestTimeout: 2 * time.Second,
		Logger: zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	if logs.Len() != 0 {
		t.Errorf("warnings for a loopback endpoint: %+v", logs.All())
	}
}
