package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"text/tabwriter"
)

type machine struct {
	CPUs         int    `json:"cpus"`
	Arch         string `json:"arch"`
	Model        string `json:"cpu_model,omitempty"`
	GOOS         string `json:"os"`
	CaddyVersion string `json:"caddy_version,omitempty"`
}

// roundResult is one wrk run against one site. The CPU figures are microseconds of CPU
// time (user plus system) per request, of the gateway caddy, the upstream caddy and wrk.
type roundResult struct {
	Round int    `json:"round"` // 0 is the warm-up
	Site  string `json:"site"`
	wrkResult
	GatewayCPU  float64 `json:"gateway_cpu_us_per_request"`
	UpstreamCPU float64 `json:"upstream_cpu_us_per_request"`
	WrkCPU      float64 `json:"wrk_cpu_us_per_request"`
	Load1       float64 `json:"load1_at_start"`
}

// siteSummary holds the medians over the measured rounds of one site.
type siteSummary struct {
	RPS        float64 `json:"requests_per_s"`
	P50        float64 `json:"p50_us"`
	P99        float64 `json:"p99_us"`
	GatewayCPU float64 `json:"gateway_cpu_us_per_request"`
}

type ratios struct {
	// Throughput and P99 are vigil's median over plain's median.
	Throughput float64 `json:"throughput"`
	P99        float64 `json:"p99"`
	GatewayCPU float64 `json:"gateway_cpu_per_request"`
	// PairThroughput and PairP99 are the medians of the ratios of the rounds taken in
	// pairs (round i of vigil over round i of plain): less sensitive to load that changes
	// slowly over the run.
	PairThroughput float64 `json:"pair_median_throughput"`
	PairP99        float64 `json:"pair_median_p99"`
	// PairThroughputCI and PairP99CI are 90% bootstrap intervals of those medians: the
	// pairs resampled with replacement. With rounds of a few seconds and many pairs they
	// say whether a verdict could go either way on this machine.
	PairThroughputCI [2]float64 `json:"pair_median_throughput_ci90"`
	PairP99CI        [2]float64 `json:"pair_median_p99_ci90"`
}

