package metrics

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// describing is a Registerer that records what is registered on it.
type describing struct{ descs []*prometheus.Desc }

func (d *describing) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 512)
	c.Describe(ch)
	close(ch)
	for desc := range ch {
		d.descs = append(d.descs, desc)
	}
	return nil
}

func (d *describing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d *describing) Unregister(prometheus.Collector) bool { return false }

var descPattern = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// TestEveryMetricDocumented: docs/metrics.md lists every certprov_ metric the adapter declares,
// in a table row that names each of its labels.
func TestEveryMetricDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| `certprov_") {
			name := strings.Trim(strings.SplitN(line, "|", 3)[1], " `")
			rows[name] = line
		}
	}
	reg := &describing{}
	every(reg)
	n := 0
	seen := map[string]bool{} // a series two components share is declared by each
	for _, d := range reg.descs {
		m := descPattern.FindStringSubmatch(d.String())
		if m == nil || !strings.HasPrefix(m[1], Namespace+"_") || seen[m[1]] {
			continue
		}
		seen[m[1]] = true
		n++
		row, ok := rows[m[1]]
		if !ok {
			t.Errorf("docs/metrics.md has no row for %s", m[1])
			continue
		}
		labelsCell := strings.SplitN(row, "|", 5)[3]
		for _, l := range strings.Split(m[2], ",") {
			if l != "" && !strings.Contains(labelsCell, "`"+l+"`") {
				t.Errorf("docs/metrics.md: the row of %s does not name its label %s", m[1], l)
			}
		}
		delete(rows, m[1])
	}
	if n < 30 {
		t.Fatalf("only %d metrics described: the pattern no longer matches prometheus.Desc", n)
	}
	for name := range rows {
		t.Errorf("docs/metrics.md lists %s, which no code declares", name)
	}
}
