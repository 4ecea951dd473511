package detector

// ring keeps the buckets of one series at one resolution: the most recent n slots, stored
// sparsely (only slots that had calls) in a circular buffer ordered by slot, which grows
// up to n entries and then reuses the oldest bucket in place, sketches' memory included.
type ring struct {
	buf  []bucket
	head int // index of the oldest bucket
	size int
	last int64 // the newest bucket's slot (when size > 0), kept here so that a query can
	// tell without touching the buffer whether the ring has anything in its window
}

// maxResolutions bounds the rings of a series.
const maxResolutions = 3

// resolution describes one ring of a view.
type resolution struct {
	secs  int64 // bucket width in seconds
	slots int64 // number of buckets kept; horizon = secs * slots
}

func (r *ring) at(i int) *bucket {
	j := r.head + i
	if j >= len(r.buf) {
		j -= len(r.buf)
	}
	return &r.buf[j]
}

// bucketFor returns the bucket for slot, creating it when needed; nil when the slot is
// older than the ring keeps (n slots back from the newest bucket).
func (r *ring) bucketFor(slot, n int64) *bucket {
	if r.size > 0 {
		last := r.at(r.size - 1)
		if last.slot == slot {
			return last
		}
		if slot < last.slot {
			if slot <= last.slot-n {
				return nil
			}
			return r.insert(slot, n)
		}
	}
	// A new newest slot: expire what falls out of the horizon, then append.
	for r.size > 0 && r.at(0).slot <= slot-n {
		r.head = (r.head + 1) % len(r.buf)
		r.size--
	}
	if r.size == len(r.buf) {
		r.grow(n)
	}
	b := r.at(r.size)
	r.size++
	b.reset(slot)
	r.last = slot
	return b
}

// insert adds a bucket for a slot older than the newest one (calls recorded with past
// times); rare, so a linear shift is fine.
func (r *ring) insert(slot, n int64) *bucket {
	// Binary search for the first bucket with slot >= the wanted one.
	lo, hi := 0, r.size
	for lo < hi {
		m := (lo + hi) / 2
		if r.at(m).slot < slot {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < r.size && r.at(lo).slot == slot {
		return r.at(lo)
	}
	if r.size == len(r.buf) {
		if int64(r.size) >= n {
			// Full: the oldest bucket must go; if the new one would be the oldest, drop it.
			if lo == 0 {
				return nil
			}
			r.head = (r.head + 1) % len(r.buf)
			r.size--
			lo--
		} else {
			r.grow(n)
		}
	}
	// Take the free bucket after the end and swap it down to position lo, so that every
	// bucket keeps its own sketch memory.
	r.size++
	for i := r.size - 1; i > lo; i-- {
		a, b := r.at(i), r.at(i-1)
		*a, *b = *b, *a
	}
	b := r.at(lo)
	b.reset(slot)
	return b
}

func (r *ring) grow(n int64) {
	c := 2 * len(r.buf)
	if c < 4 {
		c = 4
	}
	if int64(c) > n {
		c = int(n)
	}
	if c <= len(r.buf) {
		return
	}
	nb := make([]bucket, c)
	for i := 0; i < r.size; i++ {
		nb[i] = *r.at(i)
	}
	r.buf, r.head = nb, 0
}

// window calls fn for every bucket with from < slot <= to, oldest first.
func (r *ring) window(from, to int64, fn func(b *bucket)) {
	if r.size == 0 {
		return
	}
	if last := r.last; last <= to {
		// The window reaches the newest bucket (the usual case: it ends now): walk back
		// from the end, which costs the buckets in the window and nothing more.
		if last <= from {
			return
		}
		i := r.size - 1
		for i > 0 && r.at(i-1).slot > from {
			i--
		}
		for ; i < r.size; i++ {
			fn(r.at(i))
		}
		return
	}
	// Binary search for the first slot > from.
	lo, hi := 0, r.size
	for lo < hi {
		m := (lo + hi) / 2
		if r.at(m).slot <= from {
			lo = m + 1
		} else {
			hi = m
		}
	}
	for i := lo; i < r.size; i++ {
		b := r.at(i)
		if b.slot > to {
			return
		}
		fn(b)
	}
}

// newest returns the newest slot in the ring, or false when empty.
func (r *ring) newest() (int64, bool) {
	if r.size == 0 {
		return 0, false
	}
	return r.at(r.size - 1).slot, true
}
