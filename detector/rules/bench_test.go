package rules

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
)

type discard struct{}

func (discard) Notify(alert.Batch) {}

// BenchmarkEvaluate measures one tick: 1,000 rules over a store of 100,000 active series
// (2,000 endpoints x 10 statuses x 5 upstreams, each with calls in the last 10 minutes).
// Rules filter by endpoint glob, status and upstream, over windows from 1 to 15 minutes,
// a quarter of them grouped by endpoint; metrics mix counts, error rates and latency
// quantiles. "wide" rules each cover a family of 20 endpoints (1,000 series, 1% of the
// store); "narrow" rules one endpoint (50 series).
func BenchmarkEvaluate(b *testing.B) {
	b.Run("wide", func(b *testing.B) { benchmarkEvaluate(b, true) })
	b.Run("narrow", func(b *testing.B) { benchmarkEvaluate(b, false) })
}

func benchmarkEvaluate(b *testing.B, wide bool) {
	store := detector.New(detector.Config{MaxSeries: 200000})
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	statuses := []int{200, 201, 204, 400, 401, 404, 429, 500, 502, 503}
	var n int
	for e := 0; e < 2000; e++ {
		ep := fmt.Sprintf("/family%d/res%d/{id}", e/20, e%20)
		for s, st := range statuses {
			for u := 0; u < 5; u++ {
				for k := 0; k < 2; k++ {
					c := detector.Call{Time: now.Add(-time.Duration((e*7+s*3+u+k*131)%600) * time.Second), Method: "GET",
						Endpoint: ep, Status: st, Upstream: fmt.Sprintf("up-%d:443", u), Latency: time.Duration(1+n%200) * time.Millisecond, User: "u"}
					store.Record(&c)
					n++
				}
			}
		}
	}
	store.Flush()
	if got := store.Stats().Series; got != 100000 {
		b.Fatalf("%d series, want 100000", got)
	}
	metrics := []string{MetricCount, MetricErrorRate, MetricCount, MetricLatencyP99}
	windows := []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute}
	var rs []Rule
	for i := 0; i < 1000; i++ {
		r := Rule{Name: fmt.Sprintf("rule %d", i), Metric: metrics[i%len(metrics)], Window: Duration(windows[i%len(windows)]),
			Threshold: f64(1e9), Filter: detector.Filter{Endpoint: fmt.Sprintf("/family%d/*", i%100)}}
		if !wide {
			r.Filter.Endpoint = fmt.Sprintf("/family%d/res%d/*", i%100, (i/100)%20)
		}
		switch i % 3 {
		case 0:
			r.Filter.Status = "5xx"
		case 1:
			r.Filter.Upstream = fmt.Sprintf("up-%d:443", i%5)
		}
		if i%4 == 0 {
			r.GroupBy = []string{"endpoint"}
		}
		rs = append(rs, r)
	}
	eng := NewEngine(store, Options{Notifier: discard{}})
	if err := eng.SetRules(rs, now); err != nil {
		b.Fatal(err)
	}
	eng.Evaluate(now) // first tick builds each rule's selection
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		eng.Evaluate(now.Add(time.Duration(i%1000) * time.Millisecond))
	}
	// CPU time is what the target is about (a tick's share of a core), and it is less
	// disturbed than wall time by other work on a shared machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/tick")
}

// cpuTime returns the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
