package sketch

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Layout of HLL.
const (
	// Dense mode: 2^13 registers of 6 bits, each the largest rank seen among the hashes of
	// its index (the top 13 bits); a rank is 1 + the leading zeros of the 51 bits below
	// the index, 1 to 52.
	denseP     = 13
	denseQ     = 64 - denseP
	registers  = 1 << denseP
	regBits    = 6
	regMask    = 1<<regBits - 1
	denseWords = registers * regBits / 32 // 1536 uint32 words, 6 KiB

	// Sparse mode: one uint32 entry per distinct 25-bit index (the top 25 bits of the
	// hash), the index above the 6-bit rank of the 39 bits below it (1 to 40), sorted.
	// An entry holds all that dense mode would keep of its hashes, so converting is exact.
	sparseP   = 25
	sparseQ   = 64 - sparseP
	sparseMax = denseWords // more entries than this take more room than dense mode
)

// HLL is a distinct-count sketch (HyperLogLog) of 64-bit hashes: Estimate is the number of
// distinct hashes added, give or take one, up to 1536 of them, and above that within about
// 1% (3% for about 997 sketches in 1000), up to tens of millions.
//
// It starts sparse: a sorted slice of one uint32 per distinct hash (HyperLogLog++'s sparse
// encoding at precision 25), estimated by linear counting over 2^25, which is exact in
// practice while the slice is small. An empty HLL is 32 bytes and allocates nothing; ten
// callers take 64 bytes more. Once the sparse slice would pass 1536 entries (6 KiB), the
// sketch turns dense: 2^13 packed 6-bit registers in the same 6 KiB, estimated with Otmar
// Ertl's improved raw estimator ("New cardinality estimation algorithms for HyperLogLog
// sketches", 2017), which is unbiased over the whole range without empirical bias tables.
// So an HLL never takes more than 6 KiB. Dense, its standard error is at most
// 1.04/sqrt(2^13), about 1.15%, so 3% is 2.6 standard errors and a few dense sketches in
// 1000 are off by more (the package documentation has measured figures); a tighter bound
// needs more registers.
//
// The hashes must be well mixed (every bit independent and equally likely 0 or 1), like
// those of xxhash or hash/maphash: the top 13 to 25 bits pick a register and the rest give
// the rank, so raw ids, counters or weak hashes skew the estimate.
//
// The zero value is an empty HLL ready to use. Copy one with Clone: a plain assignment
// shares its memory. An HLL is not safe for concurrent use.
type HLL struct {
	// regs holds the sparse entries, sorted, or, when dense is set, the packed registers:
	// register i in bits 6i to 6i+5 of the words read as one little-endian bit string.
	regs  []uint32
	dense bool
}

// sparseEntry returns the sparse entry of hash.
func sparseEntry(hash uint64) uint32 {
	rank := bits.LeadingZeros64(hash<<sparseP|1<<(sparseP-1)) + 1
	return uint32(hash>>sparseQ)<<regBits | uint32(rank)
}

// denseRegister returns the register and rank of hash in dense mode.
func denseRegister(hash uint64) (reg, rank uint32) {
	return uint32(hash >> denseQ), uint32(bits.LeadingZeros64(hash<<denseP|1<<(denseP-1))) + 1
}

// entryRegister returns the register and rank in dense mode of the hashes of a sparse entry.
func entryRegister(e uint32) (reg, rank uint32) {
	const extra = sparseP - denseP // the index bits that dense mode counts in the rank
	index := e >> regBits
	if low := index & (1<<extra - 1); low != 0 {
		return index >> extra, uint32(bits.LeadingZeros32(low<<(32-extra))) + 1
	}
	return index >> extra, extra + e&regMask
}

// Add adds a hash to the set. On a dense sketch it allocates nothing; on a sparse one it
// may grow the slice (doubling, up to 6 KiB).
func (s *HLL) Add(hash uint64) {
	if s.dense {
		s.setMax(denseRegister(hash))
		return
	}
	s.addEntry(sparseEntry(hash))
}

