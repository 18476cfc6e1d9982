package loadtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Report is everything a harness run measured.
type Report struct {
	Machine   Machine    `json:"machine"`
	Started   time.Time  `json:"started"`
	Finished  time.Time  `json:"finished"`
	Scale     float64    `json:"scale"`
	Runs      int        `json:"runs"`
	Seed      uint64     `json:"seed"`
	Scenarios []Scenario `json:"scenarios"`
	Results   []Result   `json:"results"`
	// Summary has a row per scenario and driver: the median over the runs that measured, and
	// the spread (min and max).
	Summary []Row `json:"summary"`
	// Ratios pair each adapter run with the reference run of the same scenario and run number.
	Ratios []Ratio `json:"ratios"`
	// Targets are issue 15's targets with the measured values.
	Targets []Target `json:"targets"`
}

// Stat is a median and its spread over runs.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

func statOf(vs []float64) Stat {
	if len(vs) == 0 {
		return Stat{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: round(med, 3), Min: round(s[0], 3), Max: round(s[len(s)-1], 3), N: len(s)}
}

func (s Stat) String() string {
	if s.N == 0 {
		return "—"
	}
	if s.N == 1 || s.Min == s.Max {
		return trim(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", trim(s.Median), trim(s.Min), trim(s.Max))
}

func trim(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// Row summarizes one driver on one scenario.
type Row struct {
	Scenario       string `json:"scenario"`
	Driver         string `json:"driver"`
	Processes      int    `json:"processes"`
	Throughput     Stat   `json:"throughput"`
	LatencyP50     Stat   `json:"latencyP50"`
	LatencyP95     Stat   `json:"latencyP95"`
	LatencyP99     Stat   `json:"latencyP99"`
	Calls          Stat   `json:"callsPerProcess"`
	MaxIn10s       Stat   `json:"maxRequestsIn10s"`
	CPUPer1000     Stat   `json:"cpuSecondsPer1000"`
	PeakRSSMiB     Stat   `json:"peakRssMiB"`
	PeakGoroutines Stat   `json:"peakGoroutines"`
	WaitingRSS     Stat   `json:"waitingRssBytesPerProcess"`
	WaitingGo      Stat   `json:"waitingGoroutinesPerProcess"`
	StorageKiB     Stat   `json:"storageKiBPerCertificate"`
	Failed         int    `json:"failedRuns"`
}

// Ratio is the adapter's value over the reference's in one run of a scenario.
type Ratio struct {
	Scenario   string  `json:"scenario"`
	Run        int     `json:"run"`
	Throughput float64 `json:"throughput"`
	CPUPer1000 float64 `json:"cpuPer1000"`
	LatencyP99 float64 `json:"latencyP99"`
}

// Target is one of issue 15's targets, measured.
type Target struct {
	Scenario string `json:"scenario"`
	What     string `json:"what"`
	Want     string `json:"want"`
	Got      string `json:"got"`
	Met      bool   `json:"met"`
}

func (rep *Report) summarize() {
	type key struct{ scenario, driver string }
	groups := map[key][]Result{}
	var order []key
	for _, r := range rep.Results {
		k := key{r.Scenario, r.Driver}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	rep.Summary = nil
	for _, k := range order {
		row := Row{Scenario: k.scenario, Driver: k.driver}
		var tp, p50, p95, p99, calls, win, cpu, rss, gor, wrss, wgo, storage []float64
		for _, r := range groups[k] {
			row.Processes = r.Processes
			if !r.OK() {
				row.Failed++
				continue
			}
			tp, p50, p95, p99 = append(tp, r.Throughput), append(p50, r.LatencyP50), append(p95, r.LatencyP95), append(p99, r.LatencyP99)
			calls, win, cpu = append(calls, r.CallsPerProcess["total"]), append(win, float64(r.MaxIn10s)), append(cpu, r.CPUPer1000)
			rss = append(rss, float64(r.PeakRSS)/(1<<20))
			if r.PeakGoroutines > 0 { // zero: not measured (an adapter without the ops listener)
				gor = append(gor, float64(r.PeakGoroutines))
			}
			storage = append(storage, r.BytesPerCertificate/1024)
			if r.Waiting != nil && r.Waiting.Processes > 0 {
				wrss = append(wrss, r.Waiting.RSSPerProcess)
				if r.Waiting.GoroutinesPerProcess >= 0 {
					wgo = append(wgo, r.Waiting.GoroutinesPerProcess)
				}
			}
		}
		row.Throughput, row.LatencyP50, row.LatencyP95, row.LatencyP99 = statOf(tp), statOf(p50), statOf(p95), statOf(p99)
		row.Calls, row.MaxIn10s, row.CPUPer1000 = statOf(calls), statOf(win), statOf(cpu)
		row.PeakRSSMiB, row.PeakGoroutines, row.WaitingRSS, row.WaitingGo = statOf(rss), statOf(gor), statOf(wrss), statOf(wgo)
		row.StorageKiB = statOf(storage)
		rep.Summary = append(rep.Summary, row)
	}
	rep.Ratios = nil
	for _, a := range rep.Results {
		if a.Driver != DriverAdapter || !a.OK() {
			continue
		}
		for _, ref := range rep.Results {
			if ref.Driver == DriverReference && ref.Scenario == a.Scenario && ref.Run == a.Run && ref.OK() &&
				ref.Throughput > 0 && ref.CPUPer1000 > 0 && ref.LatencyP99 > 0 {
				rep.Ratios = append(rep.Ratios, Ratio{Scenario: a.Scenario, Run: a.Run,
					Throughput: round(a.Throughput/ref.Throughput, 3), CPUPer1000: round(a.CPUPer1000/ref.CPUPer1000, 3),
					LatencyP99: round(a.LatencyP99/ref.LatencyP99, 3)})
			}
		}
	}
	rep.Targets = rep.targets()
}

// ratioStats gathers one ratio of a scenario over its runs.
func (rep *Report) ratioStats(scenario string, f func(Ratio) float64) Stat {
	var vs []float64
	for _, r := range rep.Ratios {
		if r.Scenario == scenario {
			vs = append(vs, f(r))
		}
	}
	return statOf(vs)
}

func (rep *Report) adapterResults(scenario string) []Result {
	var out []Result
	for _, r := range rep.Results {
		if r.Scenario == scenario && r.Driver == DriverAdapter && r.OK() {
			out = append(out, r)
		}
	}
	return out
}

func statFrom(rs []Result, f func(Result) float64) Stat {
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = f(r)
	}
	return statOf(vs)
}

// targets evaluates issue 15's targets on what ran; a target whose scenario did not run is left
// out.
func (rep *Report) targets() []Target {
	var out []Target
	add := func(scenario, what, want string, got Stat, met bool) {
		if got.N > 0 {
			out = append(out, Target{Scenario: scenario, What: what, Want: want, Got: got.String(), Met: met})
		}
	}
	for _, s := range []string{"a-sqlite", "a-postgres"} {
		tp := rep.ratioStats(s, func(r Ratio) float64 { return r.Throughput })
		add(s, "throughput adapter/reference", "≥ 0.8", tp, tp.Median >= 0.8)
		cpu := rep.ratioStats(s, func(r Ratio) float64 { return r.CPUPer1000 })
		add(s, "CPU per 1,000 adapter/reference", "≤ 1.5", cpu, cpu.Median <= 1.5)
		p99 := rep.ratioStats(s, func(r Ratio) float64 { return r.LatencyP99 })
		add(s, "p99 latency adapter/reference", "≤ 2", p99, p99.Median <= 2)
		rs := rep.adapterResults(s)
		calls := statFrom(rs, func(r Result) float64 { return r.CallsPerProcess["total"] })
		add(s, "API calls per certificate", "5.0", calls, calls.N > 0 && calls.Min == 5 && calls.Max == 5)
		fs := statFrom(slices.DeleteFunc(slices.Clone(rs), func(r Result) bool { return r.Syscalls == nil }), func(r Result) float64 {
			return r.SyscallsPerCertificate["fsync"] + r.SyscallsPerCertificate["fdatasync"]
		})
		add(s, "fsyncs per certificate (strace)", "≤ 3", fs, fs.Median <= 3)
	}
	if rs := rep.adapterResults("b"); len(rs) > 0 {
		rss := statFrom(rs, func(r Result) float64 { return r.Waiting.RSSPerProcess })
		add("b", fmt.Sprintf("RSS per waiting process (%d waiting)", rs[0].Waiting.Processes), "≤ 2048 B", rss, rss.Median <= 2048)
		g := statFrom(slices.DeleteFunc(slices.Clone(rs), func(r Result) bool { return r.Waiting.GoroutinesPerProcess < 0 }),
			func(r Result) float64 { return r.Waiting.GoroutinesPerProcess })
		add("b", "goroutines per waiting process", "≈ 0 (< 0.01)", g, g.Median < 0.01)
	}
	if rs := rep.adapterResults("b-short"); len(rs) > 0 {
		calls := statFrom(rs, func(r Result) float64 { return r.CallsPerProcess["total"] })
		add("b-short", "API calls per certificate, devices 5–30 s", "≤ 7", calls, calls.Median <= 7)
	}
	if rs := rep.adapterResults("c"); len(rs) > 0 {
		win := statFrom(rs, func(r Result) float64 { return float64(r.MaxIn10s) })
		add("c", fmt.Sprintf("most calls in any 10 s (quota allows %.1f)", rs[0].QuotaIn10s), fmt.Sprintf("≤ %.1f", rs[0].QuotaIn10s),
			win, win.Max <= rs[0].QuotaIn10s)
		frac := statFrom(rs, func(r Result) float64 { return r.Throughput / r.QuotaBound })
		add("c", "throughput / (quota ÷ calls per process)", "≥ 0.95", frac, frac.Median >= 0.95)
		minute := statFrom(rs, func(r Result) float64 { return float64(r.MaxIn60s) })
		quota := rs[0].QuotaIn10s * 6
		add("c", fmt.Sprintf("most calls in any minute, the window Google counts in (quota %.0f)", quota), fmt.Sprintf("≤ %.0f", quota),
			minute, minute.Max <= quota)
	}
	for _, s := range rep.Scenarios {
		if s.Compare == "" {
			continue
		}
		many, one := rep.adapterResults(s.Name), rep.adapterResults(s.Compare)
		if len(many) == 0 || len(one) == 0 {
			continue
		}
		var vs []float64
		for _, m := range many {
			for _, o := range one {
				if o.Run == m.Run && o.Throughput > 0 {
					vs = append(vs, m.Throughput/o.Throughput)
				}
			}
		}
		st := statOf(vs)
		add(s.Name, fmt.Sprintf("throughput %d replicas / %s", s.Replicas, s.Compare), "≥ 2.5", st, st.Median >= 2.5)
	}
	return out
}

func (rep *Report) write(dir string) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(rep.Markdown()), 0o644)
}

// Markdown renders the summary, the ratios and the targets as tables.
func (rep *Report) Markdown() string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "# Load test %s\n\n", rep.Started.Format(time.RFC3339))
	fmt.Fprintf(&b, "%d × %s, %d MiB, %s, %s; load average %.2f at the start. Scale %g, %d run(s), seed %d.\n\n",
		m.CPUs, m.CPUModel, m.MemoryMiB, m.OS, m.GoVersion, m.Load1, rep.Scale, rep.Runs, rep.Seed)
	b.WriteString("Medians over the runs, (min–max) when they differ. Latency is from the notification to the upload.\n\n")
	b.WriteString("| scenario | driver | processes | processes/s | p50 s | p95 s | p99 s | calls/process | max calls in 10 s | CPU s/1000 | peak RSS MiB | peak goroutines | RSS B/waiting | goroutines/waiting | storage KiB/cert |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Summary {
		failed := ""
		if r.Failed > 0 {
			failed = fmt.Sprintf(" (%d failed)", r.Failed)
		}
		fmt.Fprintf(&b, "| %s | %s%s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Scenario, r.Driver, failed, r.Processes, r.Throughput, r.LatencyP50, r.LatencyP95, r.LatencyP99, r.Calls,
			r.MaxIn10s, r.CPUPer1000, r.PeakRSSMiB, r.PeakGoroutines, r.WaitingRSS, r.WaitingGo, r.StorageKiB)
	}
	if len(rep.Ratios) > 0 {
		b.WriteString("\n## Adapter / reference, same run\n\n| scenario | run | throughput | CPU per 1,000 | p99 latency |\n|---|---|---|---|---|\n")
		for _, r := range rep.Ratios {
			fmt.Fprintf(&b, "| %s | %d | %.2f | %.2f | %.2f |\n", r.Scenario, r.Run, r.Throughput, r.CPUPer1000, r.LatencyP99)
		}
	}
	if len(rep.Targets) > 0 {
		b.WriteString("\n## Targets\n\n| scenario | what | target | measured | |\n|---|---|---|---|---|\n")
		for _, t := range rep.Targets {
			verdict := "met"
			if !t.Met {
				verdict = "**missed**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", t.Scenario, t.What, t.Want, t.Got, verdict)
		}
	}
	var failed []string
	for _, r := range rep.Results {
		if !r.OK() {
			failed = append(failed, fmt.Sprintf("- %s run %d %s: %d/%d issued, %d failed, %d unfinished; %s",
				r.Scenario, r.Run, r.Driver, r.Issued, r.Processes, r.Failed, r.Unfinished, strings.Join(append(r.Errors, r.Failures...), "; ")))
		}
	}
	if len(failed) > 0 {
		b.WriteString("\n## Runs that did not measure\n\n" + strings.Join(failed, "\n") + "\n")
	}
	return b.String()
}
