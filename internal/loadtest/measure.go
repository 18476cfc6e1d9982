package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator"
)

// Result is one driver's run of one scenario.
type Result struct {
	Scenario string    `json:"scenario"`
	Run      int       `json:"run"`
	Driver   string    `json:"driver"`
	Journal  string    `json:"journal,omitempty"`
	Replicas int       `json:"replicas,omitempty"`
	Settings Settings  `json:"settings"`
	Started  time.Time `json:"started"`
	Dir      string    `json:"dir"`

	Processes  int `json:"processes"`
	Issued     int `json:"issued"` // uploaded, and verified: chains to the CA, carries the device key
	Failed     int `json:"failed"`
	Invalid    int `json:"invalid"` // uploaded, but the certificate does not verify
	Unfinished int `json:"unfinished"`
	// Failures are a few of the failure messages, for a first look.
	Failures []string `json:"failures,omitempty"`

	// DrainSeconds is from the first notification to the last process ending; Throughput is
	// the processes ended per second over it.
	DrainSeconds float64 `json:"drainSeconds"`
	Throughput   float64 `json:"throughput"`
	// Latency from a process's notification to its certificate's upload, in seconds.
	LatencyP50 float64 `json:"latencyP50"`
	LatencyP95 float64 `json:"latencyP95"`
	LatencyP99 float64 `json:"latencyP99"`
	LatencyMax float64 `json:"latencyMax"`

	// CallsPerProcess is the mean number of API calls per process, by method and in all
	// ("total"); MaxCalls the most any one process took.
	CallsPerProcess map[string]float64 `json:"callsPerProcess"`
	MaxCalls        int                `json:"maxCallsPerProcess"`
	// RequestsPerSecond counts the API calls in each second from the first; MaxIn10s is the
	// most in any 10-second window, anywhere in time.
	RequestsPerSecond []int `json:"requestsPerSecond"`
	MaxIn10s          int   `json:"maxRequestsIn10s"`
	// MaxIn60s is the same over any minute, the window Google's quotas are counted in.
	MaxIn60s int `json:"maxRequestsIn60s"`
	// QuotaIn10s is what the scenario's quota allows in 10 s (quota/6), QuotaBound the
	// throughput it allows (quota per second ÷ calls per process); zero without a quota.
	QuotaIn10s float64 `json:"quotaIn10s,omitempty"`
	QuotaBound float64 `json:"quotaBound,omitempty"`

	// CPUSeconds is the driver's user and system time from the notifications to the last
	// process ending (every replica's); CPUPer1000 per 1,000 processes ended.
	CPUSeconds         float64 `json:"cpuSeconds"`
	CPUPer1000         float64 `json:"cpuSecondsPer1000"`
	EmulatorCPUSeconds float64 `json:"emulatorCpuSeconds"`
	// PeakRSS is the most resident memory of the driver (summed over replicas), from the
	// kernel's high-water mark; PeakGoroutines the most goroutines sampled.
	PeakRSS        int64 `json:"peakRssBytes"`
	PeakGoroutines int   `json:"peakGoroutines"`
	Baseline       Usage `json:"baseline"` // before the notifications
	// Waiting is the sample with the most processes waiting for their device.
	Waiting *Waiting `json:"waiting,omitempty"`

	// WritesPerCertificate counts write-like system calls, to sockets too (/proc/PID/io
	// syscw), and BytesPerCertificate the bytes the driver sent to storage, per process ended.
	WritesPerCertificate float64 `json:"writesPerCertificate"`
	BytesPerCertificate  float64 `json:"bytesWrittenPerCertificate"`
	// Syscalls are strace's counts (CountSyscalls), SyscallsPerCertificate the same per
	// process ended.
	Syscalls               map[string]int     `json:"syscalls,omitempty"`
	SyscallsPerCertificate map[string]float64 `json:"syscallsPerCertificate,omitempty"`

	// LogWarnings and LogErrors count the adapter's log lines at those levels.
	LogWarnings int `json:"logWarnings"`
	LogErrors   int `json:"logErrors"`

	Profiles []string `json:"profiles,omitempty"`
	// Errors are what went wrong with the run itself; a run with errors is not a measurement.
	Errors []string `json:"errors,omitempty"`

	writes, written int64
}

