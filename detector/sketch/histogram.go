package sketch

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Accuracy of Histogram.
const (
	// HistogramRelativeAccuracy is the relative error bound of Histogram.Quantile for values
	// in [1, HistogramMaxValue]: a reported quantile is within 1% of the exact one.
	HistogramRelativeAccuracy = 0.01
	// HistogramMaxValue is the largest value a Histogram tells apart; larger values are
	// counted in the top bin and reported as about HistogramMaxValue. With latency in
	// microseconds it is almost three hours.
	HistogramMaxValue = 1e10
)

// Bin layout. A Histogram bin is a run of uint32 words that share the bin's key in their top
// keyBits bits; the low countBits bits of the words are the digits of the bin's count in
// base 2^countBits, least significant first, and the last digit is never zero. Almost every
// bin is one word (a count below 2^21); a count up to 2^63 takes three, 2^64-1 four. Keys
// sort the words, so a lower-bound search on key<<countBits finds a bin's first word.
const (
	countBits = 21
	keyBits   = 32 - countBits
	digitMask = 1<<countBits - 1
)

var (
	// gamma is the ratio between the bounds of one bin: a value v >= 1 falls in bin
	// ceil(log_gamma(v)), covering (gamma^(i-1), gamma^i], and is reported as the point of
	// that range that is within HistogramRelativeAccuracy of both ends.
	gamma      = (1 + HistogramRelativeAccuracy) / (1 - HistogramRelativeAccuracy)
	invLnGamma = 1 / math.Log(gamma)
	// maxKey is the key of HistogramMaxValue: key 0 is the zero bin, key i+1 the bin i.
	maxKey = logKey(HistogramMaxValue)
)

// logKey returns the key of the bin of v >= 1.
func logKey(v float64) uint32 {
	return uint32(math.Ceil(math.Log(v)*invLnGamma)) + 1
}

// binKey returns the key of the bin that counts v.
func binKey(v float64) uint32 {
	if !(v >= 1) { // below 1, negative or NaN
		return 0
	}
	if v >= HistogramMaxValue {
		return maxKey
	}
	return logKey(v)
}

// binValue returns the value reported for the values counted in bin key.
func binValue(key uint32) float64 {
	if key == 0 {
		return 0
	}
	return math.Exp(float64(key-1)/invLnGamma) * 2 / (gamma + 1)
}

// Histogram is a quantile sketch of non-negative values (DDSketch's logarithmic bins): it
// answers any quantile within 1% relative error of the exact nearest-rank one, for values
// from 1 to HistogramMaxValue, whatever the number of values. Values below 1, negative
// values and NaN are counted as 0 and reported as 0; values above HistogramMaxValue are
// counted in the top bin. The store passes latency in microseconds.
//
// Only non-empty bins are stored, as one uint32 word each (an 11-bit key and a 21-bit
// count; a larger count spills into more words) in a slice sorted by key: an empty
// Histogram is 32 bytes and allocates nothing, ten distinct values take 64 bytes more (the
// slice's capacity grows by doubling), and the largest, every one of the 1154 bins filled,
// 4.5 to 5.3 KiB. Add on an existing bin is a binary search and an increment; a new bin is
// inserted in place, growing the slice when it is full, so once the capacity is there
// nothing allocates.
//
// The zero value is an empty Histogram ready to use. Copy one with Clone: a plain
// assignment shares its memory. A Histogram is not safe for concurrent use.
type Histogram struct {
	bins  []uint32 // the non-empty bins in key order (see countBits)
	count uint64   // the number of values, the sum of the bins' counts
}

// Add counts the value v once.
func (h *Histogram) Add(v float64) {
	h.AddN(v, 1)
}

// Bin identifies the bin a value falls in. Computing it once and adding it to several
// histograms (AddBin) saves the logarithm each Add computes.
type Bin uint32

// BinOf returns the bin of the value v.
func BinOf(v float64) Bin { return Bin(binKey(v)) }

// AddBin counts one value of bin b.
func (h *Histogram) AddBin(b Bin) { h.addKey(uint32(b), 1) }

// AddN counts the value v n times. Counts saturate at the largest uint64 (beyond which
// quantiles are no longer exact).
func (h *Histogram) AddN(v float64, n uint64) {
	if n == 0 {
		return
	}
	h.addKey(binKey(v), n)
}

func (h *Histogram) addKey(key uint32, n uint64) {
	h.count = addSat(h.count, n)
	i, _ := slices.BinarySearch(h.bins, key<<countBits) // the bin's first word, if it has one
	if i == len(h.bins) || h.bins[i]>>countBits != key {
		if n <= digitMask {
			h.bins = slices.Insert(h.bins, i, key<<countBits|uint32(n))
			return
		}
		h.bins = slices.Insert(h.bins, i, key<<countBits)
		h.setCount(i, n)
		return
	}
	if n <= digitMask && h.bins[i]&digitMask+uint32(n) <= digitMask {
		h.bins[i] += uint32(n) // the common case: no carry into a further digit
		return
	}
	_, c, _ := nextBin(h.bins, i)
	h.setCount(i, addSat(c, n))
}

