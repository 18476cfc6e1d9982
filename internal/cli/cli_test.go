package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/certprov/certprov-adapter/internal/buildinfo"
	"github.com/certprov/certprov-adapter/internal/inspect"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/sqlite"
	"github.com/certprov/certprov-adapter/internal/process"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(args, Options{Build: testBuild, Stdout: &out, Stderr: &errOut})
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// base is the top of a configuration that needs no file and no network.
const base = `instanceId: a1
customers: [C0abc]
pubsub: {project: p, subscription: s}
google: {credentials: {type: none}, endpoint: "http://127.0.0.1:1/"}
journal: {type: memory}
`

// TestHelpEverywhere: --help on every command, and help COMMAND, exit 0 with the usage on
// standard output.
func TestHelpEverywhere(t *testing.T) {
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string{}, path...), sub.Name()))
		}
	}
	root := newRoot(Options{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}})
	walk(root, nil)
	if len(paths) < 12 {
		t.Fatalf("only %d commands: %v", len(paths), paths)
	}
	for _, p := range paths {
		for _, help := range []string{"--help", "-h"} {
			code, out, stderr := runCLI(t, append(append([]string{}, p...), help)...)
			if code != ExitOK || !strings.Contains(out, "Usage:") || stderr != "" {
				t.Errorf("%v %s: exit %d\nstdout %s\nstderr %s", p, help, code, out, stderr)
			}
		}
		if len(p) == 1 {
			if code, out, _ := runCLI(t, "help", p[0]); code != ExitOK || !strings.Contains(out, "Usage:") {
				t.Errorf("help %s: exit %d: %s", p[0], code, out)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "a.yaml"), base+"profiles: {d: {subject: {commonName: x}}}\ncaConnections: {c: {type: local, certificateFile: ca.crt, keyFile: ca.key}}\n")
	tests := []struct {
		args []string
		want string
	}{
		{nil, "a command is required"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"valdiate"}, `did you mean "validate"?`},
		{[]string{"validate", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"validate", "extra"}, `unknown command "extra"`},
		{[]string{"validate", "--offline", "--check-connections", "--config", cfg}, "exclude each other"},
		{[]string{"inspect", "--config", cfg, "A", "B"}, "at most one process"},
		{[]string{"inspect", "--config", cfg, "--all", "--state", "failed"}, "none of the others can be"},
		{[]string{"inspect", "--config", cfg, "--state", "done"}, `unknown state "done"`},
		{[]string{"init-ca"}, "--dir is required"},
		{[]string{"init-ca", "--validity", "forever"}, "invalid argument"},
		{[]string{"config"}, "a subcommand is required"},
		{[]string{"config", "prnt"}, `did you mean "print"?`},
		{[]string{"doctor", "--config", cfg, "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh"`},
		{[]string{"completion"}, "a shell is required"},
	}
	for _, tt := range tests {
		code, out, stderr := runCLI(t, tt.args...)
		if code != ExitUsage || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "for usage") {
			t.Errorf("%v: exit %d, want 2 with %q\nstdout %s\nstderr %s", tt.args, code, tt.want, out, stderr)
		}
	}
}

// testBuild is the build the tests' command tree reports.
var testBuild = buildinfo.Info{Version: "v1.2.3-test", Commit: "0123abcd", Date: "2030-01-02T03:04:05Z", GoVersion: "go1.26.0", Platform: "linux/amd64"}

func TestVersion(t *testing.T) {
	const want = "certprov-adapter v1.2.3-test (commit 0123abcd, built 2030-01-02T03:04:05Z, go1.26.0 linux/amd64)\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		if code, out, _ := runCLI(t, args...); code != ExitOK || out != want {
			t.Errorf("%v: exit %d, %q", args, code, out)
		}
	}
}

// TestFlagsAnywhere: flags after arguments, and the single-dash long flags of the standard
// flag package that earlier versions used.
func TestFlagsAnywhere(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "journal.db")
	store, err := sqlite.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	const id = "AAAA0000BBBB1111CCCC2222DDDD3333"
	now := time.Now()
	rec := &journal.Record{
		Name: process.Name("C0abc", id), Process: &process.Process{ID: id, Customer: "C0abc"},
		State: journal.StateClaimed, ProfileName: "d", CAName: "c", Created: now, NextDue: now, StepStarted: now,
	}
	rec.Log(now, "claimed as a1")
	if _, err := store.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, filepath.Join(dir, "a.yaml"), strings.Replace(base, "journal: {type: memory}", "journal: {type: sqlite, path: journal.db}", 1)+
		"profiles: {d: {subject: {commonName: x}}}\ncaConnections: {c: {type: local, certificateFile: ca.crt, keyFile: ca.key}}\n")

	for _, args := range [][]string{
		{"inspect", id, "--json", "--config", cfg},
		{"inspect", "--config=" + cfg, id, "--json"},
		{"inspect", "-config", cfg, "-json", id},
		{"inspect", "-config=" + cfg, id, "-json"},
	} {
		code, out, stderr := runCLI(t, args...)
		var d inspect.Detail
		if code != ExitOK || json.Unmarshal([]byte(out), &d) != nil || d.ProcessID != id {
			t.Errorf("%v: exit %d\nstdout %s\nstderr %s", args, code, out, stderr)
		}
	}
	// After "--" nothing is a flag.
	if code, _, stderr := runCLI(t, "inspect", "--config", cfg, "--", "-json"); code != ExitFailure || !strings.Contains(stderr, `no process "-json"`) {
		t.Errorf("after --: exit %d: %s", code, stderr)
	}
}

// TestCompletion: scripts for the shells, and the completions the scripts ask for.
func TestCompletion(t *testing.T) {
	for shell, marker := range map[string]string{
		"bash": "bash completion V2 for certprov-adapter",
		"zsh":  "#compdef certprov-adapter",
		"fish": "complete -c certprov-adapter",
	} {
		code, out, stderr := runCLI(t, "completion", shell)
		if code != ExitOK || !strings.Contains(out, marker) {
			t.Errorf("completion %s: exit %d, %d bytes, %s", shell, code, len(out), stderr)
		}
	}
	complete := func(args ...string) []string {
		t.Helper()
		code, out, stderr := runCLI(t, append([]string{cobra.ShellCompRequestCmd}, args...)...)
		if code != ExitOK {
			t.Fatalf("__complete %v: exit %d: %s", args, code, stderr)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasPrefix(l, ":") {
				got = append(got, strings.SplitN(l, "\t", 2)[0])
			}
		}
		return got
	}
	if got := complete("val"); !equal(got, []string{"validate"}) {
		t.Errorf("commands: %v", got)
	}
	if got := complete("init-ca", "--key-type", ""); !equal(got, []string{"ecdsa", "rsa"}) {
		t.Errorf("--key-type: %v", got)
	}
	if got := complete("inspect", "--state", ""); !slices.Contains(got, "uploaded") || !slices.Contains(got, "failed") || !slices.Contains(got, "sign_requested") {
		t.Errorf("inspect --state completes %v", got)
	}
	if got := complete("config", ""); !equal(got, []string{"print"}) {
		t.Errorf("config: %v", got)
	}

	// inspect completes the ids of unfinished processes from the journal.
	dir := t.TempDir()
	store, err := sqlite.Open(context.Background(), filepath.Join(dir, "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	now := time.Now()
	for _, id := range []string{"AAAA0000BBBB1111CCCC2222DDDD3333", "BBBB0000BBBB1111CCCC2222DDDD3333"} {
		if _, err := store.Create(context.Background(), &journal.Record{
			Name: process.Name("C0abc", id), Process: &process.Process{ID: id, Customer: "C0abc"},
			State: journal.StateClaimed, ProfileName: "d", CAName: "c", Created: now, NextDue: now, StepStarted: now,
		}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeFile(t, filepath.Join(dir, "a.yaml"), strings.Replace(base, "journal: {type: memory}", "journal: {type: sqlite, path: journal.db}", 1)+
		"profiles: {d: {subject: {commonName: x}}}\ncaConnections: {c: {type: local, certificateFile: ca.crt, keyFile: ca.key}}\n")
	if got := complete("inspect", "--config", cfg, ""); !equal(got, []string{"AAAA0000BBBB1111CCCC2222DDDD3333", "BBBB0000BBBB1111CCCC2222DDDD3333"}) {
		t.Errorf("inspect: %v", got)
	}
}

func equal(a, b []string) bool { return slices.Equal(a, b) }
