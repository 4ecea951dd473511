package anomaly

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

var start = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC) // a Monday

// series is a generated series: value k is at start + k*step.
type series struct {
	step   time.Duration
	values []float64
}

func (s series) at(k int) time.Time { return start.Add(time.Duration(k) * s.step) }

// run feeds s to a fresh detector and returns the results and the points where an alerter
// at sens (both directions) fired.
func run(t *testing.T, cfg Config, s series, sens Sensitivity) ([]Result, []int) {
	t.Helper()
	d := New(cfg)
	a := NewAlerter(sens, Both)
	res := make([]Result, len(s.values))
	var fired []int
	for k, v := range s.values {
		res[k] = d.Observe(s.at(k), v)
		if r := res[k]; r.Score < 0 || r.Score > 1 || math.IsNaN(r.Score) {
			t.Fatalf("point %d: score %v out of [0, 1]", k, r.Score)
		}
		if a.Observe(res[k]) == Fired {
			fired = append(fired, k)
		}
	}
	return res, fired
}

func gaussian(seed uint64, n int, step time.Duration, mean, sd float64) series {
	rng := rand.New(rand.NewPCG(seed, 1))
	s := series{step: step, values: make([]float64, n)}
	for k := range s.values {
		s.values[k] = mean + sd*rng.NormFloat64()
	}
	return s
}

func poisson(rng *rand.Rand, mean float64) float64 {
	l, k, p := math.Exp(-mean), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return float64(k)
		}
		k++
	}
}

func TestFlatSeriesNoAlerts(t *testing.T) {
	constant := func(v float64, step time.Duration) series {
		s := series{step: step, values: make([]float64, 5000)}
		for k := range s.values {
			s.values[k] = v
		}
		return s
	}
	for _, tt := range []struct {
		name string
		s    series
	}{
		{"zeros", constant(0, time.Minute)},
		{"42 every 5 minutes", constant(42, 5*time.Minute)},
		{"0.5 every hour", constant(0.5, time.Hour)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, sens := range []Sensitivity{Slight, Moderate, Severe} {
				if _, fired := run(t, Config{}, tt.s, sens); len(fired) > 0 {
					t.Errorf("%v: alerts at points %v, want none", sens, fired)
				}
			}
		})
	}
}

// On white noise a moderate alert is a one-in-60,000-points event: over three weeks of
// per-minute Gaussian noise, at most one moderate alert a week and no severe ones.
func TestGaussianNoiseRarelyAlerts(t *testing.T) {
	alerts := map[Sensitivity]int{}
	const weeks = 3
	for seed := range uint64(weeks) {
		s := gaussian(seed, 7*1440, time.Minute, 100, 5)
		for _, sens := range []Sensitivity{Moderate, Severe} {
			_, fired := run(t, Config{}, s, sens)
			alerts[sens] += len(fired)
		}
	}
	if alerts[Moderate] > weeks || alerts[Severe] > 0 {
		t.Errorf("%d moderate and %d severe alerts over %d weeks of noise, want at most %d and 0", alerts[Moderate], alerts[Severe], weeks, weeks)
	}
}

func TestChangesFoundInTheirDirection(t *testing.T) {
	const at = 3000
	tests := []struct {
		name   string
		change func(k int) float64 // added to the noise at point k
		want   Direction
	}{
		{"step up", func(k int) float64 {
			if k >= at {
				return 40
			}
			return 0
		}, Up},
		{"spike", func(k int) float64 {
			if k == at {
				return 60
			}
			return 0
		}, Up},
		{"drop", func(k int) float64 {
			if k >= at {
				return -40
			}
			return 0
		}, Down},
		{"dip", func(k int) float64 {
			if k == at {
				return -60
			}
			return 0
		}, Down},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := gaussian(7, 4000, 5*time.Minute, 100, 4)
			for k := range s.values {
				s.values[k] += tt.change(k)
			}
			res, fired := run(t, Config{}, s, Moderate)
			if len(fired) != 1 || fired[0] < at || fired[0] > at+5 {
				t.Fatalf("alerts at %v, want one at %d (or just after)", fired, at)
			}
			if got := res[fired[0]].Direction; got != tt.want {
				t.Errorf("direction %v, want %v", got, tt.want)
			}
		})
	}
}