// setCount writes count c (> 0) into the bin whose first word is at i, resizing the bin
// to the number of digits c needs.
func (h *Histogram) setCount(i int, c uint64) {
	key, _, end := nextBin(h.bins, i)
	have, need := end-i, digits(c)
	if need > have {
		h.bins = slices.Insert(h.bins, end, make([]uint32, need-have)...)
	}
	for j := range need {
		h.bins[i+j] = key<<countBits | uint32(c&digitMask)
		c >>= countBits
	}
}

// digits returns the number of words a bin of count c takes.
func digits(c uint64) int {
	return max(1, (bits.Len64(c)+countBits-1)/countBits)
}

// nextBin reads the bin whose first word is at i: its key, its count and the index of
// the word after it.
func nextBin(bins []uint32, i int) (key uint32, c uint64, next int) {
	key = bins[i] >> countBits
	shift := 0
	for next = i; next < len(bins) && bins[next]>>countBits == key; next++ {
		c |= uint64(bins[next]&digitMask) << shift
		shift += countBits
	}
	return key, c, next
}

// prevBin reads the bin whose last word is at end-1: its key, its count and the index of
// its first word.
func prevBin(bins []uint32, end int) (key uint32, c uint64, start int) {
	key = bins[end-1] >> countBits
	start = end - 1
	for start > 0 && bins[start-1]>>countBits == key {
		start--
	}
	key, c, _ = nextBin(bins[:end], start)
	return key, c, start
}

// addSat returns a+b, or the largest uint64 if that overflows.
func addSat(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

// Merge adds every value counted in o to h, as if they had been added to h one by one.
// o is not changed; a nil o is empty. Once h has the capacity for the merged bins, Merge
// allocates nothing.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.count == 0 {
		return
	}
	if o == h {
		o = h.Clone()
	}
	if h.count <= digitMask && o.count <= digitMask && h.count+o.count <= digitMask {
		if 4*len(o.bins) < len(h.bins) {
			h.mergeFew(o)
		} else {
			h.mergeSmall(o)
		}
		return
	}
	size := h.mergedSize(o)
	// Merge from the back, so that no bin of h is overwritten before it is read. Once o is
	// used up, the bins of h left are already in place.
	i, j, w := len(h.bins), len(o.bins), size
	h.bins = slices.Grow(h.bins, size-len(h.bins))[:size]
	for j > 0 {
		var key uint32
		var c uint64
		kb := o.bins[j-1] >> countBits
		switch {
		case i > 0 && h.bins[i-1]>>countBits > kb:
			key, c, i = prevBin(h.bins, i)
		case i > 0 && h.bins[i-1]>>countBits == kb:
			var ca, cb uint64
			key, ca, i = prevBin(h.bins, i)
			_, cb, j = prevBin(o.bins, j)
			c = addSat(ca, cb)
		default:
			key, c, j = prevBin(o.bins, j)
		}
		for d := digits(c) - 1; d >= 0; d-- {
			w--
			h.bins[w] = key<<countBits | uint32(c>>(countBits*d)&digitMask)
		}
	}
	h.count = addSat(h.count, o.count)
}

// mergeSmall is Merge for a total count below 2^21, the common case: every bin is one
// word, so words merge as they are.
func (h *Histogram) mergeSmall(o *Histogram) {
	size := len(h.bins) + len(o.bins)
	for i, j := 0, 0; i < len(h.bins) && j < len(o.bins); {
		switch ka, kb := h.bins[i]>>countBits, o.bins[j]>>countBits; {
		case ka < kb:
			i++
		case kb < ka:
			j++
		default:
			size--
			i++
			j++
		}
	}
	i, j := len(h.bins)-1, len(o.bins)-1
	h.bins = slices.Grow(h.bins, size-len(h.bins))[:size]
	for w := size - 1; j >= 0; w-- {
		switch {
		case i >= 0 && h.bins[i]>>countBits > o.bins[j]>>countBits:
			h.bins[w] = h.bins[i]
			i--
		case i >= 0 && h.bins[i]>>countBits == o.bins[j]>>countBits:
			h.bins[w] = h.bins[i] + o.bins[j]&digitMask
			i--
			j--
		default:
			h.bins[w] = o.bins[j]
			j--
		}
	}
	h.count += o.count
}

// mergeFew is mergeSmall for an o of a few bins merged into a larger h (a bucket of a few
// calls into a window's aggregate): each bin of o is found by binary search, so that
// merging many small histograms into one costs the size of the small ones, not that of
// the large one each time. Every bin is one word (counts fit digitMask).
func (h *Histogram) mergeFew(o *Histogram) {
	lo := 0
	for _, w := range o.bins {
		key := w >> countBits
		i, found := slices.BinarySearchFunc(h.bins[lo:], key, func(b, k uint32) int { return cmp.Compare(b>>countBits, k) })
		i += lo
		if found {
			h.bins[i] += w & digitMask
		} else {
			h.bins = slices.Insert(h.bins, i, w)
		}
		lo = i + 1
	}
	h.count += o.count
}

