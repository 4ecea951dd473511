// Command synth generates synthetic API-gateway traffic with labelled incidents and scores
// the anomaly detector on it.
//
// Generate (seeded, reproducible):
//
//	go run ./bench/synth -seed 1 -out out/synth
//
// writes one NAB-format CSV (timestamp,value) per series, per minute over -weeks weeks, and
// labels.json with each series' metric and incidents. Score:
//
//	go run ./bench/synth -seed 1 -out out/synth -score
//
// generates the set if it is missing, replays every series through anomaly.Replay at each
// sensitivity and prints recall (incidents with an alert between their start and 30 minutes
// after their end) and false alerts (alerts outside incidents) per series-week, after the
// first week, which is the detector's learning time.
package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vigilgw/vigil/detector/anomaly"
)

const timeLayout = "2006-01-02 15:04:05"

// start is a Monday, so that weeks of the set start on Mondays.
var start = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)

// Incident is one labelled anomaly of a series.
type Incident struct {
	Kind      string `json:"kind"`
	Start     string `json:"start"`
	End       string `json:"end"`
	Direction string `json:"direction"`
}

// Labels describe one series of the set.
type Labels struct {
	Metric    string     `json:"metric"` // count or latency
	Incidents []Incident `json:"incidents"`
}

func main() {
	seed := flag.Uint64("seed", 1, "random seed")
	out := flag.String("out", "out/synth", "output directory")
	weeks := flag.Int("weeks", 4, "weeks of per-minute data")
	score := flag.Bool("score", false, "replay the set through the detector and print recall and false alerts")
	seeds := flag.Int("seeds", 1, "with -score: generate and score this many sets (seeds seed, seed+1, ...) in OUT/seed-N and add them up")
	flag.BoolVar(&verbose, "v", false, "with -score: print every alert at moderate")
	flag.Parse()
	if err := run(*seed, *seeds, *out, *weeks, *score); err != nil {
		fmt.Fprintln(os.Stderr, "synth:", err)
		os.Exit(1)
	}
}

