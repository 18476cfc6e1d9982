// Package metricstest reads metric values for tests, from a registry or from a scrape: the
// value of a counter or gauge, or a histogram's sample count, summed over the series whose
// labels match.
package metricstest

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Gather gathers g, failing the test on an error, by family name.
func Gather(t testing.TB, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	out := make(map[string]*dto.MetricFamily, len(families))
	for _, f := range families {
		out[f.GetName()] = f
	}
	return out
}

// Parse parses a scrape in the Prometheus text format, as Prometheus would.
func Parse(t testing.TB, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return families
}

// Sum adds up the samples of family name whose labels include each name and value pair of
// labels.
func Sum(families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	total := 0.0
	for _, s := range samples(families, name) {
		if s.has(labels) {
			total += s.value
		}
	}
	return total
}

// Series lists the samples of family name by their labels, written name=value in label order
// and comma-separated.
func Series(families map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range samples(families, name) {
		out[s.key] = s.value
	}
	return out
}

// Labels returns the labels of each sample of family name.
func Labels(families map[string]*dto.MetricFamily, name string) []map[string]string {
	var out []map[string]string
	for _, s := range samples(families, name) {
		out = append(out, s.labels)
	}
	return out
}

type sample struct {
	labels map[string]string
	key    string
	value  float64
}

func (s sample) has(pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		if s.labels[pairs[i]] != pairs[i+1] {
			return false
		}
	}
	return true
}

func samples(families map[string]*dto.MetricFamily, name string) []sample {
	f := families[name]
	if f == nil {
		return nil
	}
	out := make([]sample, 0, len(f.GetMetric()))
	for _, m := range f.GetMetric() {
		s := sample{labels: map[string]string{}}
		parts := make([]string, 0, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			s.labels[l.GetName()] = l.GetValue()
			parts = append(parts, l.GetName()+"="+l.GetValue())
		}
		s.key = strings.Join(parts, ",")
		switch {
		case m.Counter != nil:
			s.value = m.GetCounter().GetValue()
		case m.Gauge != nil:
			s.value = m.GetGauge().GetValue()
		case m.Histogram != nil:
			s.value = float64(m.GetHistogram().GetSampleCount())
		}
		out = append(out, s)
	}
	return out
}
