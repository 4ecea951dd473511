package sketch

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// mix is splitmix64's finalizer: a bijection, so distinct inputs give distinct, well-mixed
// hashes, like the 64-bit hashes the store passes.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// hashes returns n distinct hashes of the stream seed.
func hashes(seed uint64, n int) []uint64 {
	h := make([]uint64, n)
	for i := range h {
		h[i] = mix(seed<<40 | uint64(i))
	}
	return h
}

// hllOf returns an HLL of hs.
func hllOf(hs ...uint64) *HLL {
	var s HLL
	for _, h := range hs {
		s.Add(h)
	}
	return &s
}

// denseOf returns a dense HLL of hs, dense from the start.
func denseOf(hs ...uint64) *HLL {
	s := &HLL{regs: make([]uint32, denseWords), dense: true}
	for _, h := range hs {
		s.Add(h)
	}
	return s
}

// hllInvariant returns what is wrong with the representation of s, if anything: sparse
// entries in increasing index order with ranks from 1 to 40, at most sparseMax of them;
// dense registers 6 KiB of ranks up to 52.
func hllInvariant(s *HLL) error {
	if s.dense {
		if len(s.regs) != denseWords {
			return fmt.Errorf("dense in %d words, want %d", len(s.regs), denseWords)
		}
		for w := 0; w < denseWords; w += 3 {
			lo, hi := unpackGroup(s.regs[w : w+3])
			for lane := range 16 {
				if r := [2]uint64{lo, hi}[lane/8] >> (lane % 8 * regBits) & regMask; r > denseQ+1 {
					return fmt.Errorf("register %d of words %d to %d is %d", lane, w, w+2, r)
				}
			}
		}
		return nil
	}
	if len(s.regs) > sparseMax {
		return fmt.Errorf("%d sparse entries, more than %d", len(s.regs), sparseMax)
	}
	for i, e := range s.regs {
		if rank := e & regMask; rank < 1 || rank > sparseQ+1 {
			return fmt.Errorf("sparse entry %d has rank %d", i, rank)
		}
		if i > 0 && e>>regBits <= s.regs[i-1]>>regBits {
			return fmt.Errorf("sparse entry %d (%#x) after %#x", i, e, s.regs[i-1])
		}
	}
	return nil
}

// sameHLL reports whether a and b hold the same state. Both modes are canonical.
func sameHLL(a, b *HLL) bool {
	return a.dense == b.dense && slices.Equal(a.regs, b.regs)
}

// relErr returns the relative error of an estimate of n (0 for n = 0 estimated as 0).
func relErr(got uint64, n int) float64 {
	if n == 0 {
		return float64(got)
	}
	return math.Abs(float64(got)-float64(n)) / float64(n)
}

func TestHLLAccuracy(t *testing.T) {
	tests := []struct {
		n     int
		seeds int
		exact bool // sparse: linear counting over 2^25 is exact at this size
	}{
		{0, 5, true}, {1, 5, true}, {2, 5, true}, {10, 5, true}, {100, 5, true}, {1000, 5, true},
		{1536, 5, false}, {1537, 5, false}, {10_000, 5, false}, {100_000, 5, false},
		{1_000_000, 3, false}, {10_000_000, 1, false},
	}
	for _, tt := range tests {
		for seed := range uint64(tt.seeds) {
			var s HLL
			for i := range tt.n {
				s.Add(mix(seed<<40 | uint64(i)))
			}
			got := s.Estimate()
			if tt.exact && got != uint64(tt.n) || relErr(got, tt.n) > 0.03 {
				t.Errorf("n=%d seed %d: Estimate() = %d (error %.2f%%), want %d (exact: %v)",
					tt.n, seed, got, 100*relErr(got, tt.n), tt.n, tt.exact)
			}
		}
	}
}

func TestHLLDuplicatesCountOnce(t *testing.T) {
	for _, n := range []int{10, 1000, 50_000} {
		hs := hashes(1, n)
		once := hllOf(hs...)
		var thrice HLL
		for range 3 {
			for _, h := range slices.Backward(hs) {
				thrice.Add(h)
			}
		}
		if !sameHLL(&thrice, once) {
			t.Errorf("n=%d: adding each hash three times gives %d, once %d; want the same state",
				n, thrice.Estimate(), once.Estimate())
		}
	}
}

