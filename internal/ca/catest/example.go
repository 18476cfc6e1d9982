package catest

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// ExampleSettings is the commented-out CA connection name of configs/example.yaml, uncommented:
// its settings without the adapter's own keys (type, timeout), after checking that its type is
// connType. Connector tests pass it to their Check, so that the example operators copy is valid.
func ExampleSettings(t testing.TB, name, connType string) ca.Settings {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(self), "..", "..", "..", "configs", "example.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	in := false
	for line := range strings.SplitSeq(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "  # "+name+":"):
			in = true
		case in && !strings.HasPrefix(line, "  #   "):
			in = false
		case in:
			block = append(block, strings.TrimPrefix(line, "  #   "))
		}
	}
	if len(block) == 0 {
		t.Fatalf("no commented %s block in configs/example.yaml", name)
	}
	var s ca.Settings
	if err := yaml.Unmarshal([]byte(strings.Join(block, "\n")), &s); err != nil {
		t.Fatalf("the example %s does not parse: %v", name, err)
	}
	if s["type"] != connType {
		t.Fatalf("the example %s has type %v, want %s", name, s["type"], connType)
	}
	delete(s, "type")
	delete(s, "timeout")
	return s
}
