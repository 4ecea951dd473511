package sketch

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// quantiles are the q asked of every distribution.
var quantiles = []float64{0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1}

// distributions are value generators for the accuracy tests, each a function of a random
// source and the number of values.
var distributions = []struct {
	name string
	gen  func(r *rand.Rand, n int) []float64
}{
	{"constant", func(r *rand.Rand, n int) []float64 { return fill(n, func() float64 { return 1234.5 }) }},
	{"uniform 0..1e6", func(r *rand.Rand, n int) []float64 { return fill(n, func() float64 { return r.Float64() * 1e6 }) }},
	{"log-normal", func(r *rand.Rand, n int) []float64 {
		return fill(n, func() float64 { return math.Exp(8 + 1.5*r.NormFloat64()) })
	}},
	{"bimodal", func(r *rand.Rand, n int) []float64 {
		return fill(n, func() float64 {
			if r.IntN(10) < 7 {
				return 2000 + 200*r.NormFloat64()
			}
			return 250000 + 30000*r.NormFloat64()
		})
	}},
	{"heavy tail (Pareto 1.1)", func(r *rand.Rand, n int) []float64 {
		return fill(n, func() float64 { return 100 / math.Pow(1-r.Float64(), 1/1.1) })
	}},
	{"all zeros", func(r *rand.Rand, n int) []float64 { return make([]float64, n) }},
	{"single value", func(r *rand.Rand, n int) []float64 { return []float64{777} }},
	{"1..1e9 log-uniform", func(r *rand.Rand, n int) []float64 {
		return fill(n, func() float64 { return math.Pow(10, 9*r.Float64()) })
	}},
	{"below 1, zero and NaN mixed in", func(r *rand.Rand, n int) []float64 {
		return fill(n, func() float64 {
			switch r.IntN(5) {
			case 0:
				return r.Float64()
			case 1:
				return -r.Float64()
			case 2:
				return math.NaN()
			}
			return 1 + r.Float64()*100
		})
	}},
	{"above the top", func(r *rand.Rand, n int) []float64 {
		return fill(n, func() float64 { return math.Pow(10, 6+8*r.Float64()) })
	}},
}

func fill(n int, f func() float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = f()
	}
	return v
}

// exactQuantile returns the nearest-rank q-quantile of values as Histogram reports it:
// values below 1 (and NaN, negative) are 0, values above HistogramMaxValue are clamped.
func exactQuantile(sorted []float64, q float64) float64 {
	rank := max(1, int(math.Ceil(q*float64(len(sorted)))))
	return sorted[min(rank, len(sorted))-1]
}

// normalized returns values as Histogram sees them, sorted.
func normalized(values []float64) []float64 {
	s := make([]float64, len(values))
	for i, v := range values {
		switch {
		case !(v >= 1):
			s[i] = 0
		case v > HistogramMaxValue:
			s[i] = HistogramMaxValue
		default:
			s[i] = v
		}
	}
	slices.Sort(s)
	return s
}

// withinAccuracy reports whether got is within the Histogram's relative accuracy of want
// (with room for float rounding at bin edges).
func withinAccuracy(got, want float64) bool {
	if want == 0 {
		return got == 0
	}
	return math.Abs(got-want) <= want*HistogramRelativeAccuracy*(1+1e-9)
}

func TestHistogramQuantileAccuracy(t *testing.T) {
	for _, d := range distributions {
		for _, n := range []int{1, 7, 1000, 50000} {
			values := d.gen(rand.New(rand.NewPCG(1, uint64(n))), n)
			var h Histogram
			for _, v := range values {
				h.Add(v)
			}
			sorted := normalized(values)
			if got := h.Count(); got != uint64(len(sorted)) {
				t.Errorf("%s n=%d: Count() = %d, want %d", d.name, n, got, len(sorted))
			}
			for _, q := range quantiles {
				want := exactQuantile(sorted, q)
				got, ok := h.Quantile(q)
				if !ok || !withinAccuracy(got, want) {
					t.Errorf("%s n=%d: Quantile(%v) = %v, %v; want %v (±1%%)", d.name, len(sorted), q, got, ok, want)
				}
			}
		}
	}
}

