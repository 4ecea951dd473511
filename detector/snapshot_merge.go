package detector

import (
	"cmp"
	"hash/maphash"
	"slices"
	"sync/atomic"
)

// restoreChunk is how many series or callers are added under one lock of their view or
// shard, so that recording is never held up for long while a snapshot is restored.
const restoreChunk = 256

// restore merges a decoded snapshot into the store (see ReadSnapshot). It cannot fail:
// everything was checked while decoding.
func (s *Store) restore(snap *decodedSnapshot) SnapshotInfo {
	info := SnapshotInfo{Written: snap.written, Bytes: snap.size, Recorded: snap.recorded}
	info.Series, info.SeriesMerged, info.SeriesFolded = s.route.restore(snap.series)
	for k, cs := range snap.callers {
		adopted, merged, dropped := s.callers[k].restore(cs)
		info.Callers += adopted
		info.CallersMerged += merged
		info.CallersDropped += dropped
	}
	info.Recent = s.recent.restore(snap.recent)
	for _, dc := range snap.counters {
		info.Counters++
		info.CounterCallers += len(dc.callers)
		s.restoreCounter(dc)
	}
	s.recorded.Add(snap.recorded)
	raise(&s.lastEpoch, snap.newest)
	if snap.finestLeftOut {
		raise(&s.route.fineFrom, snap.newest+1)
	}
	return info
}

// raise sets a to v if v is larger.
func raise(a *atomic.Int64, v int64) {
	for old := a.Load(); v > old && !a.CompareAndSwap(old, v); old = a.Load() {
	}
}

// restore adds decoded series to the view, most recently active first. A series whose
// labels the view has is merged into it; a new one is adopted as it is while the view has
// room, and folded into the overflow series of its labels once it has not (as get does).
// It returns how many were adopted, merged and folded.
func (v *view) restore(ds []*series) (adopted, merged, folded int) {
	if int(v.n.Load())+len(ds) > v.max {
		slices.SortStableFunc(ds, func(a, b *series) int { return cmp.Compare(b.last, a.last) })
	} // else keep the snapshot's order, the order the series were created in
	var pending []*series
	for len(ds) > 0 {
		chunk := ds[:min(len(ds), restoreChunk)]
		ds = ds[len(chunk):]
		pending = pending[:0]
		v.mu.Lock()
		for _, d := range chunk {
			fold := false
			if v.m[d.labels] == nil && int(v.n.Load()) >= v.max {
				if o := overflowLabels(&d.labels, v.dims); o != d.labels {
					fold = true
					d.labels = o
					v.overflow.Add(d.calls(v.res))
				}
			}
			own := v.adoptLocked(d)
			if !own {
				pending = append(pending, d)
			}
			switch {
			case fold:
				folded++
			case own:
				adopted++
			default:
				merged++
			}
		}
		v.mu.Unlock()
		for _, d := range pending {
			v.merge(d)
		}
	}
	return adopted, merged, folded
}

// adoptLocked makes d the view's series for its labels unless the view has a live one;
// v.mu held.
func (v *view) adoptLocked(d *series) bool {
	live := v.m[d.labels]
	if live != nil && !live.dead.Load() {
		return false
	}
	if live == nil {
		v.n.Add(1)
	} // else the sweeper is about to remove live: take its place (it will not count it)
	v.m[d.labels] = d
	v.listMu.Lock()
	list := append(*v.list.Load(), d)
	v.list.Store(&list)
	v.listMu.Unlock()
	return true
}

// merge adds the buckets of d into the view's series with the same labels (adopting d if
// that series was swept meanwhile).
func (v *view) merge(d *series) {
	for {
		v.mu.RLock()
		live := v.m[d.labels]
		v.mu.RUnlock()
		if live == nil || live.dead.Load() {
			v.mu.Lock()
			ok := v.adoptLocked(d)
			v.mu.Unlock()
			if ok {
				return
			}
			continue
		}
		live.mu.Lock()
		if !live.dead.Load() {
			live.merge(d, v.res)
			live.mu.Unlock()
			return
		}
		live.mu.Unlock()
	}
}

// calls returns how many calls the series holds: those of its ring that holds the most.
func (s *series) calls(res []resolution) uint64 {
	var most uint64
	for i := range res {
		var n uint64
		r := &s.rings[i]
		for j := 0; j < r.size; j++ {
			n += uint64(r.at(j).n)
		}
		most = max(most, n)
	}
	return most
}

// merge adds the calls of o to s, as if s had recorded them too; s.mu held.
func (s *series) merge(o *series, res []resolution) {
	mergeTimes(&s.first, &s.last, &s.first2xx, o.first, o.last, o.first2xx)
	s.newest.Store(s.last)
	for i, r := range res {
		or := &o.rings[i]
		for j := 0; j < or.size; j++ {
			ob := or.at(j)
			if b := s.rings[i].bucketFor(ob.slot, r.slots); b != nil {
				b.merge(ob)
			}
		}
	}
}