// Usage is a driver's memory and goroutines at one moment.
type Usage struct {
	RSS        int64 `json:"rssBytes"`
	Goroutines int   `json:"goroutines"`
}

// Waiting is the driver while processes wait for their devices.
type Waiting struct {
	Processes  int   `json:"processes"` // processes whose signData is out and not yet signed
	RSS        int64 `json:"rssBytes"`
	Goroutines int   `json:"goroutines"`
	// RSSPerProcess and GoroutinesPerProcess are above the baseline, per waiting process;
	// GoroutinesPerProcess is -1 when the driver's goroutines could not be counted.
	RSSPerProcess        float64 `json:"rssBytesPerProcess"`
	GoroutinesPerProcess float64 `json:"goroutinesPerProcess"`
}

// OK reports whether the run measured what it should: every process issued and verified, no
// error in the harness.
func (r *Result) OK() bool {
	return len(r.Errors) == 0 && r.Issued == r.Processes
}

func (r *Result) fail(err error) {
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
	}
}

func (r *Result) short() string {
	if len(r.Errors) > 0 {
		return "FAILED: " + strings.Join(r.Errors, "; ")
	}
	return fmt.Sprintf("%d/%d issued, %.0f/s, p99 %.1fs, %.2f calls/process, %.2f CPU s/1000, peak RSS %.0f MiB, %d goroutines",
		r.Issued, r.Processes, r.Throughput, r.LatencyP99, r.CallsPerProcess["total"], r.CPUPer1000,
		float64(r.PeakRSS)/(1<<20), r.PeakGoroutines)
}

// evaluate judges every process from the emulator's snapshots: outcome (certificates verified
// against roots), latency, calls; and the request timeline from its stats.
func (r *Result) evaluate(snaps []emulator.Snapshot, st emulator.Stats, roots *x509.CertPool, s Scenario) {
	var first, last time.Time
	var latencies []float64
	calls := map[string]int{}
	for _, sn := range snaps {
		total := 0
		for m, n := range sn.Calls {
			calls[m] += n
			total += n
		}
		calls["total"] += total
		r.MaxCalls = max(r.MaxCalls, total)
		if first.IsZero() || sn.NotifiedAt.Before(first) {
			first = sn.NotifiedAt
		}
		switch sn.State {
		case emulator.StateIssued:
			if _, err := emulator.VerifyIssued(sn, roots, nil); err != nil {
				r.Invalid++
				r.addFailure(err.Error())
			} else {
				r.Issued++
			}
		case emulator.StateFailed:
			r.Failed++
			r.addFailure(sn.FailureMessage)
		default:
			r.Unfinished++
		}
		if sn.Finished() {
			last = maxTime(last, sn.FinishedAt)
			latencies = append(latencies, sn.FinishedAt.Sub(sn.NotifiedAt).Seconds())
		}
	}
	ended := r.Issued + r.Failed + r.Invalid
	if n := len(snaps); n > 0 {
		r.CallsPerProcess = map[string]float64{}
		for m, c := range calls {
			r.CallsPerProcess[m] = round(float64(c)/float64(n), 3)
		}
	}
	if ended > 0 && last.After(first) {
		r.DrainSeconds = round(last.Sub(first).Seconds(), 3)
		r.Throughput = round(float64(ended)/r.DrainSeconds, 1)
		r.CPUPer1000 = round(r.CPUSeconds*1000/float64(ended), 3)
		r.WritesPerCertificate = round(float64(r.writes)/float64(ended), 2)
		r.BytesPerCertificate = round(float64(r.written)/float64(ended), 0)
	}
	slices.Sort(latencies)
	r.LatencyP50, r.LatencyP95, r.LatencyP99 = percentile(latencies, 50), percentile(latencies, 95), percentile(latencies, 99)
	if len(latencies) > 0 {
		r.LatencyMax = round(latencies[len(latencies)-1], 3)
	}
	r.RequestsPerSecond, r.MaxIn10s = st.PerSecond, st.MaxInWindow
	if s.QuotaPerMinute > 0 {
		r.QuotaIn10s = round(s.QuotaPerMinute/6, 2)
		if c := r.CallsPerProcess["total"]; c > 0 {
			r.QuotaBound = round(s.QuotaPerMinute/60/c, 3)
		}
	}
}