func TestHistogramQuantileEdges(t *testing.T) {
	var h Histogram
	if got, ok := h.Quantile(0.5); ok {
		t.Errorf("empty: Quantile(0.5) = %v, true; want false", got)
	}
	h.Add(10)
	h.Add(1000)
	tests := []struct {
		name string
		q    float64
		want float64
		ok   bool
	}{
		{"q below 0 is the minimum", -1, 10, true},
		{"q above 1 is the maximum", 2, 1000, true},
		{"q 0.5 of two is rank 1", 0.5, 10, true},
		{"q just above 0.5 is rank 2", 0.5000001, 1000, true},
		{"NaN q", math.NaN(), 0, false},
	}
	for _, tt := range tests {
		got, ok := h.Quantile(tt.q)
		if ok != tt.ok || !withinAccuracy(got, tt.want) {
			t.Errorf("%s: Quantile(%v) = %v, %v; want %v, %v", tt.name, tt.q, got, ok, tt.want, tt.ok)
		}
	}
}

func TestHistogramBins(t *testing.T) {
	if maxKey >= 1<<keyBits {
		t.Fatalf("maxKey = %d, does not fit in %d bits", maxKey, keyBits)
	}
	// Every value in a bin is within the accuracy of the bin's value; bins grow with v.
	prev := uint32(0)
	for v := 1.0; v <= HistogramMaxValue; v *= 1.0007 {
		key := binKey(v)
		if key < prev {
			t.Fatalf("binKey(%v) = %d, below the key of a smaller value %d", v, key, prev)
		}
		if got := binValue(key); !withinAccuracy(got, v) {
			t.Fatalf("binValue(binKey(%v)) = %v, want %v (±1%%)", v, got, v)
		}
		prev = key
	}
	tests := []struct {
		v    float64
		want uint32
	}{
		{0, 0}, {0.999, 0}, {-5, 0}, {math.NaN(), 0}, {1, 1},
		{HistogramMaxValue, maxKey}, {math.Inf(1), maxKey}, {1e300, maxKey},
	}
	for _, tt := range tests {
		if got := binKey(tt.v); got != tt.want {
			t.Errorf("binKey(%v) = %d, want %d", tt.v, got, tt.want)
		}
	}
}

// histogramOf returns a Histogram of values.
func histogramOf(values ...float64) *Histogram {
	var h Histogram
	for _, v := range values {
		h.Add(v)
	}
	return &h
}

// histogramInvariant returns what is wrong with the representation of h, if anything: bins
// in increasing key order, none above the top key, no zero leading digit, at most four
// words, and counts that sum (saturating) to Count.
func histogramInvariant(h *Histogram) error {
	var sum uint64
	prev := -1
	for i := 0; i < len(h.bins); {
		key, c, next := nextBin(h.bins, i)
		switch {
		case int(key) <= prev:
			return fmt.Errorf("bin %d after bin %d", key, prev)
		case key > maxKey:
			return fmt.Errorf("bin %d above the top bin %d", key, maxKey)
		case h.bins[next-1]&digitMask == 0:
			return fmt.Errorf("bin %d has a zero leading digit (%x)", key, h.bins[i:next])
		case next-i > 4:
			return fmt.Errorf("bin %d takes %d words", key, next-i)
		}
		sum, prev, i = addSat(sum, c), int(key), next
	}
	if sum != h.count {
		return fmt.Errorf("bins sum to %d, Count() = %d", sum, h.count)
	}
	return nil
}

// sameHistogram reports whether a and b hold the same bins and count. The representation
// is canonical, so equal contents mean equal words.
func sameHistogram(a, b *Histogram) bool {
	return a.count == b.count && slices.Equal(a.bins, b.bins)
}

