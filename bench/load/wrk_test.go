package main

import (
	"math"
	"strings"
	"testing"
)

const sampleWrk = `Running 10s test @ http://127.0.0.1:36703
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.89ms    5.08ms   1.02s    77.69%
    Req/Sec     2.94k   488.51     3.85k    60.00%
  Latency Distribution
     50%  993.00us
     75%   12.97ms
     90%   17.48ms
     99%    1.20s
  29280 requests in 10.03s, 5.63MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   2919.54
Transfer/sec:    570.22KB
`

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }

func TestParseWrkReport(t *testing.T) {
	r, err := parseWrk(sampleWrk)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 29280, DurationSec: 10.03, RPS: 2919.54, P50: 993, P75: 12970, P90: 17480, P99: 1.2e6, Non2xx: 3, SocketErrs: 3, Timeouts: 1}
	if r.Requests != want.Requests || !near(r.DurationSec, want.DurationSec) || !near(r.RPS, want.RPS) ||
		!near(r.P50, want.P50) || !near(r.P75, want.P75) || !near(r.P90, want.P90) || !near(r.P99, want.P99) ||
		r.Non2xx != want.Non2xx || r.SocketErrs != want.SocketErrs || r.Timeouts != want.Timeouts || r.exact {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
}

func TestParseWrkExactLine(t *testing.T) {
	out := strings.Replace(sampleWrk, "Non-2xx or 3xx responses: 3\n", "", 1) +
		"VIGIL-WRK requests=29280 duration_us=10030000 p50_us=993 p90_us=17484 p99_us=1200123 p999_us=1300000 max_us=1400000 mean_us=10891.6 connect=0 read=2 write=0 status=0 timeout=1\n"
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if !r.exact || r.P99 != 1200123 || r.P999 != 1300000 || r.P90 != 17484 || !near(r.RPS, 29280/10.03) || r.SocketErrs != 3 || r.Non2xx != 0 {
		t.Errorf("got %+v", r)
	}
}

func TestParseWrkErrors(t *testing.T) {
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("no error for wrk output without results")
	}
	noLatency := strings.ReplaceAll(sampleWrk, "%", "")
	if _, err := parseWrk(noLatency); err == nil || !strings.Contains(err.Error(), "--latency") {
		t.Errorf("got %v, want an error about --latency", err)
	}
}

func TestMedianAndSummary(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd: %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median even: %v", m)
	}
	s := &settings{Rounds: 3, MinThruput: 0.95, MaxP99Ratio: 1.10}
	rep := &report{Settings: s}
	for i, x := range []struct{ prps, pp99, vrps, vp99 float64 }{{1000, 10, 960, 10.5}, {900, 12, 880, 12.5}, {1100, 9, 1000, 11}} {
		rep.Rounds = append(rep.Rounds,
			roundResult{Round: i + 1, Site: "plain", wrkResult: wrkResult{RPS: x.prps, P99: x.pp99}},
			roundResult{Round: i + 1, Site: "vigil", wrkResult: wrkResult{RPS: x.vrps, P99: x.vp99}})
	}
	rep.summarize()
	if !near(rep.Ratios.Throughput, 960.0/1000) || !near(rep.Ratios.P99, 11.0/10) || !rep.ThroughputMet || !rep.P99Met || !rep.TargetsMet {
		t.Errorf("ratios %+v, met %v %v", rep.Ratios, rep.ThroughputMet, rep.P99Met)
	}
	if len(rep.Errors) != 0 {
		t.Errorf("errors: %v", rep.Errors)
	}
	rep.Rounds[1].Non2xx = 5
	rep.Errors = nil
	rep.summarize()
	if len(rep.Errors) != 1 {
		t.Errorf("a round with non-2xx answers is not an error: %v", rep.Errors)
	}
}

func TestBootstrapMedian(t *testing.T) {
	if ci := bootstrapMedian([]float64{0.93}); ci != [2]float64{0.93, 0.93} {
		t.Errorf("one pair: %v", ci)
	}
	// Twenty pairs spread 0.90-0.99: the interval holds the median, lies within the data
	// and is narrower than it.
	var xs []float64
	for i := range 20 {
		xs = append(xs, 0.90+float64((i*7)%20)*0.005)
	}
	m := median(xs)
	ci := bootstrapMedian(xs)
	if !(ci[0] <= m && m <= ci[1]) || ci[0] < 0.90 || ci[1] > 0.995 || ci[1]-ci[0] >= 0.09 || ci[0] == ci[1] {
		t.Errorf("median %.4f, interval %v", m, ci)
	}
	if again := bootstrapMedian(xs); again != ci {
		t.Errorf("not reproducible: %v then %v", ci, again)
	}
}