// mergedSize returns the number of words the bins of h take once o is merged in.
func (h *Histogram) mergedSize(o *Histogram) int {
	size := len(h.bins)
	i := 0
	for j := 0; j < len(o.bins); {
		key, cb, nj := nextBin(o.bins, j)
		for i < len(h.bins) && h.bins[i]>>countBits < key {
			i++
		}
		if i < len(h.bins) && h.bins[i]>>countBits == key {
			_, ca, ni := nextBin(h.bins, i)
			size += digits(addSat(ca, cb)) - (ni - i)
			i = ni
		} else {
			size += digits(cb)
		}
		j = nj
	}
	return size
}

// Count returns the number of values counted.
func (h *Histogram) Count() uint64 {
	return h.count
}

// Quantile returns the q-quantile of the values counted (q from 0 to 1; 0.99 for p99):
// within 1% relative error of the exact nearest-rank quantile, the value of 1-based rank
// ceil(q*n) in sorted order (rank 1 for q = 0). It returns false if h is empty or q is NaN;
// q outside [0, 1] is clamped.
func (h *Histogram) Quantile(q float64) (float64, bool) {
	if h.count == 0 || math.IsNaN(q) {
		return 0, false
	}
	rank := h.count
	if r := math.Ceil(q * float64(h.count)); r < float64(h.count) {
		rank = max(1, uint64(max(r, 0)))
	}
	var seen uint64
	key := uint32(0)
	for i := 0; i < len(h.bins); {
		var c uint64
		key, c, i = nextBin(h.bins, i)
		seen = addSat(seen, c)
		if seen >= rank {
			break
		}
	}
	return binValue(key), true
}

// CountAtMost returns about how many values counted are at most v: it counts every value
// in the bin of v and below, so it never misses a value <= v and may include values up to
// 2% above v (and, for v below 1, every value below 1). It is 0 for negative or NaN v.
func (h *Histogram) CountAtMost(v float64) uint64 {
	if !(v >= 0) {
		return 0
	}
	limit := binKey(v)
	var n uint64
	for i := 0; i < len(h.bins); {
		key, c, next := nextBin(h.bins, i)
		if key > limit {
			break
		}
		n = addSat(n, c)
		i = next
	}
	return n
}

// Reset empties h, keeping its allocated capacity for reuse.
func (h *Histogram) Reset() {
	h.bins = h.bins[:0]
	h.count = 0
}

// Clone returns a copy of h that shares no memory with it, with no spare capacity.
func (h *Histogram) Clone() *Histogram {
	return &Histogram{bins: slices.Clip(slices.Clone(h.bins)), count: h.count}
}

// histogramVersion is the first byte of Histogram's binary encoding.
const histogramVersion = 1

// AppendBinary appends the binary encoding of h to b and returns the extended slice. The
// encoding is a version byte, the number of bins, then for each bin in key order the gap
// from the previous key and the count, all as uvarints: a few bytes per non-empty bin.
func (h *Histogram) AppendBinary(b []byte) []byte {
	b = append(b, histogramVersion)
	nbins := 0
	for i := 0; i < len(h.bins); nbins++ {
		_, _, i = nextBin(h.bins, i)
	}
	b = binary.AppendUvarint(b, uint64(nbins))
	next := uint32(0) // the smallest key the next bin can have
	for i := 0; i < len(h.bins); {
		key, c, end := nextBin(h.bins, i)
		b = binary.AppendUvarint(b, uint64(key-next))
		b = binary.AppendUvarint(b, c)
		next, i = key+1, end
	}
	return b
}

// UnmarshalBinary replaces h with the Histogram encoded in b by AppendBinary, reusing h's
// capacity. It returns an error, and leaves h empty, if b is not such an encoding:
// truncated, corrupt, of another version or with bytes after the end.
func (h *Histogram) UnmarshalBinary(b []byte) error {
	return unmarshal(h, "histogram", histogramVersion, b)
}

// decode reads the encoding that follows the version byte into the empty h.
func (h *Histogram) decode(r *decoder) error {
	nbins := r.uvarint()
	if r.err == nil && nbins > uint64(maxKey)+1 {
		return fmt.Errorf("%d bins, more than the %d there are", nbins, maxKey+1)
	}
	// A bin takes a word or more, and two bytes or more of input.
	h.bins = slices.Grow(h.bins, int(min(nbins, uint64(len(r.b)/2))))
	next := uint64(0)
	for range nbins {
		gap, c := r.uvarint(), r.uvarint()
		key := next + gap
		switch {
		case r.err != nil:
			return r.err
		case gap > uint64(maxKey) || key > uint64(maxKey):
			return fmt.Errorf("bin key %d + %d above the top bin %d", next, gap, maxKey)
		case c == 0:
			return fmt.Errorf("empty bin %d", key)
		}
		h.bins = append(h.bins, uint32(key)<<countBits)
		h.setCount(len(h.bins)-1, c)
		h.count = addSat(h.count, c)
		next = key + 1
	}
	return nil
}