func TestHistogramMergeEqualsAddingAll(t *testing.T) {
	for _, d := range distributions {
		// Unweighted, every bin fits in a word; weighted, the total passes 2^21 and bins
		// take more words.
		for _, maxWeight := range []uint64{1, 1 << 30} {
			r := rand.New(rand.NewPCG(2, 3))
			values := d.gen(r, 20000)
			weights := make([]uint64, len(values))
			var all Histogram
			for i, v := range values {
				weights[i] = 1 + r.Uint64N(maxWeight)
				all.AddN(v, weights[i])
			}
			for _, parts := range []int{2, 7, 60, 2000} { // 2000: parts of a few bins (mergeFew)
				hs := make([]Histogram, parts)
				for i, v := range values {
					hs[r.IntN(parts)].AddN(v, weights[i])
				}
				merged := histogramOf(values...) // capacity left by Reset must not leak in
				merged.Reset()
				for i := range hs {
					merged.Merge(&hs[i])
				}
				if err := histogramInvariant(merged); err != nil {
					t.Errorf("%s, weights up to %d, in %d parts: %v", d.name, maxWeight, parts, err)
				}
				if !sameHistogram(merged, &all) {
					t.Errorf("%s, weights up to %d, in %d parts: merged has %d words, count %d; want %d words, count %d",
						d.name, maxWeight, parts, len(merged.bins), merged.count, len(all.bins), all.count)
				}
			}
		}
	}
}

func TestHistogramMergeCases(t *testing.T) {
	big := uint64(digitMask) // a one-word count that a merge carries into a second word
	tests := []struct {
		name string
		a, b func(*Histogram)
	}{
		{"into empty", func(h *Histogram) {}, func(h *Histogram) { h.Add(5); h.Add(50) }},
		{"empty into", func(h *Histogram) { h.Add(5) }, func(h *Histogram) {}},
		{"disjoint", func(h *Histogram) { h.Add(5); h.Add(500) }, func(h *Histogram) { h.Add(50); h.Add(5000) }},
		{"same bins", func(h *Histogram) { h.Add(5); h.Add(500) }, func(h *Histogram) { h.Add(5); h.Add(500) }},
		{"carry into a second digit", func(h *Histogram) { h.AddN(5, big); h.Add(9) }, func(h *Histogram) { h.AddN(5, big); h.Add(7) }},
		{"multi-digit both sides", func(h *Histogram) { h.AddN(5, 1<<50); h.AddN(0, 3) }, func(h *Histogram) { h.AddN(5, 1<<50+1); h.AddN(1e9, 1<<30) }},
		{"saturating", func(h *Histogram) { h.AddN(5, math.MaxUint64-1) }, func(h *Histogram) { h.AddN(5, 10); h.Add(6) }},
	}
	for _, tt := range tests {
		var a, b, want Histogram
		tt.a(&a)
		tt.b(&b)
		tt.a(&want)
		tt.b(&want)
		a.Merge(&b)
		if !sameHistogram(&a, &want) {
			t.Errorf("%s: merged = %x (count %d), want %x (count %d)", tt.name, a.bins, a.count, want.bins, want.count)
		}
	}
}

func TestHistogramMergeSelfAndNil(t *testing.T) {
	h := histogramOf(1, 2, 3, 1e6)
	h.Merge(nil)
	h.Merge(h)
	want := histogramOf(1, 2, 3, 1e6, 1, 2, 3, 1e6)
	if !sameHistogram(h, want) {
		t.Errorf("h.Merge(h) = %x, want %x", h.bins, want.bins)
	}
}

func TestHistogramLargeCounts(t *testing.T) {
	tests := []struct {
		name      string
		n         uint64
		times     int
		wantCount uint64
		wantWords int
	}{
		{"one word", digitMask, 1, digitMask, 1},
		{"carry by Add", digitMask, 2, 2 * digitMask, 2},
		{"two words", 1 << 40, 1, 1 << 40, 2},
		{"three words", 1 << 62, 1, 1 << 62, 3},
		{"four words", math.MaxUint64, 1, math.MaxUint64, 4},
		{"saturates", math.MaxUint64 / 2, 3, math.MaxUint64, 4},
	}
	for _, tt := range tests {
		var h Histogram
		h.Add(3)
		h.Add(1e9)
		for range tt.times {
			h.AddN(100, tt.n)
		}
		_, c, end := nextBin(h.bins, 1)
		if c != tt.wantCount || end-1 != tt.wantWords {
			t.Errorf("%s: bin count %d in %d words, want %d in %d", tt.name, c, end-1, tt.wantCount, tt.wantWords)
		}
		if got, _ := h.Quantile(0.5); !withinAccuracy(got, 100) {
			t.Errorf("%s: Quantile(0.5) = %v, want 100", tt.name, got)
		}
		if got, _ := h.Quantile(1); tt.wantCount < math.MaxUint64 && !withinAccuracy(got, 1e9) {
			t.Errorf("%s: Quantile(1) = %v, want 1e9", tt.name, got)
		}
		var back Histogram
		if err := back.UnmarshalBinary(h.AppendBinary(nil)); err != nil || !sameHistogram(&back, &h) {
			t.Errorf("%s: round trip = %x, %v; want %x", tt.name, back.bins, err, h.bins)
		}
	}
}