// addEntry adds the sparse entry e to a sparse sketch, turning it dense if it gets too big.
func (s *HLL) addEntry(e uint32) {
	i, _ := slices.BinarySearch(s.regs, e&^regMask) // ranks are never 0: the first entry of the index
	if i < len(s.regs) && s.regs[i]>>regBits == e>>regBits {
		s.regs[i] = max(s.regs[i], e)
		return
	}
	if len(s.regs) == sparseMax {
		s.toDense()
		s.setMax(entryRegister(e))
		return
	}
	s.grow(len(s.regs) + 1)
	s.regs = s.regs[:len(s.regs)+1]
	copy(s.regs[i+1:], s.regs[i:])
	s.regs[i] = e
}

// grow makes room for n sparse entries (n <= sparseMax), doubling the capacity up to 6 KiB.
func (s *HLL) grow(n int) {
	if n <= cap(s.regs) {
		return
	}
	regs := make([]uint32, len(s.regs), min(sparseMax, max(n, 2*cap(s.regs), 4)))
	copy(regs, s.regs)
	s.regs = regs
}

// toDense turns a sparse sketch dense, in its own memory if it has 6 KiB of capacity.
func (s *HLL) toDense() {
	entries := s.regs
	if cap(s.regs) >= denseWords {
		var spare [sparseMax]uint32
		entries = spare[:copy(spare[:], s.regs)]
		s.regs = s.regs[:denseWords]
		clear(s.regs)
	} else {
		s.regs = make([]uint32, denseWords)
	}
	s.dense = true
	for _, e := range entries {
		s.setMax(entryRegister(e))
	}
}

// setMax raises register reg of a dense sketch to rank, if it is below.
func (s *HLL) setMax(reg, rank uint32) {
	r := s.regs
	bit := reg * regBits
	w, shift := bit/32, bit%32
	if shift <= 32-regBits { // within word w
		if r[w]>>shift&regMask < rank {
			r[w] = r[w]&^(regMask<<shift) | rank<<shift
		}
		return
	}
	x := uint64(r[w]) | uint64(r[w+1])<<32 // across words w and w+1
	if uint32(x>>shift)&regMask < rank {
		x = x&^(regMask<<shift) | uint64(rank)<<shift
		r[w], r[w+1] = uint32(x), uint32(x>>32)
	}
}

// Register groups: 16 registers fill 3 words exactly, read as two uint64 of 8 registers.
const groupMask = 1<<(8*regBits) - 1

// unpackGroup returns the registers of words w[0:3] as two 8-register halves.
func unpackGroup(w []uint32) (lo, hi uint64) {
	x := uint64(w[0]) | uint64(w[1])<<32
	return x & groupMask, x>>(8*regBits) | uint64(w[2])<<16
}

// packGroup is the inverse of unpackGroup.
func packGroup(w []uint32, lo, hi uint64) {
	w[0], w[1], w[2] = uint32(lo), uint32(lo>>32)|uint32(hi<<16), uint32(hi>>16)
}

// maxLanes returns the lane-wise maximum of a and b, 8 lanes of 6 bits (SWAR: the high bit
// of each lane, forced on in a and off in b, absorbs the borrow of the lane's subtraction).
func maxLanes(a, b uint64) uint64 {
	const high = 0x820820820820             // the top bit of each lane
	t := (a | high) - (b &^ high)           // top bit: a's low 5 bits >= b's
	ge := (a&^b | ^(a^b)&t) & high          // top bit: a >= b
	mask := (ge >> (regBits - 1)) * regMask // the lanes where a >= b, all ones
	return a&mask | b&^mask
}

