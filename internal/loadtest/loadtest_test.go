package loadtest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestRateForHoldsEveryWindow drives the adapter's limiter (x/time/rate, as chromeapi uses it)
// with the rate RateFor derives from 2,500 requests a minute and a caller that asks every
// millisecond for two minutes: no 10-second window, and no minute, lets more through than the
// quota's share.
func TestRateForHoldsEveryWindow(t *testing.T) {
	const quota = 2500.0
	rps, burst := RateFor(quota)
	lim := rate.NewLimiter(rate.Limit(rps), burst)
	start := time.Unix(0, 0)
	var granted []time.Duration
	for at := time.Duration(0); at < 2*time.Minute; at += time.Millisecond {
		if lim.AllowN(start.Add(at), 1) {
			granted = append(granted, at)
		}
	}
	mostIn := func(w time.Duration) int {
		best, j := 0, 0
		for i := range granted {
			for j < len(granted) && granted[j] < granted[i]+w {
				j++
			}
			best = max(best, j-i)
		}
		return best
	}
	if got, allowed := mostIn(10*time.Second), quota/6; float64(got) > allowed {
		t.Errorf("%d calls in a 10 s window at %.3f/s burst %d; the quota allows %.1f", got, rps, burst, allowed)
	}
	if got := mostIn(time.Minute); float64(got) > quota {
		t.Errorf("%d calls in a minute; the quota allows %.0f", got, quota)
	}
	// And the rate is not needlessly low: within 3 % of the quota, so that scenario c can reach
	// 95 % of the throughput the quota allows.
	if rps < 0.97*quota/60 {
		t.Errorf("rate %.3f/s is more than 3 %% below the quota's %.3f/s", rps, quota/60)
	}
	// The jitter allowance holds: calls released on time but arriving up to rateJitter late
	// still fit every 10-second window.
	if allowed, worst := quota/6, float64(burst)+rps*(10*time.Second+rateJitter).Seconds(); worst > allowed+1e-9 {
		t.Errorf("%.2f calls may arrive in 10 s with %s of jitter; the quota allows %.1f", worst, rateJitter, allowed)
	}
}

func TestSelect(t *testing.T) {
	all, err := Select(nil, 1)
	if err != nil || len(all) != len(Scenarios()) {
		t.Fatalf("Select(all) = %d scenarios, %v", len(all), err)
	}
	small, err := Select([]string{"a-sqlite", "b"}, 0.1)
	if err != nil || len(small) != 2 {
		t.Fatalf("Select = %v, %v", small, err)
	}
	if small[0].Processes != 2000 || small[1].Processes != 1000 {
		t.Errorf("scaled counts %d, %d; want 2000, 1000", small[0].Processes, small[1].Processes)
	}
	if d := small[1].SignDelay; time.Duration(d[0]) != 6*time.Second || time.Duration(d[1]) != 30*time.Second {
		t.Errorf("b's delays at scale 0.1 = %v, want 6s to 30s", d)
	}
	tiny, _ := Select([]string{"b-short"}, 0.0001)
	if tiny[0].Processes != minProcesses || time.Duration(tiny[0].SignDelay[0]) != 5*time.Second {
		t.Errorf("b-short at a tiny scale: %d processes, delays %v; want %d and its delays unscaled", tiny[0].Processes, tiny[0].SignDelay, minProcesses)
	}
	for _, bad := range []struct {
		names []string
		scale float64
	}{{[]string{"z"}, 1}, {nil, 0}, {nil, 2}} {
		if _, err := Select(bad.names, bad.scale); err == nil {
			t.Errorf("Select(%v, %v) accepted", bad.names, bad.scale)
		}
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct{ p, want float64 }{{50, 5}, {95, 10}, {99, 10}, {10, 1}} {
		if got := percentile(v, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

// TestSmoke runs the harness for real on a few dozen processes: both binaries built, the
// emulator, the adapter and the reference driver started as processes, every certificate
// verified, and a report with the fields the docs read. It measures nothing about speed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both binaries")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(os.PathSeparator),
		"github.com/certprov/certprov-adapter/cmd/certprov-adapter", "github.com/certprov/certprov-adapter/cmd/certprov-emulator")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out := t.TempDir()
	var progress strings.Builder
	rep, err := Run(context.Background(), Options{
		AdapterBin: filepath.Join(bin, "certprov-adapter"), EmulatorBin: filepath.Join(bin, "certprov-emulator"),
		Scenarios: []string{"a-sqlite"}, Scale: 0.0012, OutDir: out, Seed: 1, Progress: &progress,
		Timeout: 5 * time.Minute,
	})
	t.Log(progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want the reference's and the adapter's", len(rep.Results))
	}
	for _, r := range rep.Results {
		if !r.OK() {
			t.Errorf("%s: %d/%d issued, errors %v, failures %v", r.Driver, r.Issued, r.Processes, r.Errors, r.Failures)
		}
		if r.Processes != 24 || r.Throughput <= 0 || r.LatencyP99 < r.LatencyP50 || r.CPUSeconds <= 0 || r.PeakRSS <= 0 {
			t.Errorf("%s: implausible measurement %+v", r.Driver, r)
		}
		// The devices sign at once: get, claim, signData, one poll, upload.
		if c := r.CallsPerProcess; c["total"] != 5 || c["signData"] != 1 || c["uploadCertificate"] != 1 {
			t.Errorf("%s: calls per process %v, want the five", r.Driver, c)
		}
		if r.PeakGoroutines <= 0 {
			t.Errorf("%s: goroutines not sampled from its /metrics", r.Driver)
		}
		if r.MaxIn10s < 1 || len(r.RequestsPerSecond) == 0 {
			t.Errorf("%s: no request timeline (%d in 10 s, %v)", r.Driver, r.MaxIn10s, r.RequestsPerSecond)
		}
	}
	if len(rep.Ratios) != 1 || rep.Ratios[0].Throughput <= 0 {
		t.Errorf("ratios %+v", rep.Ratios)
	}

	data, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Machine map[string]any   `json:"machine"`
		Results []map[string]any `json:"results"`
		Summary []map[string]any `json:"summary"`
		Ratios  []map[string]any `json:"ratios"`
		Targets []map[string]any `json:"targets"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"throughput", "latencyP50", "latencyP95", "latencyP99", "callsPerProcess", "maxRequestsIn10s",
		"requestsPerSecond", "cpuSecondsPer1000", "peakRssBytes", "peakGoroutines", "baseline", "settings"} {
		if _, ok := doc.Results[0][k]; !ok {
			t.Errorf("report.json results lack %q", k)
		}
	}
	if doc.Machine["cpus"] == nil || len(doc.Summary) != 2 || len(doc.Ratios) != 1 || len(doc.Targets) == 0 {
		t.Errorf("report.json: machine %v, %d summary rows, %d ratios, %d targets", doc.Machine, len(doc.Summary), len(doc.Ratios), len(doc.Targets))
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil || !strings.Contains(string(md), "| a-sqlite | adapter |") || !strings.Contains(string(md), "## Targets") {
		t.Errorf("report.md:\n%s", md)
	}
}