// A daily peak (a busy hour at 14:00) is learnt: after a few days it does not alarm, and
// its absence on a later day does.
func TestDailySeasonalityIsLearnt(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	const days = 10
	s := series{step: time.Minute, values: make([]float64, days*1440)}
	for k := range s.values {
		m := k % 1440
		v := 50.0
		if m >= 14*60 && m < 15*60 {
			v = 150
		}
		if k/1440 == 8 && m >= 14*60 && m < 15*60 {
			v = 50 // the peak fails to come on day 8
		}
		s.values[k] = poisson(rng, v)
	}
	res, fired := run(t, Config{Kind: Count}, s, Moderate)
	var late []int
	for _, k := range fired {
		if k >= 3*1440 && k/1440 != 8 {
			late = append(late, k)
		}
	}
	if len(late) > 0 {
		t.Errorf("alerts on days 3-9 outside the missing peak at %v (day %d, minute %d)", late, late[0]/1440, late[0]%1440)
	}
	peak := 8*1440 + 14*60
	found := false
	for _, k := range fired {
		if k >= peak && k < peak+60 {
			found = res[k].Direction == Down
		}
	}
	if !found {
		t.Errorf("no downward alert for the missing peak on day 8 (alerts %v)", fired)
	}
	if r := res[7*1440+14*60+30]; r.Expected < 120 || r.Expected > 180 {
		t.Errorf("expected value in the peak on day 7 = %.1f, want about 150", r.Expected)
	}
}

// A series with no daily cycle is not harmed by the seasonal model: it never switches on.
func TestNoSeasonalityWhereThereIsNone(t *testing.T) {
	d := New(Config{})
	s := gaussian(4, 15*288, 5*time.Minute, 10, 1)
	for k, v := range s.values {
		d.Observe(s.at(k), v)
	}
	if d.season != 0 {
		t.Errorf("seasonal model %d in use on white noise, want 0", d.season)
	}
}

func TestLowCountsDoNotAlarm(t *testing.T) {
	for i, mean := range []float64{0.05, 0.5, 2, 5} {
		rng := rand.New(rand.NewPCG(uint64(i), 77))
		s := series{step: time.Minute, values: make([]float64, 14*1440)}
		for k := range s.values {
			s.values[k] = poisson(rng, mean)
		}
		_, fired := run(t, Config{Kind: Count}, s, Moderate)
		if len(fired) > 0 {
			t.Errorf("Poisson mean %v: %d alerts over two weeks at moderate (first at %d), want none", mean, len(fired), fired[0])
		}
	}
}

// A burst of errors on a low-count series is still found.
func TestCountBurstFound(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	s := series{step: time.Minute, values: make([]float64, 3000)}
	for k := range s.values {
		s.values[k] = poisson(rng, 0.5)
		if k >= 2500 && k < 2510 {
			s.values[k] += 30
		}
	}
	res, fired := run(t, Config{Kind: Count}, s, Moderate)
	if len(fired) != 1 || fired[0] < 2500 || fired[0] > 2502 || res[fired[0]].Direction != Up {
		t.Errorf("alerts at %v, want one going up at 2500", fired)
	}
	if r := res[fired[0]]; !(r.Low <= 0.5 && r.High >= 3 && r.High < 20) {
		t.Errorf("band [%.2f, %.2f] around %.2f, want it to hold the usual 0-3 calls", r.Low, r.High, r.Expected)
	}
}

func TestWarmup(t *testing.T) {
	s := gaussian(6, 400, time.Minute, 10, 1)
	s.values[50] = 1000
	res, _ := run(t, Config{}, s, Slight)
	for k, r := range res {
		if warm := k >= WarmupPoints; r.Warm != warm || (!warm && r.Score != 0) {
			t.Fatalf("point %d: Warm %v score %v, want warm %v and score 0 before", k, r.Warm, r.Score, warm)
		}
	}
}

// The score of a point depends only on the points before it.
func TestScoreDoesNotDependOnLaterPoints(t *testing.T) {
	s := gaussian(8, 3000, 5*time.Minute, 20, 2)
	for k := 2000; k < 2100; k++ {
		s.values[k] += 15
	}
	full, _ := run(t, Config{}, s, Moderate)
	for _, n := range []int{1, 500, 2000, 2050} {
		prefix, _ := run(t, Config{}, series{step: s.step, values: s.values[:n]}, Moderate)
		for k := range prefix {
			if prefix[k] != full[k] {
				t.Fatalf("prefix of %d: point %d scored %+v, full series %+v", n, k, prefix[k], full[k])
			}
		}
	}
}

func TestIgnoresNaN(t *testing.T) {
	d := New(Config{})
	d.Observe(start, 1)
	before, _ := d.MarshalBinary()
	if r := d.Observe(start.Add(time.Minute), math.NaN()); r != (Result{}) {
		t.Errorf("NaN gave %+v, want the zero Result", r)
	}
	after, _ := d.MarshalBinary()
	if string(before) != string(after) {
		t.Error("NaN changed the state")
	}
}