// Merge adds every hash of o to s, as if they had been added to s one by one. o is not
// changed; a nil o is empty. Merging into a dense sketch allocates nothing.
func (s *HLL) Merge(o *HLL) {
	if o == nil || o == s || len(o.regs) == 0 {
		return
	}
	switch {
	case s.dense && o.dense:
		for w := 0; w < denseWords; w += 3 {
			a, b := s.regs[w:w+3], o.regs[w:w+3]
			alo, ahi := unpackGroup(a)
			blo, bhi := unpackGroup(b)
			packGroup(a, maxLanes(alo, blo), maxLanes(ahi, bhi))
		}
	case o.dense:
		s.toDense()
		s.Merge(o)
	case s.dense:
		for _, e := range o.regs {
			s.setMax(entryRegister(e))
		}
	default:
		s.mergeSparse(o.regs)
	}
}

// mergeSparse merges the sorted sparse entries o into a sparse sketch.
func (s *HLL) mergeSparse(o []uint32) {
	size := len(s.regs) + len(o)
	for i, j := 0, 0; i < len(s.regs) && j < len(o); {
		switch a, b := s.regs[i]>>regBits, o[j]>>regBits; {
		case a < b:
			i++
		case b < a:
			j++
		default:
			size--
			i++
			j++
		}
	}
	if size > sparseMax {
		s.toDense()
		for _, e := range o {
			s.setMax(entryRegister(e))
		}
		return
	}
	// From the back, so that no entry of s is overwritten before it is read.
	i, j := len(s.regs)-1, len(o)-1
	s.grow(size)
	s.regs = s.regs[:size]
	for w := size - 1; j >= 0; w-- {
		switch {
		case i >= 0 && s.regs[i]>>regBits > o[j]>>regBits:
			s.regs[w] = s.regs[i]
			i--
		case i >= 0 && s.regs[i]>>regBits == o[j]>>regBits:
			s.regs[w] = max(s.regs[i], o[j])
			i--
			j--
		default:
			s.regs[w] = o[j]
			j--
		}
	}
}

// Estimate returns the estimated number of distinct hashes added.
func (s *HLL) Estimate() uint64 {
	if !s.dense {
		const m = 1 << sparseP
		return uint64(math.Round(-m * math.Log1p(-float64(len(s.regs))/m)))
	}
	var hist [regMask + 1]int // how many registers hold each rank
	for w := 0; w < denseWords; w += 3 {
		lo, hi := unpackGroup(s.regs[w : w+3])
		for range 8 {
			hist[lo&regMask]++
			hist[hi&regMask]++
			lo >>= regBits
			hi >>= regBits
		}
	}
	return uint64(math.Round(ertlEstimate(&hist)))
}

// ertlEstimate is Ertl's improved raw estimate (algorithm 6 of the paper) from the number
// of registers holding each rank.
func ertlEstimate(hist *[regMask + 1]int) float64 {
	const m = registers
	z := m * ertlTau(1-float64(hist[denseQ+1])/m)
	for k := denseQ; k >= 1; k-- {
		z = 0.5 * (z + float64(hist[k]))
	}
	z += m * ertlSigma(float64(hist[0])/m)
	return m * m / (2 * math.Ln2 * z)
}

// ertlSigma is the paper's sigma(x) = x + sum over k >= 1 of x^(2^k) * 2^(k-1).
func ertlSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	z, y := x, 1.0
	for {
		x *= x
		prev := z
		z += x * y
		y += y
		if z == prev {
			return z
		}
	}
}

// ertlTau is the paper's tau(x) = (1 - x - sum over k >= 1 of (1 - x^(2^-k))^2 * 2^-k) / 3.
func ertlTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	z, y := 1-x, 1.0
	for {
		x = math.Sqrt(x)
		prev := z
		y *= 0.5
		z -= (1 - x) * (1 - x) * y
		if z == prev {
			return z / 3
		}
	}
}

