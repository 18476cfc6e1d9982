package ops

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/metrics"
)

// serve starts a server with o on a free loopback port until the test ends and returns its
// base URL.
func serve(t *testing.T, o Options) (*Server, string) {
	t.Helper()
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Gatherer == nil {
		reg := prometheus.NewRegistry()
		o.Gatherer, o.Registerer = reg, reg
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, "http://" + s.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func readyz(t *testing.T, base string) (int, readyzBody) {
	t.Helper()
	code, body := get(t, base+PathReadyz)
	var out readyzBody
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, out
}

// waitReady polls /readyz until it answers want.
func waitReady(t *testing.T, base string, want int) readyzBody {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := readyz(t, base)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d (%+v), want %d", code, body, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "certprov_test_total", Help: "t"})
	reg.MustRegister(c)
	c.Add(3)
	_, base := serve(t, Options{Gatherer: reg, Registerer: reg})
	if code, body := get(t, base+PathHealthz); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	code, body := get(t, base+PathMetrics)
	if code != 200 || !strings.Contains(body, "certprov_test_total 3") {
		t.Fatalf("/metrics = %d:\n%s", code, body)
	}
	// Without checks the adapter has nothing to wait for.
	if body := waitReady(t, base, http.StatusOK); !body.Ready || len(body.Checks) != 0 {
		t.Errorf("/readyz %+v", body)
	}
}

// TestReadinessFollowsChecks: /readyz is 503 until every check passed, lists each check with its
// detail, turns 503 when one fails and 200 again when it recovers; the readiness metrics follow.
func TestReadinessFollowsChecks(t *testing.T) {
	var down atomic.Bool
	reg := prometheus.NewRegistry()
	s, base := serve(t, Options{
		Gatherer: reg, Registerer: reg, CheckInterval: 10 * time.Millisecond,
		Checks: []Check{
			{Name: "static", Run: func(context.Context) (string, error) { return "fine", nil }},
			{Name: "flaky", Run: func(context.Context) (string, error) {
				if down.Load() {
					return "", errors.New("connection refused")
				}
				return "reachable", nil
			}},
		},
	})
	m := metrics.NewReadiness(reg)
	body := waitReady(t, base, http.StatusOK)
	if len(body.Checks) != 2 || body.Checks[0].Name != "static" || body.Checks[0].Detail != "fine" || body.Checks[1].Detail != "reachable" {
		t.Fatalf("checks %+v", body.Checks)
	}
	for _, c := range body.Checks {
		if !c.Ready || c.Checked.IsZero() || c.Since.IsZero() {
			t.Errorf("check %+v", c)
		}
	}
	if testutil.ToFloat64(m.Ready) != 1 || testutil.ToFloat64(m.Check.WithLabelValues("flaky")) != 1 {
		t.Errorf("ready metrics %v %v", testutil.ToFloat64(m.Ready), testutil.ToFloat64(m.Check.WithLabelValues("flaky")))
	}

	down.Store(true)
	body = waitReady(t, base, http.StatusServiceUnavailable)
	if body.Ready || body.Checks[1].Ready || body.Checks[1].Detail != "connection refused" || !body.Checks[0].Ready {
		t.Fatalf("after the failure: %+v", body)
	}
	if testutil.ToFloat64(m.Ready) != 0 || testutil.ToFloat64(m.Check.WithLabelValues("flaky")) != 0 || testutil.ToFloat64(m.Check.WithLabelValues("static")) != 1 {
		t.Errorf("ready metrics after the failure")
	}
	if got := s.Readiness(); len(got) != 2 || got[1].Ready || s.Ready() {
		t.Errorf("Readiness() %+v, Ready() %v", got, s.Ready())
	}

	down.Store(false)
	waitReady(t, base, http.StatusOK)
	s.Stopping("the adapter is shutting down")
	if code, body := readyz(t, base); code != http.StatusServiceUnavailable || body.Stopping == "" || !body.Checks[1].Ready {
		t.Fatalf("stopping: %d %+v", code, body)
	}
}

// TestSlowCheckDoesNotBlock: a check that never answers is reported not ready after its
// timeout while /readyz answers at once, and it is not started again while it hangs.
func TestSlowCheckDoesNotBlock(t *testing.T) {
	var runs atomic.Int32
	release := make(chan struct{})
	defer close(release)
	_, base := serve(t, Options{
		CheckInterval: 5 * time.Millisecond,
		Checks: []Check{{Name: "stuck", Timeout: 50 * time.Millisecond, Run: func(ctx context.Context) (string, error) {
			runs.Add(1)
			<-release // ignores its context
			return "late", nil
		}}},
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := readyz(t, base)
		if code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz %d with a check that never answers", code)
		}
		if strings.Contains(body.Checks[0].Detail, "no answer within 50ms") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check still %+v", body.Checks[0])
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the hanging check was started %d times", n)
	}
}

func TestPprof(t *testing.T) {
	_, off := serve(t, Options{})
	if code, _ := get(t, off+PathPprof); code != http.StatusNotFound {
		t.Errorf("pprof off: %s = %d, want 404", PathPprof, code)
	}
	if code, _ := get(t, off+PathPprof+"goroutine?debug=1"); code != http.StatusNotFound {
		t.Errorf("pprof off: goroutine profile = %d, want 404", code)
	}
	_, on := serve(t, Options{Pprof: true})
	if code, body := get(t, on+PathPprof); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof on: %s = %d", PathPprof, code)
	}
	if code, body := get(t, on+PathPprof+"goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("pprof on: goroutine profile = %d:\n%.200s", code, body)
	}
}

func TestRegister(t *testing.T) {
	s, base := serve(t, Options{Handlers: map[string]http.Handler{
		"/extra": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("extra")) }),
	}})
	if code, body := get(t, base+"/extra"); code != 200 || body != "extra" {
		t.Errorf("/extra = %d %q", code, body)
	}
	status := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("status page")) })
	if err := s.Register(PathStatus, status); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, base+PathStatus); code != 200 || body != "status page" {
		t.Errorf("%s = %d %q", PathStatus, code, body)
	}
	for _, p := range []string{PathStatus, PathMetrics, PathReadyz, PathPprof, "relative"} {
		if err := s.Register(p, status); err == nil {
			t.Errorf("Register(%q) accepted", p)
		}
	}
}