func TestIrregularIntervals(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	d := New(Config{})
	a := NewAlerter(Moderate, Both)
	at := start
	for k := range 6000 {
		at = at.Add(time.Duration(30+rng.IntN(600)) * time.Second)
		if k%1000 == 999 {
			at = at.Add(6 * time.Hour) // a gap
		}
		if a.Observe(d.Observe(at, 5+rng.NormFloat64())) == Fired {
			t.Fatalf("alert at point %d on noise with irregular gaps", k)
		}
	}
}

func TestNewPanicsOnBadConfig(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New(Kind 9) did not panic")
		}
	}()
	New(Config{Kind: 9})
}

func BenchmarkObserve(b *testing.B) {
	for _, kind := range []Kind{Continuous, Count} {
		b.Run(kind.String(), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			vals := make([]float64, 4096)
			for k := range vals {
				vals[k] = poisson(rng, 20)
			}
			d := New(Config{Kind: kind})
			at := start
			b.ReportAllocs()
			for k := 0; b.Loop(); k++ {
				at = at.Add(time.Minute)
				d.Observe(at, vals[k&4095])
			}
		})
	}
}

// BenchmarkDetectorMemory reports the heap held per detector (bytes/series).
func BenchmarkDetectorMemory(b *testing.B) {
	for b.Loop() {
		ds := make([]*Detector, 1000)
		for i := range ds {
			ds[i] = New(Config{})
		}
	}
	b.ReportMetric(float64(detectorBytes()), "bytes/series")
}

// detectorBytes is the memory of one detector: it owns no slices or maps, so its size is
// the struct's.
func detectorBytes() uintptr { return unsafe.Sizeof(Detector{}) }

func TestMemoryPerSeries(t *testing.T) {
	if n := detectorBytes(); n > 4096 {
		t.Errorf("a detector is %d bytes, want at most 4 KiB", n)
	}
	// The heap grown by n detectors, less the slice that holds them; the least of three
	// tries, as other goroutines of the test binary may allocate meanwhile.
	const n = 2000
	per := math.Inf(1)
	for range 3 {
		ds := make([]*Detector, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range ds {
			ds[i] = New(Config{Kind: Count})
			ds[i].Observe(start, 1)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		per = min(per, (float64(after.HeapAlloc)-float64(before.HeapAlloc))/n)
		runtime.KeepAlive(ds)
	}
	if per > 4096 {
		t.Errorf("heap per detector %.0f bytes, want at most 4 KiB", per)
	}
	t.Logf("detector: %d bytes (struct), %.0f bytes of heap each over %d", detectorBytes(), per, n)
}

// A small customer (one call every two minutes) that goes silent for three hours is found,
// going down; one that keeps calling is not.
func TestSilenceOfASmallCustomer(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	s := series{step: time.Minute, values: make([]float64, 4*1440)}
	const from, to = 3 * 1440, 3*1440 + 180
	for k := range s.values {
		if k < from || k >= to {
			s.values[k] = poisson(rng, 0.5)
		}
	}
	res, fired := run(t, Config{Kind: Count}, s, Moderate)
	if len(fired) != 1 || fired[0] < from || fired[0] >= to || res[fired[0]].Direction != Down {
		t.Errorf("alerts at %v, want one going down between %d and %d", fired, from, to)
	}
}

// Onset is Score where an episode starts or grows and 0 on the rest of it: a step scores
// its onset once, then the episode is quiet.
func TestOnsetDeclusters(t *testing.T) {
	const at = 3000
	s := gaussian(7, 4000, 5*time.Minute, 100, 4)
	for k := at; k < at+40; k++ {
		s.values[k] += 40
	}
	res, _ := run(t, Config{}, s, Moderate)
	onsets := 0
	for k, r := range res {
		if r.Onset != 0 && r.Onset != r.Score {
			t.Fatalf("point %d: onset %v, score %v", k, r.Onset, r.Score)
		}
		if k >= at && k < at+60 && r.Onset >= Moderate.Threshold() {
			onsets++
		}
	}
	if res[at].Onset < Moderate.Threshold() {
		t.Errorf("the step scored onset %v, want at least %v", res[at].Onset, Moderate.Threshold())
	}
	if onsets > 2 {
		t.Errorf("%d onsets at moderate within the step and its end, want at most 2", onsets)
	}
}

// A point of a per-minute series pays log10(5) digits against one of a 5-minute series:
// scores mean the same false-alert rate per unit of time.
func TestScoresPerUnitTime(t *testing.T) {
	for _, tt := range []struct {
		step time.Duration
		want float64
	}{
		{time.Minute, math.Log10(5)},
		{5 * time.Minute, 0},
		{time.Hour, 0},
		{10 * time.Second, math.Log10(30)},
	} {
		d := New(Config{})
		for k := range 200 {
			d.Observe(start.Add(time.Duration(k)*tt.step), 1)
		}
		if got := d.unitPenalty(); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("every %v: penalty %.4f digits, want %.4f", tt.step, got, tt.want)
		}
	}
}