func run(seed uint64, seeds int, out string, weeks int, score bool) error {
	dirs := []string{out}
	if score && seeds > 1 {
		dirs = nil
		for i := range uint64(seeds) {
			dirs = append(dirs, filepath.Join(out, fmt.Sprintf("seed-%d", seed+i)))
		}
	}
	for i, dir := range dirs {
		_, err := os.Stat(filepath.Join(dir, "labels.json"))
		if !score || errors.Is(err, fs.ErrNotExist) {
			if err := generate(seed+uint64(i), dir, weeks); err != nil {
				return err
			}
		}
	}
	if score {
		return scoreSets(dirs)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Generation

// traffic is the shape of a day and a week of API calls: a multiplier of a customer's
// mean rate at a minute of the week (business hours, quieter nights and weekends).
func traffic(minute int) float64 {
	day := (minute / 1440) % 7 // 0 = Monday
	h := float64(minute%1440) / 60
	// a smooth working day peaking at 14:00, a floor at night
	shape := 0.25 + 0.75*math.Exp(-math.Pow((h-14)/4.5, 2))
	if day >= 5 {
		shape *= 0.45
	}
	return shape
}

type generator struct {
	rng     *rand.Rand
	minutes int
}

func (g *generator) poisson(mean float64) float64 {
	if mean <= 0 {
		return 0
	}
	if mean > 60 {
		return math.Max(0, math.Round(mean+math.Sqrt(mean)*g.rng.NormFloat64()))
	}
	l, k, p := math.Exp(-mean), 0.0, 1.0
	for {
		p *= g.rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// wander is a slow multiplicative drift: a random walk in the logarithm, about sd per day.
func (g *generator) wander(sd float64) []float64 {
	w := make([]float64, g.minutes)
	x := 0.0
	step := sd / math.Sqrt(1440)
	for i := range w {
		x = 0.999*x + step*g.rng.NormFloat64()
		w[i] = math.Exp(x)
	}
	return w
}

type series struct {
	name   string
	metric string
	values []float64
	labels []Incident
}

func at(minute int) string { return start.Add(time.Duration(minute) * time.Minute).Format(timeLayout) }

func (s *series) label(kind, dir string, from, to int) {
	s.labels = append(s.labels, Incident{Kind: kind, Start: at(from), End: at(to), Direction: dir})
}

// calls generates a customer's calls per minute with mean rate mean at the daily peak.
// factor multiplies the rate minute by minute (incidents).
func (g *generator) calls(mean float64, factor func(int) float64) []float64 {
	w := g.wander(0.05)
	v := make([]float64, g.minutes)
	for i := range v {
		rate := mean * traffic(i) * w[i] * factor(i)
		// overdispersed: a gamma-distributed rate (shape 30) under the Poisson noise
		rate *= gammaShape30(g.rng)
		v[i] = g.poisson(rate)
	}
	return v
}

// gammaShape30 draws from Gamma(30, 1/30) (mean 1, sd 0.18) as a sum of exponentials' logs
// is too slow; a log-normal with the same mean and sd is close enough.
func gammaShape30(rng *rand.Rand) float64 {
	const s = 0.18
	return math.Exp(s*rng.NormFloat64() - s*s/2)
}

// latency generates p50 latency in milliseconds: base at low load, rising with load,
// log-normal noise, and the odd slow minute (GC pauses, cold caches) that is normal.
func (g *generator) latency(base float64, factor func(int) float64) []float64 {
	w := g.wander(0.03)
	v := make([]float64, g.minutes)
	for i := range v {
		x := base * (1 + 0.35*traffic(i)) * w[i] * factor(i) * math.Exp(0.06*g.rng.NormFloat64())
		if g.rng.Float64() < 0.002 {
			x *= 1.5 + g.rng.Float64()
		}
		v[i] = math.Round(x*10) / 10
	}
	return v
}

func one(int) float64 { return 1 }

// window is a factor that is f inside [from, to) and 1 outside.
func window(from, to int, f float64) func(int) float64 {
	return func(i int) float64 {
		if i >= from && i < to {
			return f
		}
		return 1
	}
}

func generate(seed uint64, out string, weeks int) error {
	if weeks < 3 {
		return errors.New("-weeks must be at least 3 (one to learn, incidents after)")
	}
	g := &generator{rng: rand.New(rand.NewPCG(seed, 0x5eed)), minutes: weeks * 7 * 1440}
	day := func(d, h, m int) int { return d*1440 + h*60 + m }
	var set []*series
	add := func(name, metric string, values []float64) *series {
		s := &series{name: name, metric: metric, values: values}
		set = append(set, s)
		return s
	}

	// Calls of customers of different sizes (calls per minute at the daily peak).
	add("calls_acme", "count", g.calls(400, one)) // clean
	dropFrom, dropTo := day(15, 10, 0), day(15, 13, 0)
	s := add("calls_globex", "count", g.calls(60, window(dropFrom, dropTo, 0.2)))
	s.label("traffic drop", "down", dropFrom, dropTo)
	spikeFrom, spikeTo := day(17, 11, 20), day(17, 11, 35)
	s = add("calls_initech", "count", g.calls(8, window(spikeFrom, spikeTo, 5)))
	s.label("traffic spike", "up", spikeFrom, spikeTo)
	add("calls_hooli", "count", g.calls(1.5, one)) // small and clean
	tinyFrom, tinyTo := day(22, 9, 0), day(22, 15, 0)
	s = add("calls_piedpiper", "count", g.calls(0.6, window(tinyFrom, tinyTo, 0)))
	s.label("traffic drop", "down", tinyFrom, tinyTo)

	// 5xx responses of two services: a small share of their calls.
	errFrom, errTo := day(10, 15, 5), day(10, 15, 17)
	api := g.calls(500, one)
	errs := make([]float64, g.minutes)
	for i := range errs {
		rate := 0.004 * api[i]
		if i >= errFrom && i < errTo {
			rate = 0.08 * api[i]
		}
		errs[i] = g.poisson(rate)
	}
	s = add("5xx_api", "count", errs)
	s.label("error burst", "up", errFrom, errTo)

	deployAt := day(16, 16, 30) // a deploy doubles the error rate of the search service
	search := g.calls(80, one)
	errs = make([]float64, g.minutes)
	for i := range errs {
		rate := 0.01 * search[i]
		if i >= deployAt {
			rate *= 4
		}
		errs[i] = g.poisson(rate)
	}
	s = add("5xx_search", "count", errs)
	s.label("level shift after deploy", "up", deployAt, deployAt+120)

	// Latency of three routes.
	add("latency_login", "latency", g.latency(45, one)) // clean
	creepFrom, creepTo, creepEnd := day(19, 6, 0), day(19, 12, 0), day(19, 14, 0)
	creep := func(i int) float64 {
		switch {
		case i >= creepFrom && i < creepTo:
			return 1 + 0.6*float64(i-creepFrom)/float64(creepTo-creepFrom)
		case i >= creepTo && i < creepEnd:
			return 1.6
		}
		return 1
	}
	s = add("latency_search", "latency", g.latency(180, creep))
	s.label("gradual latency creep", "up", creepFrom, creepEnd)
	shiftAt := day(23, 10, 0)
	s = add("latency_checkout", "latency", g.latency(120, func(i int) float64 {
		if i >= shiftAt {
			return 1.35
		}
		return 1
	}))
	s.label("level shift after deploy", "up", shiftAt, shiftAt+120)

	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	labels := map[string]Labels{}
	for _, s := range set {
		if err := writeSeries(filepath.Join(out, s.name+".csv"), s.values); err != nil {
			return err
		}
		labels[s.name+".csv"] = Labels{Metric: s.metric, Incidents: append([]Incident{}, s.labels...)}
	}
	b, err := json.MarshalIndent(labels, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "labels.json"), append(b, '\n'), 0o644)
}

func writeSeries(path string, values []float64) error {
	var b bytes.Buffer
	b.WriteString("timestamp,value\n")
	for i, v := range values {
		fmt.Fprintf(&b, "%s,%g\n", at(i), v)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// ---------------------------------------------------------------------------
// Scoring

var verbose bool

const grace = 30 * time.Minute // an alert this long after an incident's end still counts

type tally struct {
	incidents, detected int
	falseAlerts         int
	seriesWeeks         float64
	cleanWeeks          float64 // series-weeks without incidents
	cleanAlerts         int     // false alerts in them
	delays              []float64
	byKind              map[string][2]int // detected, total
}

func scoreSets(dirs []string) error {
	sens := []anomaly.Sensitivity{anomaly.Slight, anomaly.Moderate, anomaly.Severe}
	tallies := map[anomaly.Sensitivity]*tally{}
	for _, s := range sens {
		tallies[s] = &tally{byKind: map[string][2]int{}}
	}
	series := 0
	for _, dir := range dirs {
		n, err := scoreSet(dir, sens, tallies)
		if err != nil {
			return err
		}
		series += n
	}
	fmt.Printf("Synthetic API traffic (%s): %d sets, %d series, per minute; scored after the first week\n\n", strings.Join(dirs, ", "), len(dirs), series)
	fmt.Println("| sensitivity | recall | false alerts / series-week | on clean series-weeks | median delay |")
	fmt.Println("|---|---|---|---|---|")
	for _, s := range sens {
		t := tallies[s]
		fmt.Printf("| %s | %d/%d | %.2f | %.2f | %s |\n", s, t.detected, t.incidents,
			float64(t.falseAlerts)/t.seriesWeeks, float64(t.cleanAlerts)/t.cleanWeeks, median(t.delays))
	}
	fmt.Println("\nIncidents found, by kind (slight / moderate / severe):")
	kinds := make([]string, 0)
	for k := range tallies[anomaly.Moderate].byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		var parts []string
		for _, s := range sens {
			c := tallies[s].byKind[k]
			parts = append(parts, fmt.Sprintf("%d/%d", c[0], c[1]))
		}
		fmt.Printf("- %s: %s\n", k, strings.Join(parts, " / "))
	}
	return nil
}

// scoreSet replays one generated set into tallies and returns its number of series.
func scoreSet(dir string, sens []anomaly.Sensitivity, tallies map[anomaly.Sensitivity]*tally) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "labels.json"))
	if err != nil {
		return 0, err
	}
	var labels map[string]Labels
	if err := json.Unmarshal(b, &labels); err != nil {
		return 0, fmt.Errorf("%s/labels.json: %v", dir, err)
	}
	names := make([]string, 0, len(labels))
	for n := range labels {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		lab := labels[name]
		kind, err := anomaly.ParseKind(lab.Metric)
		if err != nil {
			return 0, fmt.Errorf("%s: %v", name, err)
		}
		for _, s := range sens {
			alerts, first, last, err := replay(filepath.Join(dir, name), kind, s)
			if err != nil {
				return 0, fmt.Errorf("%s/%s: %v", dir, name, err)
			}
			tallies[s].add(alerts, first, last, lab.Incidents)
			if verbose && s == anomaly.Moderate {
				for _, a := range alerts {
					fmt.Printf("%s: alert at %s (%s)\n", name, a.Format(timeLayout), a.Weekday())
				}
			}
		}
	}
	return len(names), nil
}

func median(xs []float64) string {
	if len(xs) == 0 {
		return "n/a"
	}
	s := append([]float64{}, xs...)
	sort.Float64s(s)
	return fmt.Sprintf("%.0f min", s[len(s)/2])
}

// replay runs one series through anomaly.Replay and returns the times of the alerts and
// the first and last time stamps.
func replay(path string, kind anomaly.Kind, s anomaly.Sensitivity) (alerts []time.Time, first, last time.Time, err error) {
	in, err := os.Open(path)
	if err != nil {
		return nil, first, last, err
	}
	defer in.Close()
	var out bytes.Buffer
	if err := anomaly.Replay(in, &out, anomaly.ReplayOptions{Kind: kind, Sensitivity: s}); err != nil {
		return nil, first, last, err
	}
	r := csv.NewReader(&out)
	if _, err := r.Read(); err != nil {
		return nil, first, last, err
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, first, last, err
		}
		t, err := time.Parse(timeLayout, rec[0])
		if err != nil {
			return nil, first, last, err
		}
		if first.IsZero() {
			first = t
		}
		last = t
		if rec[3] == "1" {
			alerts = append(alerts, t)
		}
	}
	return alerts, first, last, nil
}

