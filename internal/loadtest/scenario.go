package loadtest

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/config"
)

// Drivers: what works the processes of a run.
const (
	DriverAdapter   = "adapter"   // certprov-adapter run, one process per replica
	DriverReference = "reference" // certprov-emulator reference (internal/loadtest/reference)
)

// Journals of the adapter.
const (
	JournalSQLite   = "sqlite"
	JournalPostgres = "postgres"
)

// Scenario is one workload and the settings it runs with. Counts and delays are those of the
// full scenario; Scale shrinks them for a quicker run.
type Scenario struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Processes is how many processes start at once: their notifications are published in one
	// burst once every process exists.
	Processes int `json:"processes"`
	// SignDelay is the range of the devices' signing delays, drawn uniformly; ScaleDelay
	// shrinks it with the count (so that a small run of a long wait stays short).
	SignDelay  [2]Duration `json:"signDelay"`
	ScaleDelay bool        `json:"scaleDelay,omitempty"`
	// Drivers run the same workload one after the other, each on a fresh emulator.
	Drivers []string `json:"drivers"`
	Journal string   `json:"journal"`
	// Replicas of the adapter on one PostgreSQL journal (1 for SQLite).
	Replicas int `json:"replicas"`
	// Latency is added to every API call by the emulator, as Google's round trip would.
	Latency Duration `json:"latency,omitempty"`
	// QuotaPerMinute, when set, is the Google quota the run holds the adapter to: the rate limit
	// is derived from it (RateFor) and the report checks the calls in every 10-second window.
	QuotaPerMinute float64 `json:"quotaPerMinute,omitempty"`
	// Compare names the scenario whose adapter throughput this one's is divided by (d: three
	// replicas against one).
	Compare string `json:"compare,omitempty"`

	Settings Settings `json:"settings"`
}

// Settings are the adapter's knobs in a run; the reference driver gets the same streams, flow
// control and poll intervals.
type Settings struct {
	Workers                int      `json:"workers"`
	Streams                int      `json:"streams"`
	MaxOutstandingMessages int      `json:"maxOutstandingMessages"`
	RequestsPerSecond      float64  `json:"requestsPerSecond"`
	Burst                  int      `json:"burst"`
	PollInterval           Duration `json:"pollInterval"`
	MaxPollInterval        Duration `json:"maxPollInterval"`
	LogLevel               string   `json:"logLevel"`
}

// Duration is a time.Duration that reads and writes as a string ("1m30s") in JSON.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes the duration as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Unlimited stands for no client-side rate limit: more than the emulator can answer.
const Unlimited = 1e6

// baseSettings are the adapter's defaults, except what a load run must change: no rate limit
// (the quota is scenario c's subject, not a's), and enough streams that the emulator's Pub/Sub,
// about 90 messages a second per stream, does not bound delivery.
func baseSettings() Settings {
	return Settings{
		Workers: config.DefaultWorkers, Streams: 16, MaxOutstandingMessages: config.DefaultMaxOutstandingMessages,
		RequestsPerSecond: Unlimited, Burst: 1000,
		PollInterval: Duration(config.DefaultPollInterval), MaxPollInterval: Duration(config.DefaultMaxPollInterval),
		LogLevel: "info",
	}
}

// RateFor is the token bucket that keeps calls within a per-minute quota in every 10-second
// window, not only in every minute: at most quota/6 calls in any 10 s, counted where they
// arrive. A bucket of rate r and size b releases at most b + 10·r calls in 10 s; calls released
// just before a window can arrive in it when the network or the scheduler delays them, so the
// window is taken a jitter allowance longer: r = (quota/6 − b) / (10 s + jitter), b = 1.
func RateFor(quotaPerMinute float64) (rps float64, burst int) {
	return (quotaPerMinute/6 - 1) / (10 + rateJitter.Seconds()), 1
}

