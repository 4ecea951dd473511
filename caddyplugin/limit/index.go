package limit

// hashIndex maps an entry's 64-bit index hash to its position in a shard's buckets or
// counters. It is an open-addressing table with linear probing, slots of 16 bytes (four
// to a cache line), at most half full: a lookup usually reads one cache line, where a
// Go map reads its header, directory, table and group first, each a likely cache miss
// in a gateway whose limiter state is rarely in the CPU cache. The hashes are already
// random (maphash), so the table does not hash them again.
type hashIndex struct {
	slots []indexSlot // len is a power of two, or zero
	n     int         // slots in use
}

// indexSlot holds a hash and its position plus one; zero is an empty slot.
type indexSlot struct {
	h   uint64
	pos int32
}

// home returns the slot where h's probe starts. The shard was picked by the low bits of
// the caller key's hash, which h contains, so the entries of one shard and policy share
// h's low bits, and the table multiplies to take its slot from all of them (Fibonacci
// hashing).
func (x *hashIndex) home(h uint64) int {
	return int((h * 0x9e3779b97f4a7c15) >> 32 & uint64(len(x.slots)-1))
}

// get returns the position stored for h.
func (x *hashIndex) get(h uint64) (int32, bool) {
	if len(x.slots) == 0 {
		return 0, false
	}
	mask := len(x.slots) - 1
	for i := x.home(h); ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.pos == 0 {
			return 0, false
		}
		if s.h == h {
			return s.pos - 1, true
		}
	}
}

// set stores pos for h, replacing what was stored for it.
func (x *hashIndex) set(h uint64, pos int32) {
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	mask := len(x.slots) - 1
	for i := x.home(h); ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.pos == 0 {
			*s = indexSlot{h: h, pos: pos + 1}
			x.n++
			return
		}
		if s.h == h {
			s.pos = pos + 1
			return
		}
	}
}

// delete removes h, shifting back the slots after it that probed past it, so that no
// tombstones are left behind.
func (x *hashIndex) delete(h uint64) {
	if len(x.slots) == 0 {
		return
	}
	mask := len(x.slots) - 1
	i := x.home(h)
	for ; x.slots[i].h != h || x.slots[i].pos == 0; i = (i + 1) & mask {
		if x.slots[i].pos == 0 {
			return // not there
		}
	}
	for j := (i + 1) & mask; x.slots[j].pos != 0; j = (j + 1) & mask {
		k := x.home(x.slots[j].h)
		// The slot at j may move back to i unless its home lies cyclically in (i, j].
		if (i < j && (k <= i || k > j)) || (i > j && k <= i && k > j) {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = indexSlot{}
	x.n--
}

// len returns how many hashes the index holds.
func (x *hashIndex) len() int { return x.n }

// grow doubles the table (8 slots at first) and puts every slot back.
func (x *hashIndex) grow() {
	old := x.slots
	x.slots = make([]indexSlot, max(8, 2*len(old)))
	x.n = 0
	for _, s := range old {
		if s.pos != 0 {
			x.set(s.h, s.pos-1)
		}
	}
}
