package architecture

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// module is the module path; rules name packages relative to it.
const module = "github.com/certprov/certprov-adapter/"

// pkg is what the rules read of a package of the module: its path relative to the module, its
// direct imports and its transitive dependencies (both with the module's packages relative too,
// others as they are), and its directory.
type pkg struct {
	Path    string
	Imports []string
	Deps    []string
	Dir     string
}

// Package sets.
var (
	// leaves import no package of the module: small tools every layer may use.
	leaves = []string{
		"internal/buildinfo", "internal/cleartext", "internal/errclass", "internal/googleauth", "internal/logging",
		"internal/pemutil", "internal/privatefile", "internal/process", "internal/relpath", "internal/retryafter",
		"internal/suggest", "internal/swap", "internal/verifiedaccess/wire",
	}
	// googleSide is the emulator's Google: the two APIs it serves and what they share.
	googleSide = []string{"internal/emulator", "internal/emulator/vagoogle", "internal/emulator/frontend", "internal/emulator/devicekey"}
	// testSupport is code for tests and for the emulator binary, never for the daemon: the
	// emulator, the harnesses, the finders of real servers, and every package named *test.
	testSupport = []string{
		"internal/emulator/...", "internal/e2etest", "internal/testservers", "internal/loadtest/...",
		"internal/faulttest", "internal/crashtest", "*test",
	}
	// google is the provisioning side's Google: the APIs the adapter serves and their clients.
	google = []string{
		"internal/chromeapi", "internal/directory", "internal/googleauth", "internal/verifiedaccess/...",
		"google.golang.org/api/chromemanagement/...", "google.golang.org/api/verifiedaccess/...",
		"google.golang.org/api/admin/...",
		"cloud.google.com/go/pubsub/...",
	}
	// wiring is what assembles the daemon and runs it: nothing below it may know it.
	wiring = []string{"internal/engine", "internal/intake", "internal/adapter", "internal/cli", "internal/doctor", "internal/pubsubsetup", "cmd/..."}
)

// rule constrains the packages matching pkgs, other than those matching exempt: only (when
// non-nil) lists the packages of the module they may import directly; never lists what they may
// not depend on, directly or not.
type rule struct {
	name   string
	pkgs   []string
	exempt []string
	only   []string
	never  []string
}

var rules = []rule{
	{name: "leaves stay leaves", pkgs: leaves, only: []string{}},
	{name: "metrics and the Google API wrapper depend on leaves only",
		pkgs: []string{"internal/metrics", "internal/chromeapi"}, only: append([]string{"internal/metrics"}, leaves...)},
	{name: "the Directory client depends on leaves, metrics and csr, whose template records it fills",
		pkgs: []string{"internal/directory"}, only: slices.Concat([]string{"internal/metrics", "internal/csr"}, leaves)},
	{name: "csr, the PKCS#10 library, depends on leaves only", pkgs: []string{"internal/csr"}, only: leaves},
	{name: "CA connectors are blind to the engine, the configuration and Google",
		pkgs:  []string{"internal/ca", "internal/ca/..."},
		never: slices.Concat(wiring, google, []string{"internal/config", "internal/journal/...", "internal/audit", "internal/emulator/..."})},
	{name: "the engine drives Google through engine.API, blind to the client behind it",
		pkgs: []string{"internal/engine"}, never: slices.Concat(google, []string{"internal/adapter", "internal/intake", "internal/emulator/..."})},
	{name: "the journal, the audit trail and the configuration know nothing of who uses them",
		pkgs:  []string{"internal/journal", "internal/journal/...", "internal/audit", "internal/config"},
		never: slices.Concat(wiring, google, []string{"internal/ca", "internal/ca/..."})},
	{name: "the daemon links no emulator or test code", pkgs: []string{"cmd/certprov-adapter"}, never: testSupport},
	{name: "production code imports no test code",
		pkgs: []string{"internal/...", "cmd/certprov-adapter"}, never: testSupport, exempt: testSupport},
	{name: "the emulator plays Google, not the adapter: its Google side uses none of the adapter's code beyond the shared wire protocol and leaves",
		pkgs: googleSide, only: slices.Concat(googleSide, leaves)},
	{name: "the emulator's front end and device keys serve both Google sides and know neither",
		pkgs: []string{"internal/emulator/frontend", "internal/emulator/devicekey"}, never: []string{"internal/emulator", "internal/emulator/vagoogle"}},
	{name: "the daemon's command is thin: it hands its arguments to the command tree",
		pkgs: []string{"cmd/certprov-adapter"}, only: []string{"internal/cli", "internal/buildinfo"}},
}

