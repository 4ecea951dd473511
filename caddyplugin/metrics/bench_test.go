package metrics

import (
	"bytes"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// benchEndpoints are the endpoints the request-path benchmarks cycle through.
var benchEndpoints = func() []string {
	eps := make([]string, 64)
	for i := range eps {
		eps[i] = "/api/v1/resource" + strconv.Itoa(i) + "/{id}"
	}
	return eps
}()

var benchMethods = []string{"GET", "POST", "PUT", "DELETE"}

// observeNth records the nth request of a mix over benchEndpoints, methods and classes.
func observeNth(r *Registry, n int) {
	r.ObserveRequest(benchEndpoints[n%len(benchEndpoints)], benchMethods[n%len(benchMethods)],
		200+n%4*100, time.Duration(n)*time.Microsecond)
}

// BenchmarkObserveRequest measures the request path on label sets already seen, from one
// goroutine and from all of them at once.
func BenchmarkObserveRequest(b *testing.B) {
	r := New(Options{})
	for n := range len(benchEndpoints) * len(benchMethods) {
		observeNth(r, n)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for n := 0; b.Loop(); n++ {
			observeNth(r, n)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for n := 0; pb.Next(); n++ {
				observeNth(r, n)
			}
		})
	})
	// Every request to the same series: the worst case for contention.
	b.Run("parallel-one-series", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.ObserveRequest(benchEndpoints[0], "GET", 200, time.Millisecond)
			}
		})
	})
}

// BenchmarkWritePrometheus measures a scrape of a registry at its default endpoint cap.
func BenchmarkWritePrometheus(b *testing.B) {
	r := New(Options{})
	for i := range DefaultMaxEndpoints {
		r.ObserveRequest("/e"+strconv.Itoa(i), "GET", 200, time.Millisecond)
	}
	var w discard
	b.ReportAllocs()
	for b.Loop() {
		if err := r.WritePrometheus(&w); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(w.n)/float64(b.N), "bytes/scrape")
}

type discard struct{ n int }

func (d *discard) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

// TestRequestPathAllocs checks that the request path allocates nothing once a label set
// has been seen, nor for values folded into other.
func TestRequestPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	r := New(Options{MaxEndpoints: 1, MaxLabelValues: 1})
	r.ObserveRequest("/known", "GET", 200, 0)
	r.RateLimited("known")
	r.QuotaExceeded("known")
	folded := make([]string, 1001) // AllocsPerRun makes one warm-up call
	for i := range folded {
		folded[i] = "/folded/" + strconv.Itoa(i)
	}
	next := 0
	tests := []struct {
		name string
		fn   func()
	}{
		{"known endpoint", func() { r.ObserveRequest("/known", "GET", 503, time.Millisecond) }},
		{"folded endpoint, never seen before", func() {
			r.ObserveRequest(folded[next], "GET", 200, time.Millisecond)
			next++
		}},
		{"rate limited", func() { r.RateLimited("known") }},
		{"rate limited, folded", func() { r.RateLimited("unknown") }},
		{"quota exceeded", func() { r.QuotaExceeded("known") }},
		{"blocked", func() { r.Blocked("ip") }},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(1000, tt.fn); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", tt.name, n)
		}
	}
}

// TestConcurrentUse runs the request path, the setters and scrapes at once (run it with
// -race), then checks that nothing was lost.
func TestConcurrentUse(t *testing.T) {
	const (
		workers  = 8
		requests = 2000 // per worker
	)
	r := New(Options{MaxEndpoints: 16, MaxLabelValues: 4})
	r.SetScrapeHook(func(r *Registry) {
		r.SetStoreStats(StoreStats{Series: 1, Users: 1})
		r.SetNotificationStats([]ChannelStats{{Channel: "slack", Delivered: 1}})
	})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range requests {
				// 32 endpoints, half of them beyond the cap, added while others read.
				ep := benchEndpoints[(w+i)%32]
				r.ObserveRequest(ep, benchMethods[i%len(benchMethods)], 200+i%5*100, time.Duration(i)*time.Microsecond)
				if i%10 == 0 {
					r.RateLimited("policy" + strconv.Itoa(i%8))
					r.Blocked(blockKinds[i%len(blockKinds)])
				}
			}
		})
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Not parse: t.Fatal must not be called from this goroutine.
			var b bytes.Buffer
			r.WritePrometheus(&b)
			p := expfmt.NewTextParser(model.UTF8Validation)
			if _, err := p.TextToMetricFamilies(&b); err != nil {
				t.Errorf("a scrape during updates does not parse: %v", err)
				return
			}
		}
	})
	bg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r.SetAlertsFiring(map[string]int{"a": i % 2, "b" + strconv.Itoa(i%8): 1})
		}
	})
	wg.Wait()
	close(stop)
	bg.Wait()

	families := parse(t, scrape(t, r))
	var total, observed float64
	endpoints := map[string]bool{}
	for _, m := range families["vigil_requests_total"].GetMetric() {
		total += m.GetCounter().GetValue()
		endpoints[m.GetLabel()[0].GetValue()] = true
	}
	for _, m := range families["vigil_request_duration_seconds"].GetMetric() {
		observed += float64(m.GetHistogram().GetSampleCount())
	}
	if want := float64(workers * requests); total != want || observed != want {
		t.Errorf("%g requests counted and %g observed, want %g", total, observed, want)
	}
	if len(endpoints) != 17 || !endpoints[Other] {
		t.Errorf("%d endpoints, want the cap of 16 and other: %v", len(endpoints), endpoints)
	}
	var limited float64
	for _, m := range families["vigil_rate_limited_total"].GetMetric() {
		limited += m.GetCounter().GetValue()
	}
	if want := float64(workers * requests / 10); limited != want {
		t.Errorf("%g rate-limited, want %g", limited, want)
	}
}
