// Package metrics declares every Prometheus metric the adapter exports, in one place. Each
// component's metrics are a struct of typed vectors with named labels (Engine, Intake,
// GoogleAPI, CA, Journal, VerifiedAccess, Readiness); the component builds its struct from the
// prometheus.Registerer its options carry, and docs/metrics.md lists every metric.
//
// Label values are bounded: names the configuration defines (profiles, CA connections, checks),
// fixed sets (states, outcomes, methods, codes), never a process name, a customer id a request
// brought or anything else a client controls.
package metrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric of the adapter.
const Namespace = "certprov"

// register registers c on reg and returns it; when an equal collector is registered already it
// returns that one instead, so that a component built twice on one registry (an engine
// restarted in a test) and components sharing a group (the engine and the enrollment server
// both count CA calls) count into the same series. A nil reg registers nothing: the metrics
// are counted and never exported.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing
		}
	}
	// Two declarations of one name with different labels or help: a mistake in this package,
	// which its tests catch.
	panic(fmt.Sprintf("metrics: %v", err))
}

func counter(reg prometheus.Registerer, name, help string) prometheus.Counter {
	return register(reg, prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}))
}

func counterVec(reg prometheus.Registerer, name, help string, labels ...string) *prometheus.CounterVec {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels))
}

func gauge(reg prometheus.Registerer, name, help string) prometheus.Gauge {
	return register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}))
}

func gaugeVec(reg prometheus.Registerer, name, help string, labels ...string) *prometheus.GaugeVec {
	return register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels))
}

func histogramVec(reg prometheus.Registerer, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}, labels))
}

// Buckets, in seconds.
var (
	// stepBuckets span a claim (milliseconds) to a device that signs a day later.
	stepBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400}
	// callBuckets span one call to Google or a CA, up to its timeout.
	callBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
	// waitBuckets span a wait for the Google API rate limit, from none to a long queue.
	waitBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
)

// Build identifies the running binary in certprov_build_info.
type Build struct {
	Version, Commit, GoVersion string
}

// RegisterProcess registers what describes the process as a whole: certprov_build_info, and
// the Go runtime and process collectors (go_*, process_*).
func RegisterProcess(reg prometheus.Registerer, b Build) {
	info := gaugeVec(reg, "build_info", "The running build: always 1, with its version, commit and Go version as labels.",
		"version", "commit", "go_version")
	info.WithLabelValues(b.Version, b.Commit, b.GoVersion).Set(1)
	register(reg, collectors.NewGoCollector())
	register(reg, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}