// Reset empties s, keeping its allocated capacity (at most 6 KiB) for reuse. A dense
// sketch becomes sparse again, so the next small set is counted exactly.
func (s *HLL) Reset() {
	s.regs = s.regs[:0]
	s.dense = false
}

// Clone returns a copy of s that shares no memory with it, with no spare capacity.
func (s *HLL) Clone() *HLL {
	return &HLL{regs: slices.Clip(slices.Clone(s.regs)), dense: s.dense}
}

// hllVersion is the first byte of HLL's binary encoding.
const hllVersion = 1

// Modes of HLL's binary encoding, the byte after the version.
const (
	hllSparse = 0
	hllDense  = 1
)

// AppendBinary appends the binary encoding of s to b and returns the extended slice. The
// encoding is a version byte and a mode byte, then for a sparse sketch the number of
// entries and, for each, its index's gap from the previous one above its rank, as
// uvarints (2 to 4 bytes an entry); for a dense one the 6 KiB of registers.
func (s *HLL) AppendBinary(b []byte) []byte {
	if s.dense {
		b = append(b, hllVersion, hllDense)
		for _, w := range s.regs {
			b = binary.LittleEndian.AppendUint32(b, w)
		}
		return b
	}
	b = append(b, hllVersion, hllSparse)
	b = binary.AppendUvarint(b, uint64(len(s.regs)))
	next := uint32(0) // the smallest index the next entry can have
	for _, e := range s.regs {
		index := e >> regBits
		b = binary.AppendUvarint(b, uint64(index-next)<<regBits|uint64(e&regMask))
		next = index + 1
	}
	return b
}

// UnmarshalBinary replaces s with the HLL encoded in b by AppendBinary, reusing s's
// capacity. It returns an error, and leaves s empty, if b is not such an encoding:
// truncated, corrupt, of another version or with bytes after the end.
func (s *HLL) UnmarshalBinary(b []byte) error {
	return unmarshal(s, "HLL", hllVersion, b)
}

// decode reads the encoding that follows the version byte into the empty s.
func (s *HLL) decode(r *decoder) error {
	switch mode := r.byte(); {
	case r.err != nil:
		return r.err
	case mode == hllDense:
		return s.decodeDense(r)
	case mode == hllSparse:
		return s.decodeSparse(r)
	default:
		return fmt.Errorf("unknown mode %d", mode)
	}
}

func (s *HLL) decodeSparse(r *decoder) error {
	n := r.uvarint()
	if r.err == nil && n > sparseMax {
		return fmt.Errorf("%d sparse entries, more than %d", n, sparseMax)
	}
	s.grow(int(n))
	next := uint64(0)
	for range n {
		v := r.uvarint()
		index, rank := next+v>>regBits, v&regMask
		switch {
		case r.err != nil:
			return r.err
		case index >= 1<<sparseP:
			return fmt.Errorf("sparse index %d out of range", index)
		case rank < 1 || rank > sparseQ+1:
			return fmt.Errorf("sparse rank %d out of range", rank)
		}
		s.regs = append(s.regs, uint32(index<<regBits|rank))
		next = index + 1
	}
	return nil
}

func (s *HLL) decodeDense(r *decoder) error {
	data := r.bytes(denseWords * 4)
	if r.err != nil {
		return r.err
	}
	if cap(s.regs) < denseWords {
		s.regs = make([]uint32, 0, denseWords)
	}
	for w := range denseWords {
		s.regs = append(s.regs, binary.LittleEndian.Uint32(data[4*w:]))
	}
	for w := 0; w < denseWords; w += 3 {
		lo, hi := unpackGroup(s.regs[w : w+3])
		for range 8 {
			if lo&regMask > denseQ+1 || hi&regMask > denseQ+1 {
				return fmt.Errorf("a register in words %d to %d is above the largest rank %d", w, w+2, denseQ+1)
			}
			lo >>= regBits
			hi >>= regBits
		}
	}
	s.dense = true
	return nil
}