// maxMainLines bounds every cmd/*/main.go: flags, configuration, the object graph, run, exit
// code; the work is in internal/.
const maxMainLines = 100

// TestArchitecture checks every rule against the module as `go list` sees it.
func TestArchitecture(t *testing.T) {
	pkgs := listModule(t)
	for _, v := range check(pkgs) {
		t.Error(v)
	}
	for _, v := range checkMains(t, pkgs) {
		t.Error(v)
	}
}

// TestCheckFindsViolations feeds the checker a module that breaks every rule, so that a checker
// that finds nothing cannot pass for one that holds.
func TestCheckFindsViolations(t *testing.T) {
	bad := []pkg{
		{Path: "internal/process", Imports: []string{"internal/suggest"}},
		{Path: "internal/suggest"},
		{Path: "internal/chromeapi", Imports: []string{"internal/config"}, Deps: []string{"internal/config"}},
		{Path: "internal/csr", Imports: []string{"internal/ca"}, Deps: []string{"internal/ca"}},
		{Path: "internal/ca/scep", Imports: []string{"internal/ca"}, Deps: []string{"internal/ca", "internal/config", "internal/audit"}},
		{Path: "internal/engine", Imports: []string{"internal/chromeapi"}, Deps: []string{"internal/chromeapi", "google.golang.org/api/chromemanagement/v1"}},
		{Path: "internal/journal/sqlite", Deps: []string{"internal/engine"}},
		{Path: "internal/audit", Deps: []string{"internal/ca/local"}},
		{Path: "internal/ops", Imports: []string{"internal/metrics/metricstest"}, Deps: []string{"internal/metrics/metricstest"}},
		{Path: "cmd/certprov-adapter", Imports: []string{"internal/cli", "internal/adapter"}, Deps: []string{"internal/cli", "internal/adapter", "internal/emulator"}},
		{Path: "internal/loadtest/reference", Imports: []string{"internal/emulator"}}, // test support may use test support
		{Path: "internal/ca/catest", Imports: []string{"internal/ca/leafcheck"}},      // and so may a connector's test kit
		{Path: "internal/emulator/vagoogle", Imports: []string{"internal/verifiedaccess", "internal/verifiedaccess/wire", "internal/emulator/frontend"}},
		{Path: "internal/emulator/frontend", Imports: []string{"internal/emulator/vagoogle"}, Deps: []string{"internal/emulator/vagoogle"}},
	}
	want := []string{
		`leaves stay leaves: internal/process imports internal/suggest`,
		`metrics and the Google API wrapper depend on leaves only: internal/chromeapi imports internal/config`,
		`csr, the PKCS#10 library, depends on leaves only: internal/csr imports internal/ca`,
		`CA connectors are blind to the engine, the configuration and Google: internal/ca/scep depends on internal/config`,
		`CA connectors are blind to the engine, the configuration and Google: internal/ca/scep depends on internal/audit`,
		`the engine drives Google through engine.API, blind to the client behind it: internal/engine depends on internal/chromeapi`,
		`the engine drives Google through engine.API, blind to the client behind it: internal/engine depends on google.golang.org/api/chromemanagement/v1`,
		`the journal, the audit trail and the configuration know nothing of who uses them: internal/journal/sqlite depends on internal/engine`,
		`the journal, the audit trail and the configuration know nothing of who uses them: internal/audit depends on internal/ca/local`,
		`the daemon links no emulator or test code: cmd/certprov-adapter depends on internal/emulator`,
		`production code imports no test code: internal/ops depends on internal/metrics/metricstest`,
		`production code imports no test code: cmd/certprov-adapter depends on internal/emulator`,
		`the daemon's command is thin: it hands its arguments to the command tree: cmd/certprov-adapter imports internal/adapter`,
		`the emulator plays Google, not the adapter: its Google side uses none of the adapter's code beyond the shared wire protocol and leaves: internal/emulator/vagoogle imports internal/verifiedaccess`,
		`the emulator's front end and device keys serve both Google sides and know neither: internal/emulator/frontend depends on internal/emulator/vagoogle`,
	}
	got := check(bad)
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missed: %s", w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("reported wrongly: %s", g)
		}
	}

	dir := t.TempDir()
	main := filepath.Join(dir, "main.go")
	if err := os.WriteFile(main, []byte("package main\n"+strings.Repeat("\n", maxMainLines)), 0o600); err != nil {
		t.Fatal(err)
	}
	if v := checkMains(t, []pkg{{Path: "cmd/fat", Dir: dir}}); len(v) != 1 || !strings.Contains(v[0], "cmd/fat/main.go") {
		t.Errorf("a main.go of %d lines: %q", maxMainLines+1, v)
	}
}