// rateJitter is how late a released call may arrive compared with its neighbours: a loaded
// machine delays some calls by tens of milliseconds (the first runs of scenario c saw 4 calls
// over the bucket's 416 in 10 s at 41.6/s, about 100 ms).
const rateJitter = 250 * time.Millisecond

// Scenarios are the workloads of issue 15, at full size. The harness runs them in this order.
func Scenarios() []Scenario {
	both := []string{DriverReference, DriverAdapter}
	adapter := []string{DriverAdapter}
	a := baseSettings()
	c := baseSettings()
	c.RequestsPerSecond, c.Burst = RateFor(2500)
	d := baseSettings()
	return []Scenario{
		{Name: "a-sqlite", Description: "burst of 20,000 processes whose devices sign at once, SQLite journal",
			Processes: 20_000, Drivers: both, Journal: JournalSQLite, Replicas: 1, Settings: a},
		{Name: "a-postgres", Description: "the same burst on a PostgreSQL journal",
			Processes: 20_000, Drivers: both, Journal: JournalPostgres, Replicas: 1, Settings: a},
		{Name: "b", Description: "10,000 processes whose devices sign after 1 to 5 minutes: memory, goroutines and polls while they wait",
			Processes: 10_000, SignDelay: [2]Duration{Duration(time.Minute), Duration(5 * time.Minute)}, ScaleDelay: true,
			Drivers: both, Journal: JournalSQLite, Replicas: 1, Settings: a},
		{Name: "b-short", Description: "2,000 processes whose devices sign after 5 to 30 seconds: calls per certificate",
			Processes: 2_000, SignDelay: [2]Duration{Duration(5 * time.Second), Duration(30 * time.Second)},
			Drivers: both, Journal: JournalSQLite, Replicas: 1, Settings: a},
		{Name: "c", Description: "a Google quota of 2,500 requests/minute: never above it in any 10 s, throughput near quota ÷ calls per process",
			Processes: 2_500, Drivers: adapter, Journal: JournalSQLite, Replicas: 1, QuotaPerMinute: 2500, Settings: c},
		{Name: "d-1", Description: "one replica on a PostgreSQL journal, 200 ms per API call",
			Processes: 6_000, Drivers: adapter, Journal: JournalPostgres, Replicas: 1, Latency: Duration(200 * time.Millisecond), Settings: d},
		{Name: "d-3", Description: "three replicas on one PostgreSQL journal, 200 ms per API call",
			Processes: 6_000, Drivers: adapter, Journal: JournalPostgres, Replicas: 3, Latency: Duration(200 * time.Millisecond),
			Compare: "d-1", Settings: d},
	}
}

// Select returns the named scenarios (all when names is empty), scaled: counts by scale (at
// least minProcesses), and the delays of ScaleDelay scenarios by scale too (at least a second).
func Select(names []string, scale float64) ([]Scenario, error) {
	if scale <= 0 || scale > 1 || math.IsNaN(scale) {
		return nil, fmt.Errorf("scale %v: want more than 0 and at most 1", scale)
	}
	all := Scenarios()
	var out []Scenario
	for _, s := range all {
		if len(names) == 0 || slices.Contains(names, s.Name) {
			out = append(out, s.scaled(scale))
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(all, func(s Scenario) bool { return s.Name == n }) {
			known := make([]string, len(all))
			for i, s := range all {
				known[i] = s.Name
			}
			return nil, fmt.Errorf("no scenario %q; known: %s", n, strings.Join(known, ", "))
		}
	}
	return out, nil
}

// minProcesses keeps a scaled run large enough to say something.
const minProcesses = 20

func (s Scenario) scaled(scale float64) Scenario {
	s.Processes = max(minProcesses, int(math.Round(float64(s.Processes)*scale)))
	if s.ScaleDelay && scale < 1 {
		for i, d := range s.SignDelay {
			s.SignDelay[i] = Duration(max(time.Second, time.Duration(float64(d)*scale)))
		}
	}
	return s
}
