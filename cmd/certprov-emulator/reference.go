package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/loadtest/reference"
)

// runReference runs the minimal reference adapter (internal/loadtest/reference) against a
// running emulator until ctx is done. It writes its CA certificate to --ca-out, serves its
// counters and goroutine count on --metrics-listen in the Prometheus text format, and prints one
// "reference ready metrics=http://…" line once it receives.
func runReference(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reference", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := fs.String("emulator", "http://127.0.0.1:8480", "base URL of the emulator's REST API")
	pubsubAddr := fs.String("pubsub", "127.0.0.1:8481", "host:port of the emulator's Pub/Sub")
	project := fs.String("project", emulator.DefaultProject, "Pub/Sub project ID")
	subscription := fs.String("subscription", emulator.DefaultSubscription, "Pub/Sub subscription ID")
	instance := fs.String("instance-id", "reference-1", "callerInstanceId of the claims")
	streams := fs.Int("streams", config.DefaultStreams, "StreamingPull streams (as pubsub.streams)")
	outstanding := fs.Int("max-outstanding-messages", config.DefaultMaxOutstandingMessages, "messages in hand at once (as pubsub.maxOutstandingMessages)")
	poll := fs.Duration("poll-interval", config.DefaultPollInterval, "first wait before polling the signData operation (as engine.pollInterval)")
	maxPoll := fs.Duration("max-poll-interval", config.DefaultMaxPollInterval, "longest wait between polls (as engine.maxPollInterval)")
	caOut := fs.String("ca-out", "", "file to write the CA certificate to (required)")
	metricsListen := fs.String("metrics-listen", "127.0.0.1:0", "host:port of the /metrics endpoint")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	level, err := zapcore.ParseLevel(*logLevel)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "reference: --log-level: %v\n", err)
		return exitUsage
	case fs.NArg() != 0:
		fmt.Fprintf(stderr, "reference: unexpected arguments %q\n", fs.Args())
		return exitUsage
	case *caOut == "":
		fmt.Fprintln(stderr, "reference: --ca-out is required")
		return exitUsage
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.Lock(zapcore.AddSync(stderr)), level))
	defer func() { _ = log.Sync() }()

	d, err := reference.New(ctx, reference.Options{
		APIEndpoint: strings.TrimRight(*api, "/") + "/", PubSubAddr: *pubsubAddr, Project: *project,
		Subscription: *subscription, InstanceID: *instance, Streams: *streams, MaxOutstandingMessages: *outstanding,
		PollInterval: *poll, MaxPollInterval: *maxPoll, Logger: log,
	})
	if err != nil {
		fmt.Fprintf(stderr, "reference: %v\n", err)
		return exitUsage
	}
	if err := os.WriteFile(*caOut, d.CACertificatePEM(), 0o600); err != nil {
		fmt.Fprintf(stderr, "reference: --ca-out: %v\n", err)
		return exitUsage
	}
	ln, err := net.Listen("tcp", *metricsListen)
	if err != nil {
		fmt.Fprintf(stderr, "reference: --metrics-listen: %v\n", err)
		return exitUsage
	}
	srv := &http.Server{Handler: referenceMetrics(d), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()

	fmt.Fprintf(stdout, "reference ready metrics=http://%s\n", ln.Addr())
	if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "reference: %v\n", err)
		return exitFail
	}
	return exitOK
}

// referenceMetrics serves what the load harness samples, with the names the adapter's metrics
// use for the same things (go_goroutines, as the Go collector names it).
func referenceMetrics(d *reference.Driver) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		st := d.Stats()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		fmt.Fprintf(w, "# TYPE go_goroutines gauge\ngo_goroutines %d\n", runtime.NumGoroutine())
		fmt.Fprintf(w, "# TYPE reference_processes_admitted_total counter\nreference_processes_admitted_total %d\n", st.Admitted)
		fmt.Fprintf(w, "# TYPE reference_processes_finished_total counter\nreference_processes_finished_total{outcome=\"issued\"} %d\n", st.Issued)
		fmt.Fprintf(w, "reference_processes_finished_total{outcome=\"failed\"} %d\n", st.Failed)
		fmt.Fprintf(w, "# TYPE reference_processes_in_flight gauge\nreference_processes_in_flight %d\n", st.InFlight)
	})
	return mux
}
