package metrics

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// The alert rules and the dashboard shipped for operators (docs/operator-guide.md).
const (
	alertRulesFile = "../../deploy/prometheus/alerts.yaml"
	dashboardFile  = "../../deploy/grafana/certprov-adapter.json"
)

// declaredMetric is what a query may say of a metric: its labels, and for a histogram its
// _bucket, _sum and _count series.
type declaredMetric struct {
	labels    map[string]bool
	histogram bool
}

// cataloguing is a Registerer that records every metric registered on it, with its kind.
type cataloguing map[string]declaredMetric

func (c cataloguing) Register(col prometheus.Collector) error {
	histogram := false
	switch col.(type) {
	case *prometheus.HistogramVec, prometheus.Histogram:
		histogram = true
	}
	ch := make(chan *prometheus.Desc, 512)
	col.Describe(ch)
	close(ch)
	for d := range ch {
		m := descPattern.FindStringSubmatch(d.String())
		if m == nil {
			continue
		}
		labels := map[string]bool{}
		for l := range strings.SplitSeq(m[2], ",") {
			if l != "" {
				labels[l] = true
			}
		}
		// Constant labels (the Go collector's) are labels too.
		if cl := constLabels.FindStringSubmatch(d.String()); cl != nil {
			for kv := range strings.SplitSeq(cl[1], ",") {
				if k, _, ok := strings.Cut(kv, "="); ok {
					labels[k] = true
				}
			}
		}
		c[m[1]] = declaredMetric{labels: labels, histogram: histogram}
	}
	return nil
}

func (c cataloguing) MustRegister(cs ...prometheus.Collector) {
	for _, col := range cs {
		_ = c.Register(col)
	}
}

func (c cataloguing) Unregister(prometheus.Collector) bool { return false }

// targetLabels are attached by Prometheus to every series it scrapes.
var targetLabels = map[string]bool{"instance": true, "job": true}