func (r *Result) addFailure(msg string) {
	if len(r.Failures) < 5 && !slices.Contains(r.Failures, msg) {
		r.Failures = append(r.Failures, msg)
	}
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return round(sorted[max(0, min(rank, len(sorted)-1))], 3)
}

func round(v float64, digits int) float64 {
	f := math.Pow(10, float64(digits))
	return math.Round(v*f) / f
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// countLogs counts the adapter's warn and error lines (JSON logs on standard error).
func (r *Result) countLogs(procs []*driverProc) {
	for _, p := range procs {
		if p == nil {
			continue
		}
		f, err := os.Open(p.err)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Bytes()
			switch {
			case bytes.Contains(line, []byte(`"level":"warn"`)):
				r.LogWarnings++
			case bytes.Contains(line, []byte(`"level":"error"`)):
				r.LogErrors++
			}
		}
		_ = f.Close()
	}
}

// readStrace adds up strace -c's summaries: "% time seconds usecs/call calls [errors] syscall".
func (r *Result) readStrace(procs []*driverProc) {
	r.Syscalls = map[string]int{}
	for _, p := range procs {
		data, err := os.ReadFile(p.strace)
		if err != nil {
			r.fail(fmt.Errorf("strace summary: %w", err))
			continue
		}
		for line := range strings.Lines(string(data)) {
			f := strings.Fields(line)
			if len(f) < 5 || f[len(f)-1] == "total" || f[len(f)-1] == "syscall" {
				continue
			}
			if n, err := strconv.Atoi(f[3]); err == nil {
				r.Syscalls[f[len(f)-1]] += n
			}
		}
	}
	if ended := r.Issued + r.Failed + r.Invalid; ended > 0 {
		r.SyscallsPerCertificate = map[string]float64{}
		for k, v := range r.Syscalls {
			r.SyscallsPerCertificate[k] = round(float64(v)/float64(ended), 2)
		}
	}
}

// sampler reads the drivers' /proc entries and goroutine gauges.
type sampler struct {
	http           *http.Client
	procs          []*driverProc
	peakGoroutines int
}

func newSampler(client *http.Client, procs []*driverProc) *sampler {
	return &sampler{http: client, procs: procs}
}

// sample is every driver process at one moment, summed over replicas.
type sample struct {
	procs      []procSample
	goroutines int
	counted    bool // goroutines were scraped (a driver without metrics has none)
}

func (sm *sampler) sample(ctx context.Context) sample {
	var s sample
	for _, p := range sm.procs {
		ps, _ := readProc(p.target)
		s.procs = append(s.procs, ps)
		if p.metrics == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if g, err := scrapeGauge(ctx, sm.http, p.metrics, "go_goroutines"); err == nil {
			s.goroutines += int(g)
			s.counted = true
		}
		cancel()
	}
	sm.peakGoroutines = max(sm.peakGoroutines, s.goroutines)
	return s
}

func (s sample) sum(f func(procSample) int64) int64 {
	var n int64
	for _, p := range s.procs {
		n += f(p)
	}
	return n
}

func (s sample) cpu() time.Duration {
	return time.Duration(s.sum(func(p procSample) int64 { return int64(p.CPU) }))
}
func (s sample) rss() int64     { return s.sum(func(p procSample) int64 { return p.RSS }) }
func (s sample) hwm() int64     { return s.sum(func(p procSample) int64 { return p.HWM }) }
func (s sample) syscw() int64   { return s.sum(func(p procSample) int64 { return p.Syscw }) }
func (s sample) written() int64 { return s.sum(func(p procSample) int64 { return p.Written }) }

func (s sample) summary() Usage { return Usage{RSS: s.rss(), Goroutines: s.goroutines} }

// waiting describes s, taken while n processes waited, against the baseline.
func (s sample) waiting(n int, base sample) *Waiting {
	w := &Waiting{Processes: n, RSS: s.rss(), Goroutines: s.goroutines, GoroutinesPerProcess: -1}
	if n > 0 {
		w.RSSPerProcess = round(float64(s.rss()-base.rss())/float64(n), 0)
		if s.counted && base.counted {
			w.GoroutinesPerProcess = round(float64(s.goroutines-base.goroutines)/float64(n), 3)
		}
	}
	return w
}
