package testservers

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// chromiumFlags run Debian's Chromium headless, alone: no sandbox (tests run as root), no GPU,
// and nothing that would reach the network besides the page asked for.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--hide-scrollbars",
}

// chromiumTimeout bounds one run of the browser on a loaded machine.
const chromiumTimeout = 2 * time.Minute

// Chromium is a headless browser for tests that check what a page shows.
type Chromium struct {
	t   testing.TB
	bin string
}

// FindChromium returns Debian's Chromium ($CERTPROV_TEST_CHROMIUM, else /usr/bin/chromium or
// chromium on the PATH). Without it the test is skipped on a developer machine, saying how to
// install it, and fails in CI (CI=true), where .ci/run installs it.
func FindChromium(t testing.TB) *Chromium {
	t.Helper()
	for _, bin := range []string{os.Getenv("CERTPROV_TEST_CHROMIUM"), "/usr/bin/chromium", "chromium"} {
		if bin == "" {
			continue
		}
		if path, err := exec.LookPath(bin); err == nil {
			return &Chromium{t: t, bin: path}
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed; .ci/run must install it (apt-get install -y chromium)")
	}
	t.Skip("chromium is not installed; install it with: apt-get install -y chromium")
	return nil
}

// DumpDOM loads url and returns the document as the browser built it (--dump-dom).
func (c *Chromium) DumpDOM(url string) string {
	c.t.Helper()
	return string(c.run("--dump-dom", url))
}

// Screenshot loads url in a window of width×height CSS pixels and writes a PNG of it to path.
func (c *Chromium) Screenshot(url, path string, width, height int) {
	c.t.Helper()
	c.run("--screenshot="+path, "--window-size="+strconv.Itoa(width)+","+strconv.Itoa(height), url)
}

func (c *Chromium) run(args ...string) []byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chromiumTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, append(append(append([]string(nil), chromiumFlags...), "--user-data-dir="+c.t.TempDir()), args...)...)
	stderr, err := os.CreateTemp(c.t.TempDir(), "chromium-stderr")
	if err != nil {
		c.t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		b, _ := os.ReadFile(stderr.Name())
		c.t.Fatalf("chromium %v: %v\n%s", args, err, b)
	}
	return out
}