// check returns every violation of rules in pkgs, one line each: the rule, the package and what
// it must not import or depend on.
func check(pkgs []pkg) []string {
	var out []string
	for _, r := range rules {
		for _, p := range pkgs {
			if !matchAny(p.Path, r.pkgs) || matchAny(p.Path, r.exempt) {
				continue
			}
			if r.only != nil {
				for _, imp := range p.Imports {
					if internal(imp) && !matchAny(imp, r.only) {
						out = append(out, fmt.Sprintf("%s: %s imports %s", r.name, p.Path, imp))
					}
				}
			}
			for _, dep := range p.Deps {
				if matchAny(dep, r.never) {
					out = append(out, fmt.Sprintf("%s: %s depends on %s", r.name, p.Path, dep))
				}
			}
		}
	}
	return out
}

// checkMains returns a violation for every cmd/*/main.go of more than maxMainLines lines.
func checkMains(t *testing.T, pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		if !match(p.Path, "cmd/...") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(p.Dir, "main.go"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n := bytes.Count(data, []byte("\n")); n > maxMainLines {
			out = append(out, fmt.Sprintf("cmd/* is thin: %s/main.go has %d lines, more than %d", p.Path, n, maxMainLines))
		}
	}
	return out
}

// relative returns paths without the standard library's packages (whose "internal/…" would read
// as the module's), the module's relative to it, and other modules' as they are.
func relative(paths []string) []string {
	var out []string
	for _, p := range paths {
		switch first, _, _ := strings.Cut(p, "/"); {
		case strings.HasPrefix(p, module):
			out = append(out, strings.TrimPrefix(p, module))
		case strings.Contains(first, "."):
			out = append(out, p)
		}
	}
	return out
}

// internal reports whether path is a package of the module.
func internal(path string) bool {
	return strings.HasPrefix(path, "internal/") || strings.HasPrefix(path, "cmd/")
}

func matchAny(path string, patterns []string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return match(path, p) })
}

// match reports whether path matches pattern: the path itself, "dir/..." for dir and everything
// below it, or "*test" for any package whose last element ends in "test" (catest, journaltest).
func match(path, pattern string) bool {
	switch {
	case pattern == "*test":
		return strings.HasSuffix(path[strings.LastIndexByte(path, '/')+1:], "test")
	case strings.HasSuffix(pattern, "/..."):
		dir := strings.TrimSuffix(pattern, "/...")
		return path == dir || strings.HasPrefix(path, dir+"/")
	}
	return path == pattern
}

// listModule runs `go list -deps -json` over the module and returns its packages.
func listModule(t *testing.T) []pkg {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool: %v", err)
	}
	root, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	cmd := exec.Command(goTool, "list", "-deps", "-json", "./...")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bufio.NewReader(bytes.NewReader(out)))
	for {
		var p pkg
		var raw struct {
			ImportPath string
			Dir        string
			Imports    []string
			Deps       []string
		}
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if !strings.HasPrefix(raw.ImportPath, module) {
			continue
		}
		p.Path, p.Dir = strings.TrimPrefix(raw.ImportPath, module), raw.Dir
		p.Imports, p.Deps = relative(raw.Imports), relative(raw.Deps)
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages of %s; is the test run inside the module?", len(pkgs), module)
	}
	return pkgs
}