var (
	constLabels   = regexp.MustCompile(`constLabels: \{([^}]*)\}`)
	stringLiteral = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	metricName    = regexp.MustCompile(`\b(?:certprov|go|process)_[a-z0-9_]+\b`)
	selector      = regexp.MustCompile(`\b((?:certprov|go|process)_[a-z0-9_]+)\s*\{([^}]*)\}`)
	matcher       = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*$`)
	grouping      = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	braces        = regexp.MustCompile(`\{[^}]*\}`)
)

// queryProblems returns what is wrong with one PromQL expression: an unknown metric (or a
// histogram suffix of one that is not a histogram), a selector or grouping label the metrics
// it names do not have, unbalanced brackets.
func queryProblems(cat cataloguing, expr string) []string {
	var problems []string
	bare := stringLiteral.ReplaceAllString(expr, `""`)
	resolve := func(name string) (declaredMetric, bool) {
		if m, ok := cat[name]; ok {
			return m, true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				if m, ok := cat[base]; ok && m.histogram {
					if suffix == "_bucket" {
						m = declaredMetric{labels: mapWith(m.labels, "le"), histogram: true}
					}
					return m, true
				}
			}
		}
		return declaredMetric{}, false
	}
	used := map[string]bool{}
	for _, name := range metricNames(expr) {
		m, ok := resolve(name)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: no such metric", name))
			continue
		}
		for l := range m.labels {
			used[l] = true
		}
	}
	for _, s := range selector.FindAllStringSubmatch(bare, -1) {
		m, ok := resolve(s[1])
		if !ok {
			continue
		}
		for part := range strings.SplitSeq(s[2], ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			lm := matcher.FindStringSubmatch(part)
			if lm == nil {
				problems = append(problems, fmt.Sprintf("%s{%s}: cannot read the matcher %q", s[1], s[2], part))
				continue
			}
			if !m.labels[lm[1]] && !targetLabels[lm[1]] {
				problems = append(problems, fmt.Sprintf("%s has no label %s", s[1], lm[1]))
			}
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(bare, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !used[l] && !targetLabels[l] {
				problems = append(problems, fmt.Sprintf("grouping by %s, which no metric of the query has", l))
			}
		}
	}
	for _, pair := range []string{"()", "{}", "[]"} {
		if strings.Count(bare, pair[:1]) != strings.Count(bare, pair[1:]) {
			problems = append(problems, fmt.Sprintf("unbalanced %s", pair))
		}
	}
	return problems
}

// metricNames returns the metric names expr mentions: outside string literals, groupings and
// braces, where label names (go_version) stand.
func metricNames(expr string) []string {
	bare := stringLiteral.ReplaceAllString(expr, `""`)
	return metricName.FindAllString(braces.ReplaceAllString(grouping.ReplaceAllString(bare, "by ()"), "{}"), -1)
}

func mapWith(m map[string]bool, key string) map[string]bool {
	out := map[string]bool{key: true}
	for k := range m {
		out[k] = true
	}
	return out
}

func catalogue() cataloguing {
	cat := cataloguing{}
	every(cat)
	return cat
}

// TestQueryCheckerFinds: the checker the two tests below rely on reports a renamed metric, a
// dropped label, a histogram suffix on a counter, a grouping label no metric has and a
// missing bracket, and passes a correct query.
func TestQueryCheckerFinds(t *testing.T) {
	cat := catalogue()
	for expr, want := range map[string]string{
		`sum by (profile) (rate(certprov_processes_finished_total{outcome="issued"}[5m]))`:       "",
		`histogram_quantile(0.9, sum by (le) (rate(certprov_step_duration_seconds_bucket[5m])))`: "",
		`rate(certprov_processes_finish_total[5m])`:                                              "no such metric",
		`certprov_ready{check="pubsub"}`:                                                         "has no label check",
		`rate(certprov_admissions_total_bucket[5m])`:                                             "no such metric",
		`sum by (customer) (certprov_journal_records)`:                                           "grouping by customer",
		`sum(rate(certprov_retries_total[5m])`:                                                   "unbalanced ()",
		`certprov_readiness_check{check="a}b"} == 0`:                                             "",
	} {
		got := strings.Join(queryProblems(cat, expr), "; ")
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%s: problems %q, want %q", expr, got, want)
		}
	}
}

// TestAlertRulesReferenceDeclaredMetrics: every alert in deploy/prometheus/alerts.yaml queries
// metrics internal/metrics declares, with labels they have, and carries a severity and a
// summary.
func TestAlertRulesReferenceDeclaredMetrics(t *testing.T) {
	b, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("%s: %v", alertRulesFile, err)
	}
	cat := catalogue()
	var names []string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("group %s: a rule without alert name or expression: %+v", g.Name, r)
			}
			if !slices.Contains([]string{"info", "warning", "critical"}, r.Labels["severity"]) || r.Annotations["summary"] == "" {
				t.Errorf("alert %s: severity %q, summary %q", r.Alert, r.Labels["severity"], r.Annotations["summary"])
			}
			for _, p := range queryProblems(cat, r.Expr) {
				t.Errorf("alert %s: %s", r.Alert, p)
			}
		}
	}
	slices.Sort(names)
	if len(slices.Compact(names)) != len(names) || len(names) < 10 {
		t.Errorf("alerts %v: want at least 10, each named once", names)
	}
	// What the operator guide promises to alert on.
	for _, want := range []string{"certprov_processes_finished_total", "certprov_journal_records", "certprov_ca_requests_total",
		"certprov_certificate_expiry_timestamp_seconds", "certprov_ready"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("no alert on %s", want)
		}
	}
}

// TestDashboardReferencesDeclaredMetrics: every query of the Grafana dashboard (panel targets
// and template variables) names metrics internal/metrics declares, with labels they have; panel
// ids are unique.
func TestDashboardReferencesDeclaredMetrics(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var queries []string
	ids := map[float64]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					queries = append(queries, s)
				}
				walk(x)
			}
			if id, ok := v["id"].(float64); ok && v["gridPos"] != nil {
				if ids[id] {
					t.Errorf("two panels with id %v", id)
				}
				ids[id] = true
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	cat := catalogue()
	referenced := map[string]bool{}
	for _, q := range queries {
		for _, p := range queryProblems(cat, q) {
			t.Errorf("dashboard query %q: %s", q, p)
		}
		for _, n := range metricNames(q) {
			referenced[n] = true
		}
	}
	if len(queries) < 20 || len(referenced) < 20 {
		t.Errorf("%d queries naming %d metrics: the dashboard was not read", len(queries), len(referenced))
	}
}

// TestOperatorGuideNamesEveryMetric: docs/operator-guide.md names every certprov_ metric
// internal/metrics declares, and no other.
func TestOperatorGuideNamesEveryMetric(t *testing.T) {
	b, err := os.ReadFile("../../docs/operator-guide.md")
	if err != nil {
		t.Fatal(err)
	}
	cat := catalogue()
	named := map[string]bool{}
	for _, n := range metricNames(string(b)) {
		named[n] = true
		if _, ok := cat[n]; !ok && strings.HasPrefix(n, Namespace+"_") {
			t.Errorf("docs/operator-guide.md names %s, which no code declares", n)
		}
	}
	n := 0
	for name := range cat {
		if strings.HasPrefix(name, Namespace+"_") {
			n++
			if !named[name] {
				t.Errorf("docs/operator-guide.md does not name %s", name)
			}
		}
	}
	if n < 30 {
		t.Fatalf("only %d metrics declared: the catalogue is not read", n)
	}
}