func TestHistogramCountAtMost(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 5))
	values := distributions[2].gen(r, 5000) // log-normal
	values = append(values, 0, 0.5, 3e10)
	h := histogramOf(values...)
	sorted := normalized(values)
	countBelow := func(limit float64, inclusive bool) uint64 {
		n := 0
		for n < len(sorted) && (sorted[n] < limit || inclusive && sorted[n] == limit) {
			n++
		}
		return uint64(n)
	}
	for _, v := range []float64{-1, math.NaN(), 0, 0.5, 1, 2, 100, 1000, 2980.9, 5e4, 1e6, 1e10, 1e12} {
		got := h.CountAtMost(v)
		lo, hi := countBelow(v, true), countBelow(v*gamma, false)
		switch {
		case !(v >= 0):
			lo, hi = 0, 0
		case v < 1:
			lo, hi = countBelow(1, false), countBelow(1, false)
		}
		if got < lo || got > hi {
			t.Errorf("CountAtMost(%v) = %d, want %d..%d", v, got, lo, hi)
		}
	}
}

func TestHistogramResetReuses(t *testing.T) {
	h := histogramOf(1, 10, 100, 1000, 10000)
	before := cap(h.bins)
	h.Reset()
	if h.Count() != 0 || len(h.bins) != 0 || cap(h.bins) != before {
		t.Fatalf("after Reset: count %d, len %d, cap %d; want 0, 0, %d", h.Count(), len(h.bins), cap(h.bins), before)
	}
	if _, ok := h.Quantile(0.5); ok {
		t.Errorf("after Reset: Quantile ok, want empty")
	}
	allocs := testing.AllocsPerRun(100, func() {
		h.Reset()
		for _, v := range []float64{10000, 1000, 100, 10, 1, 1000} {
			h.Add(v)
		}
	})
	if allocs != 0 {
		t.Errorf("refilling after Reset: %v allocs, want 0", allocs)
	}
}

func TestHistogramAddAllocs(t *testing.T) {
	h := histogramOf(1, 10, 100, 1000, 10000)
	if allocs := testing.AllocsPerRun(1000, func() { h.Add(1000) }); allocs != 0 {
		t.Errorf("Add on an existing bin: %v allocs, want 0", allocs)
	}
	var empty Histogram
	if allocs := testing.AllocsPerRun(100, func() { empty.Quantile(0.5); empty.Count() }); allocs != 0 {
		t.Errorf("reading an empty Histogram: %v allocs, want 0", allocs)
	}
}

func TestHistogramBinaryRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 7))
	for _, d := range distributions {
		h := histogramOf(d.gen(r, 3000)...)
		data := h.AppendBinary([]byte("prefix"))
		var back Histogram
		back.Add(42) // decoding replaces what was there
		if err := back.UnmarshalBinary(data[len("prefix"):]); err != nil {
			t.Errorf("%s: UnmarshalBinary: %v", d.name, err)
			continue
		}
		if !sameHistogram(&back, h) {
			t.Errorf("%s: round trip = %d words, count %d; want %d words, count %d",
				d.name, len(back.bins), back.count, len(h.bins), h.count)
		}
	}
	var empty Histogram
	if got := empty.AppendBinary(nil); len(got) != 2 {
		t.Errorf("empty encodes to %d bytes (%x), want 2", len(got), got)
	}
}