func TestListenFailureIsAnError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, err := New(Options{Listen: busy.Addr().String(), Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("Listen on a busy port: %v", err)
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Fatal("Serve on a busy port returned nil")
	}
}

// TestServeStopsBounded: a request still running when the server stops is cut after
// ShutdownTimeout, and Serve returns.
func TestServeStopsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := New(Options{Listen: "127.0.0.1:0", Gatherer: reg, ShutdownTimeout: 50 * time.Millisecond,
		Handlers: map[string]http.Handler{"/hang": http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	started := make(chan struct{})
	go func() {
		close(started)
		resp, err := http.Get("http://" + s.Addr().String() + "/hang")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	waitReady(t, "http://"+s.Addr().String(), http.StatusOK)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its shutdown timeout")
	}
}

// TestSetChecks: replacing the checks while serving keeps the result of a check that stays,
// starts the new ones and drops the removed ones from /readyz and the metrics.
func TestSetChecks(t *testing.T) {
	reg := prometheus.NewRegistry()
	ok := func(detail string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) { return detail, nil }
	}
	s, base := serve(t, Options{Gatherer: reg, Registerer: reg, CheckInterval: 10 * time.Millisecond,
		Checks: []Check{{Name: "kept", Run: ok("kept")}, {Name: "removed", Run: ok("removed")}}})
	waitReady(t, base, http.StatusOK)
	if err := s.SetChecks([]Check{{Name: "kept", Run: ok("kept")}, {Name: "added", Run: func(context.Context) (string, error) {
		return "", errors.New("not yet")
	}}}); err != nil {
		t.Fatal(err)
	}
	body := waitReady(t, base, http.StatusServiceUnavailable)
	for body.Checks[1].Detail != "not yet" {
		_, body = readyz(t, base)
	}
	if len(body.Checks) != 2 || body.Checks[0].Name != "kept" || !body.Checks[0].Ready || body.Checks[1].Name != "added" {
		t.Fatalf("checks after SetChecks: %+v", body.Checks)
	}
	m := metrics.NewReadiness(reg)
	if n := testutil.CollectAndCount(m.Check); n != 2 {
		t.Errorf("%d readiness_check series, want 2 (kept, added)", n)
	}
	if err := s.SetChecks([]Check{{Name: "dup", Run: ok("")}, {Name: "dup", Run: ok("")}}); err == nil {
		t.Error("two checks of one name accepted")
	}
}

// TestDefaultListenMatchesPort: the configuration's default ops.listen uses the port the
// deployment manifests probe (DefaultPort).
func TestDefaultListenMatchesPort(t *testing.T) {
	if want := "127.0.0.1:" + strconv.Itoa(DefaultPort); config.DefaultOpsListen != want {
		t.Fatalf("config.DefaultOpsListen = %q, want %q", config.DefaultOpsListen, want)
	}
}

// TestStartupRecheck: a check that has not passed yet runs again soon, not a whole interval
// later, so that a Pub/Sub stream opening a moment after the start is seen at once.
func TestStartupRecheck(t *testing.T) {
	var runs atomic.Int32
	_, base := serve(t, Options{CheckInterval: time.Hour, Checks: []Check{{Name: "late", Run: func(context.Context) (string, error) {
		if runs.Add(1) == 1 {
			return "", errors.New("not yet")
		}
		return "up", nil
	}}}})
	waitReady(t, base, http.StatusOK) // within the poll's deadline, far below the hour
	if n := runs.Load(); n != 2 {
		t.Errorf("%d runs, want 2 (the first failed, the second passed)", n)
	}
}
