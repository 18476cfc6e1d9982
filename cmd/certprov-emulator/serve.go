package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/certprov/certprov-adapter/internal/emulator"
)

// runServe serves the emulator until ctx is done (SIGINT/SIGTERM in main), then shuts down.
// It prints exactly one "emulator ready rest=http://… pubsub=…" line to stdout once both
// listeners accept connections; logs go to stderr.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8480", "host:port of the REST and control API")
	pubsubListen := fs.String("pubsub-listen", "127.0.0.1:8481", "host:port of the Pub/Sub (pstest) gRPC server")
	project := fs.String("project", emulator.DefaultProject, "Pub/Sub project ID")
	topic := fs.String("topic", emulator.DefaultTopic, "Pub/Sub topic ID the notifications go to")
	subscription := fs.String("subscription", emulator.DefaultSubscription, "Pub/Sub subscription ID created for the adapter")
	ackDeadline := fs.Duration("ack-deadline", emulator.DefaultAckDeadline, "ack deadline of the subscription (10s to 600s)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	keyPool := fs.Int("key-pool", 0, "device keys generated per key type and shared by the processes in turn (load tests); 0: a fresh key per process")
	latency := fs.Duration("latency", 0, "delay every REST API call by this long, as Google's round trip would (load tests)")
	dirRecords := fs.Bool("directory-records", false, "put an Admin SDK Directory record for the device and user of every process started")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "serve: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	if *keyPool < 0 || *latency < 0 {
		fmt.Fprintln(stderr, "serve: --key-pool and --latency must not be negative")
		return exitUsage
	}
	level, err := zapcore.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "serve: --log-level: %v\n", err)
		return exitUsage
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.Lock(zapcore.AddSync(stderr)), level))
	defer func() { _ = log.Sync() }()

	if err := serve(ctx, log, stdout, *listen, emulator.Options{
		Project: *project, Topic: *topic, Subscription: *subscription,
		PubSubListen: *pubsubListen, AckDeadline: *ackDeadline, Logger: log, KeyPool: *keyPool,
		DirectoryRecords: *dirRecords,
	}, *latency); err != nil {
		log.Error("serve failed", zap.Error(err))
		fmt.Fprintf(stderr, "serve: %v\n", err)
		return exitFail
	}
	return exitOK
}

func serve(ctx context.Context, log *zap.Logger, stdout io.Writer, listen string, opts emulator.Options, latency time.Duration) error {
	emu, err := emulator.New(ctx, opts)
	if err != nil {
		return err
	}
	emu.SetLatency(latency)
	defer func() {
		if err := emu.Close(); err != nil {
			log.Warn("close emulator", zap.Error(err))
		}
	}()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	srv := &http.Server{Handler: emu.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	fmt.Fprintf(stdout, "emulator ready rest=http://%s pubsub=%s\n", ln.Addr(), emu.PubSubAddr())
	log.Info("emulator ready", zap.String("rest", "http://"+ln.Addr().String()),
		zap.String("pubsub", emu.PubSubAddr()), zap.String("subscription", emu.SubscriptionName()))

	select {
	case err := <-served:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