func TestHistogramUnmarshalRejects(t *testing.T) {
	valid := histogramOf(0, 5, 5000).AppendBinary(nil)
	tests := []struct {
		name string
		data []byte
	}{
		{"nil", nil},
		{"version only", []byte{histogramVersion}},
		{"unknown version", []byte{9, 0}},
		{"truncated", valid[:len(valid)-1]},
		{"trailing byte", append(slices.Clone(valid), 0)},
		{"too many bins", []byte{histogramVersion, 0xff, 0xff, 0x03}},
		{"key above the top", []byte{histogramVersion, 1, 0xff, 0x0f, 1}},
		{"empty bin", []byte{histogramVersion, 1, 5, 0}},
		{"key gap wraps around", []byte{histogramVersion, 2, 5, 1, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1}},
		{"uvarint overflows", []byte{histogramVersion, 1, 5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	}
	for _, tt := range tests {
		h := histogramOf(1, 2)
		err := h.UnmarshalBinary(tt.data)
		if err == nil {
			t.Errorf("%s: UnmarshalBinary(%x) = nil, want an error", tt.name, tt.data)
		}
		if h.Count() != 0 || len(h.bins) != 0 {
			t.Errorf("%s: after a failed UnmarshalBinary: count %d, %d words; want empty", tt.name, h.Count(), len(h.bins))
		}
	}
}

func FuzzHistogramUnmarshal(f *testing.F) {
	f.Add(histogramOf().AppendBinary(nil))
	f.Add(histogramOf(0, 1, 2, 1e4, 1e11).AppendBinary(nil))
	big := histogramOf(5)
	big.AddN(7, 1<<45)
	f.Add(big.AppendBinary(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		h := decodeAgain(t, data, sameHistogram)
		if h == nil {
			return
		}
		if err := histogramInvariant(h); err != nil {
			t.Fatalf("decoded %x: %v", data, err)
		}
		if h.Count() > 0 {
			h.Quantile(0.5)
		}
		h.Add(3)
		h.Merge(h.Clone())
		if err := histogramInvariant(h); err != nil {
			t.Fatalf("decoded %x, added to and merged with itself: %v", data, err)
		}
	})
}

func BenchmarkHistogramAdd(b *testing.B) {
	r := rand.New(rand.NewPCG(8, 9))
	values := distributions[2].gen(r, 4096) // log-normal latencies, about 150 bins
	b.Run("existing bins", func(b *testing.B) {
		h := histogramOf(values...)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			h.Add(values[i&4095])
		}
	})
	b.Run("new bins", func(b *testing.B) {
		// Every Add starts a bin: 1024 values 2% apart in random order, reset (keeping
		// capacity) after each round.
		fresh := make([]float64, 1024)
		for i, k := range r.Perm(len(fresh)) {
			fresh[i] = math.Pow(gamma, float64(k))
		}
		var h Histogram
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if i&1023 == 0 {
				h.Reset()
			}
			h.Add(fresh[i&1023])
		}
	})
}

func BenchmarkHistogramQuantile(b *testing.B) {
	// A query over an hour: merge 60 one-minute buckets, then ask p50, p90 and p99.
	r := rand.New(rand.NewPCG(10, 11))
	buckets := make([]Histogram, 60)
	for i := range buckets {
		for _, v := range distributions[2].gen(r, 500) {
			buckets[i].Add(v)
		}
	}
	var sum Histogram
	b.ReportAllocs()
	for b.Loop() {
		sum.Reset()
		for i := range buckets {
			sum.Merge(&buckets[i])
		}
		for _, q := range []float64{0.5, 0.9, 0.99} {
			sum.Quantile(q)
		}
	}
}

func TestAddBinEqualsAdd(t *testing.T) {
	var a, b Histogram
	for i, v := range []float64{0, 0.5, 1, 2, 3.7, 1000, 1e6, 1e12, 42, 42} {
		a.Add(v)
		b.AddBin(BinOf(v))
		if a.Count() != b.Count() {
			t.Fatalf("after %d values: counts %d and %d", i+1, a.Count(), b.Count())
		}
	}
	for _, q := range []float64{0, 0.25, 0.5, 0.9, 1} {
		x, _ := a.Quantile(q)
		y, _ := b.Quantile(q)
		if x != y {
			t.Errorf("q%v: Add gives %v, AddBin %v", q, x, y)
		}
	}
}