// mergeTimes folds the first, last and first successful call times of another history
// (0: none) into those of one.
func mergeTimes(first, last, first2xx *int64, oFirst, oLast, oFirst2xx int64) {
	if *first == 0 || oFirst != 0 && oFirst < *first {
		*first = oFirst
	}
	*last = max(*last, oLast)
	if *first2xx == 0 || oFirst2xx != 0 && oFirst2xx < *first2xx {
		*first2xx = oFirst2xx
	}
}

func (b *bucket) merge(o *bucket) {
	b.n += o.n
	b.n2xx += o.n2xx
	b.n4xx += o.n4xx
	b.n5xx += o.n5xx
	b.blocked += o.blocked
	b.limited += o.limited
	for k := range b.fails {
		b.fails[k] += o.fails[k]
	}
	b.bytesIn += o.bytesIn
	b.bytesOut += o.bytesOut
	b.latSum += o.latSum
	b.lat.Merge(&o.lat)
	b.callers.Merge(&o.callers)
}

// restore adds decoded callers to the index, most recently active first. A caller the
// index has is merged; a new one takes a free place in its shard, and is dropped (and
// counted as evicted) when the shard is full: restoring never evicts a caller. It returns
// how many were adopted, merged and dropped.
func (x *callerIndex) restore(cs []caller) (adopted, merged, dropped int) {
	slices.SortStableFunc(cs, func(a, b caller) int { return cmp.Compare(b.last, a.last) })
	var byShard [callerShards][]int32
	for i := range cs {
		k := maphash.String(x.seed, cs[i].id) % callerShards
		byShard[k] = append(byShard[k], int32(i))
	}
	for k, idx := range byShard {
		sh := &x.shards[k]
		for len(idx) > 0 {
			chunk := idx[:min(len(idx), restoreChunk)]
			idx = idx[len(chunk):]
			sh.mu.Lock()
			for _, i := range chunk {
				c := &cs[i]
				if j, ok := sh.m[c.id]; ok {
					sh.slab[j].merge(c)
					merged++
					continue
				}
				j, ok := x.place(sh)
				if !ok {
					dropped++
					x.evictions.Add(1)
					continue
				}
				sh.slab[j] = *c
				sh.m[c.id] = j
				adopted++
			}
			sh.mu.Unlock()
		}
	}
	return adopted, merged, dropped
}

// place returns a free place in a locked shard, or false when it is full.
func (x *callerIndex) place(sh *callerShard) (int32, bool) {
	if n := len(sh.free); n > 0 {
		i := sh.free[n-1]
		sh.free = sh.free[:n-1]
		return i, true
	}
	if len(sh.slab) < x.maxPerShard {
		sh.slab = append(sh.slab, caller{})
		x.n.Add(1)
		return int32(len(sh.slab) - 1), true
	}
	return 0, false
}

// merge adds the history of o to c, as if c had recorded its calls too.
func (c *caller) merge(o *caller) {
	mergeTimes(&c.first, &c.last, &c.first2xx, o.first, o.last, o.first2xx)
	c.hours = mergeCallerBuckets(c.hours, o.hours, CallerHours)
	c.days = mergeCallerBuckets(c.days, o.days, CallerDays)
	if o.fails != nil {
		if c.fails == nil {
			c.fails = new(topFailures)
		}
		for _, f := range o.fails {
			if f.Count > 0 {
				c.fails.addN(f.Endpoint, f.Status, f.Count)
			}
		}
	}
}

// mergeCallerBuckets merges two sorted bucket lists, keeping n slots back from the newest.
func mergeCallerBuckets(a, b []callerBucket, n int64) []callerBucket {
	out := make([]callerBucket, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i].slot < b[j].slot:
			out = append(out, a[i])
			i++
		case i == len(a) || b[j].slot < a[i].slot:
			out = append(out, b[j])
			j++
		default:
			m := a[i]
			m.merge(&b[j].CallerCounts)
			out = append(out, m)
			i, j = i+1, j+1
		}
	}
	return trimCallerBuckets(out, n)
}

// trimCallerBuckets drops the buckets of a sorted list that lie n slots or more before
// its newest, as addCallerBucket does.
func trimCallerBuckets(bs []callerBucket, n int64) []callerBucket {
	if len(bs) == 0 {
		return bs
	}
	newest := int64(bs[len(bs)-1].slot)
	k := 0
	for k < len(bs) && int64(bs[k].slot) <= newest-n {
		k++
	}
	return bs[k:]
}

// restore puts calls (oldest first) before the ring's own, keeping the newest that fit,
// and returns how many of calls it kept.
func (r *recentRing) restore(calls []Call) int {
	if len(r.calls) == 0 || len(calls) == 0 {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	size := uint64(len(r.calls))
	own := make([]Call, 0, min(r.next, size))
	for i := r.next - uint64(cap(own)); i < r.next; i++ {
		own = append(own, r.calls[i%size])
	}
	all := append(slices.Clone(calls), own...)
	keep := all[max(0, len(all)-len(r.calls)):]
	clear(r.calls)
	copy(r.calls, keep)
	r.next = uint64(len(keep))
	return max(0, len(keep)-len(own))
}
