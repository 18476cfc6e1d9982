// Package ops is the adapter's operations listener: one HTTP port (ops.listen) serving
// /metrics (Prometheus), /healthz (alive), /readyz (every readiness check, with its detail) and,
// when enabled, /debug/pprof/. More pages (the status page) are added with Register.
//
// Readiness checks run in the background, each on its own schedule and under its own timeout,
// and their results are cached: a probe answers from the cache at once and never waits on a
// slow CA or a Pub/Sub outage.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/metrics"
)

// PathPprof is where the Go profiler is served when Options.Pprof is set.
const PathPprof = "/debug/pprof/"

// Defaults of Options.
const (
	DefaultCheckInterval   = 15 * time.Second
	DefaultCheckTimeout    = 5 * time.Second
	DefaultShutdownTimeout = 5 * time.Second
)

// Timeouts of the listener. Writes may take long enough for a 30 s CPU profile.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 40 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	// startupRecheck is how soon a check that never passed runs again.
	startupRecheck = time.Second
	// scrapeTimeout bounds gathering the metrics for one scrape.
	scrapeTimeout = 10 * time.Second
)

// Check is one readiness check.
type Check struct {
	// Name identifies the check in /readyz and in certprov_readiness_check{check}; it is fixed
	// by the configuration (e.g. "ca_connection:corp-ca"), never by a request.
	Name string
	// Run reports whether the dependency is ready: nil, with an optional detail ("stream open",
	// "token valid until …"), or an error saying why not, which /readyz shows and which must
	// hold no secret. It must honour ctx, which ends after the check's timeout.
	Run func(ctx context.Context) (detail string, err error)
	// Timeout bounds one run (default Options.CheckTimeout).
	Timeout time.Duration
}

// CheckResult is the latest outcome of a check.
type CheckResult struct {
	Name   string `json:"name"`
	Ready  bool   `json:"ready"`
	Detail string `json:"detail"`
	// Checked is when the latest run ended; zero before the first did.
	Checked time.Time `json:"checked,omitzero"`
	// Since is when the check last changed between ready and not ready.
	Since time.Time `json:"since,omitzero"`
	// DurationSeconds is how long the latest run took.
	DurationSeconds float64 `json:"durationSeconds"`
}

// Options configure a Server.
type Options struct {
	// Listen is the host:port to listen on (ops.listen); port 0 picks a free one.
	Listen string
	// Pprof serves the Go profiler under PathPprof; without it that path is 404.
	Pprof bool
	// Gatherer is what /metrics exposes (the adapter's registry).
	Gatherer prometheus.Gatherer
	// Registerer receives the server's own metrics (readiness, and the scrape handler's
	// promhttp_metric_handler_*); nil exports none.
	Registerer prometheus.Registerer
	// Checks are the readiness checks, run every CheckInterval (SetChecks replaces them).
	Checks        []Check
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	// ShutdownTimeout bounds the wait for requests in progress when Serve stops.
	ShutdownTimeout time.Duration
	// Handlers are served besides the built-in paths, by path (see Register).
	Handlers map[string]http.Handler
	Logger   *zap.Logger
	// Now replaces the clock of the check results (tests).
	Now func() time.Time
}

// Server is the ops listener. Create it with New, bind it with Listen, serve it with Serve.
type Server struct {
	o   Options
	log *zap.Logger
	m   *metrics.Readiness
	mux *http.ServeMux

	mu       sync.Mutex
	paths    map[string]bool
	checks   []Check
	results  []CheckResult // in the order of checks
	gen      int           // counts SetChecks: a result of an older set is dropped
	running  context.Context
	stopGen  context.CancelFunc // ends the loops of the current set
	loops    sync.WaitGroup
	stopping string // why the server reports not ready whatever the checks say
	ln       net.Listener
}

