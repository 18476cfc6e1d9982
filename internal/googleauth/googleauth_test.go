package googleauth

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// TestHTTPClientReusesConnections: calls made in parallel over HTTP/1.1, as the adapter's
// workers and admissions make them to an emulator, reuse their connections instead of dialling
// one per call, as a transport keeping two idle connections per host would.
func TestHTTPClientReusesConnections(t *testing.T) {
	var dials atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "{}")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	client := HTTPClient(context.Background(), nil, nil, nil)
	const parallel, rounds = 16, 20
	for range rounds {
		var wg sync.WaitGroup
		for range parallel {
			wg.Go(func() {
				resp, err := client.Get(srv.URL)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			})
		}
		wg.Wait()
	}
	// Each round needs at most `parallel` connections; kept idle, the first round's serve all.
	if n := dials.Load(); n > 2*parallel {
		t.Errorf("%d connections for %d calls, %d at a time: idle connections are not kept", n, parallel*rounds, parallel)
	}
}