func TestHLLMergeIsUnion(t *testing.T) {
	tests := []struct {
		name         string
		a, b, shared int // hashes only in a, only in b, in both
	}{
		{"small sparse", 10, 20, 5},
		{"sparse, union sparse", 700, 700, 100},
		{"sparse, union dense", 1000, 1000, 10},
		{"sparse into dense", 5000, 300, 50},
		{"dense into sparse", 300, 5000, 50},
		{"dense and dense", 60_000, 40_000, 30_000},
		{"into empty", 0, 5000, 0},
		{"empty into", 5000, 0, 0},
	}
	for _, tt := range tests {
		onlyA, onlyB, both := hashes(1, tt.a), hashes(2, tt.b), hashes(3, tt.shared)
		a := hllOf(slices.Concat(onlyA, both)...)
		b := hllOf(slices.Concat(onlyB, both)...)
		all := hllOf(slices.Concat(onlyA, onlyB, both)...)
		wantN := tt.a + tt.b + tt.shared
		ab, ba := a.Clone(), b.Clone()
		ab.Merge(b)
		ba.Merge(a)
		for _, m := range []struct {
			name string
			got  *HLL
		}{{"a.Merge(b)", ab}, {"b.Merge(a)", ba}} {
			if err := hllInvariant(m.got); err != nil {
				t.Errorf("%s: %s: %v", tt.name, m.name, err)
			}
			if !sameHLL(m.got, all) {
				t.Errorf("%s: %s = %d (dense %v), want the state of adding all, %d (dense %v)",
					tt.name, m.name, m.got.Estimate(), m.got.dense, all.Estimate(), all.dense)
			}
			if got := m.got.Estimate(); relErr(got, wantN) > 0.03 {
				t.Errorf("%s: %s estimates %d, want %d", tt.name, m.name, got, wantN)
			}
		}
	}
}

func TestHLLMergeSelfAndNil(t *testing.T) {
	s := hllOf(hashes(1, 100)...)
	s.Merge(nil)
	s.Merge(s)
	if got := s.Estimate(); got != 100 {
		t.Errorf("after s.Merge(nil) and s.Merge(s): Estimate() = %d, want 100", got)
	}
}

func TestHLLToDenseIsExact(t *testing.T) {
	// A sparse sketch turned dense holds what adding the same hashes to a dense one gives.
	for _, n := range []int{1, 100, sparseMax} {
		hs := hashes(4, n)
		s := hllOf(hs...)
		s.toDense()
		if want := denseOf(hs...); !sameHLL(s, want) {
			t.Errorf("n=%d: sparse turned dense differs from dense", n)
		}
	}
	// Rank edge cases: the bits below the dense index all zero, and all zero below the
	// sparse index too.
	for _, h := range []uint64{0, 1, 1 << 39, 1 << 38, 1 << 51, 1 << 50, math.MaxUint64, 0xfff8000000000000} {
		s := hllOf(h)
		s.toDense()
		if want := denseOf(h); !sameHLL(s, want) {
			t.Errorf("hash %#x: sparse turned dense differs from dense", h)
		}
	}
}

func TestMaxLanes(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		a, b := r.Uint64()&groupMask, r.Uint64()&groupMask
		var want uint64
		for lane := range 8 {
			shift := lane * regBits
			want |= max(a>>shift&regMask, b>>shift&regMask) << shift
		}
		if got := maxLanes(a, b); got != want {
			t.Fatalf("maxLanes(%#x, %#x) = %#x, want %#x", a, b, got, want)
		}
	}
}

func TestHLLResetReuses(t *testing.T) {
	hs := hashes(7, 3000)
	s := hllOf(hs...)
	if !s.dense || cap(s.regs) != denseWords {
		t.Fatalf("3000 hashes: dense %v, capacity %d; want dense, %d", s.dense, cap(s.regs), denseWords)
	}
	s.Reset()
	if s.dense || len(s.regs) != 0 || s.Estimate() != 0 {
		t.Fatalf("after Reset: dense %v, %d entries, estimate %d; want sparse and empty", s.dense, len(s.regs), s.Estimate())
	}
	allocs := testing.AllocsPerRun(20, func() {
		s.Reset()
		for _, h := range hs {
			s.Add(h)
		}
	})
	if allocs != 0 || !sameHLL(s, hllOf(hs...)) {
		t.Errorf("refilling past dense after Reset: %v allocs, same state %v; want 0, true", allocs, sameHLL(s, hllOf(hs...)))
	}
}

func TestHLLAllocs(t *testing.T) {
	var empty HLL
	if allocs := testing.AllocsPerRun(100, func() { empty.Estimate(); empty.Merge(&HLL{}) }); allocs != 0 {
		t.Errorf("an empty HLL: %v allocs, want 0", allocs)
	}
	dense := hllOf(hashes(8, 5000)...)
	more := hashes(9, 1000)
	if allocs := testing.AllocsPerRun(10, func() {
		for _, h := range more {
			dense.Add(h)
		}
	}); allocs != 0 {
		t.Errorf("Add on a dense HLL: %v allocs, want 0", allocs)
	}
}

func TestHLLBinaryRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		s       *HLL
		maxSize int
	}{
		{"empty", &HLL{}, 3},
		{"one", hllOf(mix(1)), 3 + 5},
		{"ten", hllOf(hashes(1, 10)...), 3 + 10*5},
		{"sparse full", hllOf(hashes(2, 1500)...), 3 + 1500*4},
		{"dense", hllOf(hashes(3, 100_000)...), 2 + denseWords*4},
		{"dense, all zero", &HLL{regs: make([]uint32, denseWords), dense: true}, 2 + denseWords*4},
		{"rank edges", hllOf(0, math.MaxUint64, 1<<39), 3 + 3*5},
	}
	for _, tt := range tests {
		data := tt.s.AppendBinary([]byte("prefix"))[len("prefix"):]
		if len(data) > tt.maxSize {
			t.Errorf("%s: encoded in %d bytes, want at most %d", tt.name, len(data), tt.maxSize)
		}
		back := hllOf(hashes(4, 2000)...) // decoding replaces what was there
		if err := back.UnmarshalBinary(data); err != nil {
			t.Errorf("%s: UnmarshalBinary: %v", tt.name, err)
			continue
		}
		if !sameHLL(back, tt.s) {
			t.Errorf("%s: round trip estimates %d (dense %v), want %d (dense %v)",
				tt.name, back.Estimate(), back.dense, tt.s.Estimate(), tt.s.dense)
		}
	}
}

func TestHLLUnmarshalRejects(t *testing.T) {
	sparse := hllOf(1, 2, 3).AppendBinary(nil)
	dense := hllOf(hashes(1, 5000)...).AppendBinary(nil)
	highRegister := slices.Clone(dense)
	highRegister[2] |= regMask // register 0 = 63
	tests := []struct {
		name string
		data []byte
	}{
		{"nil", nil},
		{"version only", []byte{hllVersion}},
		{"unknown version", []byte{7, hllSparse, 0}},
		{"unknown mode", []byte{hllVersion, 9, 0}},
		{"sparse truncated", sparse[:len(sparse)-1]},
		{"sparse trailing byte", append(slices.Clone(sparse), 0)},
		{"too many sparse entries", []byte{hllVersion, hllSparse, 0x81, 0x0c}},
		{"sparse rank 0", []byte{hllVersion, hllSparse, 1, 0x40}},
		{"sparse rank above 40", []byte{hllVersion, hllSparse, 1, 41}},
		{"sparse index out of range", []byte{hllVersion, hllSparse, 1, 0x81, 0x80, 0x80, 0x80, 0x08}},
		{"dense truncated", dense[:len(dense)-1]},
		{"dense trailing byte", append(slices.Clone(dense), 0)},
		{"dense register above 52", highRegister},
	}
	for _, tt := range tests {
		s := hllOf(1, 2)
		if err := s.UnmarshalBinary(tt.data); err == nil {
			t.Errorf("%s: UnmarshalBinary(% x) = nil, want an error", tt.name, tt.data[:min(len(tt.data), 16)])
		}
		if s.dense || len(s.regs) != 0 {
			t.Errorf("%s: after a failed UnmarshalBinary: dense %v, %d words; want empty", tt.name, s.dense, len(s.regs))
		}
	}
}

func FuzzHLLUnmarshal(f *testing.F) {
	f.Add(hllOf().AppendBinary(nil))
	f.Add(hllOf(hashes(1, 20)...).AppendBinary(nil))
	f.Add(hllOf(0, math.MaxUint64).AppendBinary(nil))
	f.Add(hllOf(hashes(2, 3000)...).AppendBinary(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := decodeAgain(t, data, sameHLL)
		if s == nil {
			return
		}
		back := s.Clone()
		if err := hllInvariant(s); err != nil {
			t.Fatalf("decoded % x: %v", data, err)
		}
		s.Estimate()
		s.Add(mix(uint64(len(data))))
		s.Merge(back)
		back.Merge(s)
		if err := errors.Join(hllInvariant(s), hllInvariant(back)); err != nil {
			t.Fatalf("decoded % x, added to and merged: %v", data, err)
		}
	})
}

func BenchmarkHLLAddSparse(b *testing.B) {
	hs := hashes(10, 1000)
	b.Run("new callers", func(b *testing.B) {
		// Up to 1000 distinct callers, reset (keeping capacity) after each 1000.
		var s HLL
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if i%1000 == 0 {
				s.Reset()
			}
			s.Add(hs[i%1000])
		}
	})
	b.Run("repeat callers", func(b *testing.B) {
		s := hllOf(hs...)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			s.Add(hs[i%1000])
		}
	})
}

func BenchmarkHLLAddDense(b *testing.B) {
	hs := hashes(11, 1<<16)
	s := hllOf(hs...)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Add(hs[i&(1<<16-1)] + uint64(i))
	}
}

func BenchmarkHLLMerge(b *testing.B) {
	// Merging the same sketch again costs what the first merge does, less any growth.
	cases := []struct {
		name       string
		into, from *HLL
	}{
		{"dense into dense", hllOf(hashes(12, 50_000)...), hllOf(hashes(13, 50_000)...)},
		{"sparse 100 into dense", hllOf(hashes(12, 50_000)...), hllOf(hashes(14, 100)...)},
		{"sparse 100 into sparse 500", hllOf(hashes(15, 500)...), hllOf(hashes(14, 100)...)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.into.Merge(c.from)
			}
		})
	}
}

func BenchmarkHLLEstimate(b *testing.B) {
	s := hllOf(hashes(16, 50_000)...)
	b.ReportAllocs()
	for b.Loop() {
		s.Estimate()
	}
}
