package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse loads arbitrary YAML documents: no panic; either a *ProblemsError listing at least
// one problem, each with a message, or a configuration that validates cleanly and that the same
// document loads again identically.
func FuzzParse(f *testing.F) {
	cleanEnv(f)
	f.Add([]byte(minimalYAML))
	for _, name := range []string{"example.yaml", "demo.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "configs", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(minimalYAML + "x-defaults: &d {validity: 1h}\nlog: {level: debug}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("profiles: [1, 2]\ncaConnections: {ca: {type: local, timeout: -1s}}\n"))
	f.Add([]byte("\t- :\n"))
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, base)
		if err != nil {
			var pe *ProblemsError
			if !errors.As(err, &pe) || len(pe.Problems) == 0 {
				t.Fatalf("error %T %q is not a list of problems", err, err)
			}
			for _, p := range pe.Problems {
				if p.Message == "" {
					t.Fatalf("problem at %q without a message", p.Path)
				}
			}
			return
		}
		if ps := cfg.Validate(); ps != nil {
			t.Fatalf("loaded configuration does not validate: %v", ps)
		}
		again, err := Parse(data, base)
		if err != nil || !reflect.DeepEqual(again, cfg) {
			t.Fatalf("second load differs (%v)", err)
		}
	})
}