func (t *tally) add(alerts []time.Time, first, last time.Time, incidents []Incident) {
	from := first.Add(7 * 24 * time.Hour)
	weeks := last.Sub(from).Hours() / (7 * 24)
	t.seriesWeeks += weeks
	type span struct{ a, b time.Time }
	var spans []span
	for _, in := range incidents {
		a, _ := time.Parse(timeLayout, in.Start)
		b, _ := time.Parse(timeLayout, in.End)
		spans = append(spans, span{a, b.Add(grace)})
		t.incidents++
		c := t.byKind[in.Kind]
		c[1]++
		for _, al := range alerts {
			if !al.Before(a) && !al.After(b.Add(grace)) {
				t.detected++
				c[0]++
				t.delays = append(t.delays, al.Sub(a).Minutes())
				break
			}
		}
		t.byKind[in.Kind] = c
	}
	// clean series-weeks: whole weeks after the first with no incident
	for w := from; w.Before(last); w = w.Add(7 * 24 * time.Hour) {
		end := w.Add(7 * 24 * time.Hour)
		clean := true
		for _, sp := range spans {
			if sp.a.Before(end) && sp.b.After(w) {
				clean = false
			}
		}
		if !clean {
			continue
		}
		t.cleanWeeks += min(1, last.Sub(w).Hours()/(7*24))
		for _, al := range alerts {
			if !al.Before(w) && al.Before(end) {
				t.cleanAlerts++
			}
		}
	}
	for _, al := range alerts {
		if al.Before(from) {
			continue
		}
		inside := false
		for _, sp := range spans {
			if !al.Before(sp.a) && !al.After(sp.b) {
				inside = true
			}
		}
		if !inside {
			t.falseAlerts++
		}
	}
}
