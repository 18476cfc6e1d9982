package deploytest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var unitFile = repoPath("deploy", "systemd", "certprov-adapter.service")

// unit is a parsed systemd unit file: section → key → values in order (a key may repeat).
type unit map[string]map[string][]string

// parseUnit reads the unit file syntax strictly: every line is a comment, a [Section] header
// or Key=Value inside a section; continuation lines are not used by our unit and refused.
func parseUnit(b []byte) (unit, error) {
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if _, dup := u[section]; dup {
				return nil, fmt.Errorf("line %d: section [%s] twice", n, section)
			}
			u[section] = map[string][]string{}
		case strings.HasSuffix(line, `\`):
			return nil, fmt.Errorf("line %d: continuation lines are not used here", n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("line %d: want Key=Value inside a section, got %q", n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u, sc.Err()
}

func (u unit) last(section, key string) (string, bool) {
	v := u[section][key]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

// TestSystemdUnitDirectives: the unit sandboxes the daemon, keeps its journal in the state
// directory the daemon uses by default, reloads with SIGHUP and stops within 30 s.
func TestSystemdUnitDirectives(t *testing.T) {
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(b)
	if err != nil {
		t.Fatalf("%s: %v", unitFile, err)
	}
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Errorf("no [%s] section", s)
		}
	}
	want := map[string]string{
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"TimeoutStopSec":          "30",
		"DynamicUser":             "yes",
		"StateDirectory":          filepath.Base(dataDir),
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	}
	for k, v := range want {
		if got, ok := u.last("Service", k); !ok || got != v {
			t.Errorf("[Service] %s=%q, want %q", k, got, v)
		}
	}
	if filters := u["Service"]["SystemCallFilter"]; len(filters) == 0 || filters[0] != "@system-service" {
		t.Errorf("[Service] SystemCallFilter %q: want @system-service first", filters)
	}
	if s, _ := u.last("Service", "ExecStart"); !strings.Contains(s, "certprov-adapter run --config ") {
		t.Errorf("[Service] ExecStart=%q does not run the daemon", s)
	}
	if s, _ := u.last("Install", "WantedBy"); s != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%q", s)
	}
}

// TestSystemdAnalyze runs systemd's own checks on the unit: `systemd-analyze verify` (every
// directive known, the commands executable — the one built by the Dockerfile's build stage
// stands in for /usr/local/bin) and `systemd-analyze security`, whose exposure score must stay
// "OK" (below 2.0 of 10).
func TestSystemdAnalyze(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze is missing; .ci/run installs Debian's systemd")
		}
		t.Skip("systemd-analyze not installed (apt-get install systemd)")
	}
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(imageBinaries(t), "certprov-adapter")
	dir := t.TempDir()
	unitPath := filepath.Join(dir, filepath.Base(unitFile))
	writeFile(t, unitPath, bytes.ReplaceAll(b, []byte("/usr/local/bin/certprov-adapter"), []byte(bin)))

	out, err := exec.Command(analyze, "verify", "--man=no", unitPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", unitPath).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	}
	last := string(bytes.TrimSpace(out[bytes.LastIndexByte(bytes.TrimSpace(out), '\n')+1:]))
	t.Log(last)
	if !strings.Contains(last, "exposure level") || !strings.Contains(last, " OK") {
		t.Errorf("systemd-analyze security: want an OK exposure level, got %q", last)
	}
}