type report struct {
	Machine       machine       `json:"machine"`
	Settings      *settings     `json:"settings"`
	LoadBefore    [3]float64    `json:"load_average_before"`
	LoadAfter     [3]float64    `json:"load_average_after"`
	Warmup        []roundResult `json:"warmup"`
	Rounds        []roundResult `json:"rounds"`
	Plain         siteSummary   `json:"plain"`
	Vigil         siteSummary   `json:"vigil"`
	Ratios        ratios        `json:"ratios_vigil_over_plain"`
	ThroughputMet bool          `json:"throughput_target_met"`
	P99Met        bool          `json:"p99_target_met"`
	TargetsMet    bool          `json:"targets_met"`
	Complete      bool          `json:"complete"` // every round ran
	QuotaUsedU1   int64         `json:"quota_used_u1"`
	// Errors make the result invalid (the program exits non-zero): a request that failed
	// or was refused, so that the two sites did not do the same work.
	Errors []string `json:"errors,omitempty"`
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// bootstrapMedian is the 90% percentile-bootstrap interval of the median of xs: 2000
// resamples with replacement, from a fixed seed so that a report is reproducible.
func bootstrapMedian(xs []float64) [2]float64 {
	if len(xs) < 2 {
		m := median(xs)
		return [2]float64{m, m}
	}
	const draws = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	meds := make([]float64, draws)
	sample := make([]float64, len(xs))
	for d := range meds {
		for i := range sample {
			sample[i] = xs[rng.IntN(len(xs))]
		}
		meds[d] = median(sample)
	}
	slices.Sort(meds)
	return [2]float64{meds[draws*5/100], meds[draws*95/100-1]}
}

// summarize computes the medians, ratios and verdicts, and lists the errors.
func (r *report) summarize() {
	by := map[string][]roundResult{}
	for _, rr := range r.Rounds {
		by[rr.Site] = append(by[rr.Site], rr)
		if rr.Non2xx > 0 || rr.SocketErrs > 0 {
			r.Errors = append(r.Errors, fmt.Sprintf("round %d %s: %d responses >= 400 and %d socket errors (%d timeouts): the sites did not serve the same requests",
				rr.Round, rr.Site, rr.Non2xx, rr.SocketErrs, rr.Timeouts))
		}
	}
	sum := func(rs []roundResult) siteSummary {
		var rps, p50, p99, cpu []float64
		for _, rr := range rs {
			rps, p50, p99, cpu = append(rps, rr.RPS), append(p50, rr.P50), append(p99, rr.P99), append(cpu, rr.GatewayCPU)
		}
		return siteSummary{RPS: median(rps), P50: median(p50), P99: median(p99), GatewayCPU: median(cpu)}
	}
	r.Plain, r.Vigil = sum(by["plain"]), sum(by["vigil"])
	r.Ratios = ratios{
		Throughput: ratio(r.Vigil.RPS, r.Plain.RPS),
		P99:        ratio(r.Vigil.P99, r.Plain.P99),
		GatewayCPU: ratio(r.Vigil.GatewayCPU, r.Plain.GatewayCPU),
	}
	var pt, pp []float64
	for i := 0; i < min(len(by["plain"]), len(by["vigil"])); i++ {
		p, v := by["plain"][i], by["vigil"][i]
		pt, pp = append(pt, ratio(v.RPS, p.RPS)), append(pp, ratio(v.P99, p.P99))
	}
	r.Ratios.PairThroughput, r.Ratios.PairP99 = median(pt), median(pp)
	r.Ratios.PairThroughputCI, r.Ratios.PairP99CI = bootstrapMedian(pt), bootstrapMedian(pp)
	r.Complete = len(by["plain"]) == r.Settings.Rounds && len(by["vigil"]) == r.Settings.Rounds
	complete := r.Complete
	r.ThroughputMet = complete && r.Ratios.Throughput >= r.Settings.MinThruput
	r.P99Met = complete && r.Ratios.P99 > 0 && r.Ratios.P99 <= r.Settings.MaxP99Ratio
	r.TargetsMet = r.ThroughputMet && r.P99Met
}

// fmtMicros formats microseconds like wrk does.
func fmtMicros(us float64) string {
	switch {
	case us == 0:
		return "-"
	case us < 1000:
		return fmt.Sprintf("%.0fus", us)
	case us < 1e6:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.2fs", us/1e6)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func (r *report) printText(w io.Writer) {
	s := r.Settings
	m := r.Machine
	fmt.Fprintf(w, "\nVigil vs plain Caddy reverse_proxy on loopback\n")
	fmt.Fprintf(w, "machine:  %d CPUs, %s %s", m.CPUs, m.GOOS, m.Arch)
	if m.Model != "" {
		fmt.Fprintf(w, " (%s)", m.Model)
	}
	fmt.Fprintln(w)
	if m.CaddyVersion != "" {
		fmt.Fprintf(w, "caddy:    %s\n", m.CaddyVersion)
	}
	fmt.Fprintf(w, "load:     before %.2f %.2f %.2f, after %.2f %.2f %.2f (1, 5, 15 min)\n",
		r.LoadBefore[0], r.LoadBefore[1], r.LoadBefore[2], r.LoadAfter[0], r.LoadAfter[1], r.LoadAfter[2])
	order := "plain, vigil, plain, vigil, ..."
	if s.ABBA {
		order = "plain, vigil, vigil, plain, ..."
	}
	fmt.Fprintf(w, "wrk:      -t%d -c%d, %d rounds of %s per site (%s), warm-up %s per site; %d users, %d companies\n",
		s.Threads, s.Conns, s.Rounds, s.Duration, order, s.Warmup, s.Users, s.Companies)
	switch {
	case s.Control:
		fmt.Fprintln(w, "vigil:    -control: the vigil site without the vigil directive, the same as plain (an A/A control; the targets are for the full site)")
	case s.NoLimits:
		fmt.Fprintln(w, "vigil:    -no-limits: identify, block list and recording only (the targets are for the full site)")
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tsite\treq/s\tp50\tp99\tp99.9\tgateway CPU us/req\tload1\t")
	row := func(label string, rr roundResult) {
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%.1f\t%.2f\t\n", label, rr.Site, rr.RPS,
			fmtMicros(rr.P50), fmtMicros(rr.P99), fmtMicros(rr.P999), rr.GatewayCPU, rr.Load1)
	}
	for _, rr := range r.Warmup {
		row("warm-up", rr)
	}
	for _, rr := range r.Rounds {
		row(fmt.Sprint(rr.Round), rr)
	}
	for _, x := range []struct {
		site string
		s    siteSummary
	}{{"plain", r.Plain}, {"vigil", r.Vigil}} {
		fmt.Fprintf(tw, "median\t%s\t%.0f\t%s\t%s\t\t%.1f\t\t\n", x.site, x.s.RPS, fmtMicros(x.s.P50), fmtMicros(x.s.P99), x.s.GatewayCPU)
	}
	tw.Flush()
	fmt.Fprintln(w)

	fmt.Fprintf(w, "vigil/plain throughput: %.3f  (target >= %.2f: %s)   pairwise median %.3f (90%% interval %.3f-%.3f)\n",
		r.Ratios.Throughput, s.MinThruput, met(r.ThroughputMet), r.Ratios.PairThroughput,
		r.Ratios.PairThroughputCI[0], r.Ratios.PairThroughputCI[1])
	fmt.Fprintf(w, "vigil/plain p99:        %.3f  (target <= %.2f: %s)   pairwise median %.3f (90%% interval %.3f-%.3f)\n",
		r.Ratios.P99, s.MaxP99Ratio, met(r.P99Met), r.Ratios.PairP99,
		r.Ratios.PairP99CI[0], r.Ratios.PairP99CI[1])
	if r.Ratios.GatewayCPU > 0 {
		fmt.Fprintf(w, "vigil/plain gateway CPU per request: %.3f (%.1f us more per request)\n",
			r.Ratios.GatewayCPU, r.Vigil.GatewayCPU-r.Plain.GatewayCPU)
	}
	if r.QuotaUsedU1 > 0 {
		fmt.Fprintf(w, "check: the vigil site counted %d calls of u-1 in its quota\n", r.QuotaUsedU1)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR: %s\n", e)
	}
	switch {
	case !r.Complete:
		fmt.Fprintln(w, "RESULT: incomplete run, no verdict")
	case len(r.Errors) > 0:
		fmt.Fprintln(w, "RESULT: invalid (errors above)")
	case s.Control:
		fmt.Fprintln(w, "RESULT: control run (two identical sites), no verdict: the ratios above are this machine's bias and spread")
	case r.TargetsMet:
		fmt.Fprintln(w, "RESULT: targets met")
	default:
		var miss []string
		if !r.ThroughputMet {
			miss = append(miss, "throughput")
		}
		if !r.P99Met {
			miss = append(miss, "p99")
		}
		fmt.Fprintf(w, "RESULT: targets NOT met (%s); the machine is shared and noisy: compare with the load average and rerun before concluding\n", strings.Join(miss, ", "))
	}
}

func (r *report) printJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