// New builds the server; it listens on nothing yet.
func New(o Options) (*Server, error) {
	if o.Gatherer == nil {
		return nil, errors.New("ops server: no metrics gatherer")
	}
	if o.Listen == "" {
		return nil, errors.New("ops server: no listen address")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.CheckInterval, DefaultCheckInterval)
	def(&o.CheckTimeout, DefaultCheckTimeout)
	def(&o.ShutdownTimeout, DefaultShutdownTimeout)
	s := &Server{o: o, log: o.Logger, m: metrics.NewReadiness(o.Registerer), mux: http.NewServeMux(), paths: map[string]bool{}}
	s.m.Ready.Set(0)
	if err := s.SetChecks(o.Checks); err != nil {
		return nil, err
	}

	scrape := promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
		ErrorLog:            zap.NewStdLog(o.Logger.Named("metrics")),
		ErrorHandling:       promhttp.ContinueOnError, // a failing collector costs its series, not the scrape
		Registry:            o.Registerer,
		MaxRequestsInFlight: 4,
		Timeout:             scrapeTimeout,
	})
	if o.Registerer != nil {
		scrape = promhttp.InstrumentMetricHandler(o.Registerer, scrape)
	}
	s.handle(PathMetrics, scrape)
	s.handle(PathHealthz, http.HandlerFunc(healthz))
	s.handle(PathReadyz, http.HandlerFunc(s.readyz))
	if o.Pprof {
		s.handle(PathPprof, http.HandlerFunc(pprof.Index))
		s.handle(PathPprof+"cmdline", http.HandlerFunc(pprof.Cmdline))
		s.handle(PathPprof+"profile", http.HandlerFunc(pprof.Profile))
		s.handle(PathPprof+"symbol", http.HandlerFunc(pprof.Symbol))
		s.handle(PathPprof+"trace", http.HandlerFunc(pprof.Trace))
	}
	for path, h := range o.Handlers {
		if err := s.Register(path, h); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Server) handle(path string, h http.Handler) {
	s.paths[path] = true
	s.mux.Handle(path, h)
}

// Register serves h at path (an absolute path; one ending in "/" serves the subtree) besides
// the built-in paths, before or while the server runs. It refuses a path that is served
// already.
func (s *Server) Register(path string, h http.Handler) error {
	if !strings.HasPrefix(path, "/") || h == nil {
		return fmt.Errorf("ops server: cannot register %q: want an absolute path and a handler", path)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paths[path] || (path == PathPprof && !s.o.Pprof) {
		return fmt.Errorf("ops server: %s is served already", path)
	}
	s.handle(path, h)
	return nil
}

// Listen binds the listener, so that a port in use is an error at start-up, not later.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.o.Listen)
	if err != nil {
		return fmt.Errorf("ops listener: listen on %s: %w", s.o.Listen, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	return nil
}

// Addr is the bound address; nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close releases a listener that Serve never took over; after Serve it does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	ln := s.ln
	s.ln = nil
	s.mu.Unlock()
	if ln == nil {
		return nil
	}
	return ln.Close()
}

// Serve serves on the bound listener (binding it first if Listen was not called) and runs the
// readiness checks until ctx ends; it then stops the checks, lets requests in progress finish
// for up to ShutdownTimeout and returns nil, or the error that stopped it.
func (s *Server) Serve(ctx context.Context) error {
	if s.Addr() == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	s.log.Info("ops listener serving", zap.String("address", ln.Addr().String()),
		zap.Bool("pprof", s.o.Pprof), zap.Int("readiness_checks", len(s.Readiness())))

	cctx, stopChecks := context.WithCancel(ctx)
	s.mu.Lock()
	s.running = cctx
	s.startLocked()
	s.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("ops listener: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), s.o.ShutdownTimeout)
		if serr := srv.Shutdown(sctx); serr != nil {
			_ = srv.Close()
		}
		cancel()
		<-errc
	}
	s.mu.Lock()
	s.ln, s.running = nil, nil // SetChecks starts no loop from now on
	s.mu.Unlock()
	stopChecks()
	s.loops.Wait()
	return err
}

// SetChecks replaces the readiness checks, before or while the server runs (a configuration
// reload that adds or removes a CA connection). A check keeps its latest result under the
// same name until it runs again; checks no longer in checks are dropped from /readyz and the
// metrics.
func (s *Server) SetChecks(checks []Check) error {
	seen := map[string]bool{}
	for _, c := range checks {
		if c.Name == "" || c.Run == nil {
			return fmt.Errorf("ops server: check %q has no name or no function", c.Name)
		}
		if seen[c.Name] {
			return fmt.Errorf("ops server: two checks named %q", c.Name)
		}
		seen[c.Name] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	before := map[string]CheckResult{}
	for _, r := range s.results {
		before[r.Name] = r
		if !seen[r.Name] {
			s.m.Check.DeleteLabelValues(r.Name)
		}
	}
	s.checks, s.results = append([]Check(nil), checks...), make([]CheckResult, len(checks))
	for i, c := range checks {
		r, ok := before[c.Name]
		if !ok {
			r = CheckResult{Name: c.Name, Detail: "not checked yet"}
			s.m.Check.WithLabelValues(c.Name).Set(0)
		}
		s.results[i] = r
	}
	s.gen++
	if s.stopGen != nil {
		s.stopGen()
		s.stopGen = nil
	}
	if s.running != nil {
		s.startLocked()
	}
	s.m.Ready.Set(boolFloat(s.readyLocked()))
	return nil
}

// startLocked starts a loop for every check of the current set.
func (s *Server) startLocked() {
	ctx, cancel := context.WithCancel(s.running)
	s.stopGen = cancel
	gen := s.gen
	for i, c := range s.checks {
		s.loops.Go(func() { s.runCheck(ctx, gen, i, c) })
	}
}

// runCheck runs check i every interval until ctx ends. A run that outlasts its timeout is
// reported as not ready at once, and the next run starts only once it returned, so that a
// check that ignores its context cannot pile up; the server's stop waits for no check.
func (s *Server) runCheck(ctx context.Context, gen, i int, c Check) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = s.o.CheckTimeout
	}
	type outcome struct {
		detail string
		err    error
	}
	t := time.NewTimer(0)
	defer t.Stop()
	passed := false // at start-up a dependency is often a moment late: look again soon until it passes once
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		done := make(chan outcome, 1)
		rctx, cancel := context.WithTimeout(ctx, timeout)
		start := time.Now()
		go func() {
			detail, err := c.Run(rctx)
			done <- outcome{detail, err}
		}()
		select {
		case o := <-done:
			overran := rctx.Err() != nil
			cancel()
			if ctx.Err() != nil {
				return
			}
			if o.err != nil && overran {
				o.err = fmt.Errorf("no answer within %s: %w", timeout, o.err)
			}
			s.record(gen, i, o.detail, o.err, time.Since(start))
			passed = passed || o.err == nil
		case <-rctx.Done():
			cancel()
			if ctx.Err() != nil {
				return
			}
			s.record(gen, i, "", fmt.Errorf("no answer within %s", timeout), time.Since(start))
			select { // a late answer is not trusted, but the next run waits for it
			case <-done:
			case <-ctx.Done():
				return
			}
		}
		next := s.o.CheckInterval
		if !passed {
			next = min(next, startupRecheck)
		}
		t.Reset(next)
	}
}

// record stores a check's outcome and logs a change between ready and not ready.
func (s *Server) record(gen, i int, detail string, err error, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return // the set was replaced meanwhile
	}
	r := &s.results[i]
	ready := err == nil
	if !ready {
		detail = err.Error()
	}
	now := s.o.Now()
	first := r.Checked.IsZero()
	changed := first || r.Ready != ready
	if changed {
		r.Since = now
	}
	r.Ready, r.Detail, r.Checked, r.DurationSeconds = ready, detail, now, took.Seconds()
	s.m.Check.WithLabelValues(r.Name).Set(boolFloat(ready))
	s.m.Ready.Set(boolFloat(s.readyLocked()))
	switch {
	case changed && ready:
		s.log.Info("readiness check passes", zap.String("check", r.Name), zap.String("detail", detail))
	case first:
		// Starting up: a Pub/Sub stream takes a moment to open.
		s.log.Info("readiness check fails", zap.String("check", r.Name), zap.String("reason", detail))
	case changed:
		s.log.Warn("readiness check fails", zap.String("check", r.Name), zap.String("reason", detail))
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (s *Server) readyLocked() bool {
	if s.stopping != "" {
		return false
	}
	for _, r := range s.results {
		if !r.Ready {
			return false
		}
	}
	return true
}

// Readiness returns the latest result of every check, in the order they were set.
func (s *Server) Readiness() []CheckResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CheckResult(nil), s.results...)
}

// Ready reports whether every check passed its latest run and the server is not stopping.
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readyLocked()
}

// Stopping makes /readyz answer not ready at once, whatever the checks say, with reason: the
// adapter is shutting down and takes no new work, while it still serves /metrics and /healthz.
func (s *Server) Stopping(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = reason
	s.m.Ready.Set(0)
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// readyzBody is the JSON /readyz answers.
type readyzBody struct {
	Ready bool `json:"ready"`
	// Stopping says why the adapter is not ready whatever its checks say.
	Stopping string        `json:"stopping,omitempty"`
	Checks   []CheckResult `json:"checks"`
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	body := readyzBody{Ready: s.readyLocked(), Stopping: s.stopping, Checks: append([]CheckResult{}, s.results...)}
	s.mu.Unlock()
	status := http.StatusOK
	if !body.Ready {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}
