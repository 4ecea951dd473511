package detector

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"time"
)

// A snapshot is the store's history as bytes, so that a gateway restart keeps it.
//
// Format, version 3 (version 2, without the meta record's flags, and version 1, also
// without the counters section, are still read). Integers are uvarints, or zigzag varints where they can be negative
// ("varint"); a string is a uvarint length and its bytes.
//
//	header   "VIGILSNP", uvarint format version (3)
//	sections in this order, each a tag byte, records, and a uvarint 0:
//	  1 meta       one record: varint Unix nanoseconds written, uvarint MaxSeries, MaxKeys
//	               and RecentCalls of the writing store (informational), uvarint flags
//	               (1: the route series' finest ring was left out)
//	  2 route      a record per route series
//	  3 users, 4 companies, 5 keys
//	               a record per caller
//	  6 recent     a record per recent call, oldest first
//	  7 totals     one record: uvarint calls recorded, varint newest call (Unix seconds)
//	  8 counters   per filtered caller counter (CountCallers): a record byte 0, string
//	               key (kind and filter), byte kind; then a record per caller it counts,
//	               byte 1 and the caller
//	end      tag byte 0
//	checksum CRC-32C (Castagnoli) of every byte before it, 4 bytes little-endian
//
// A record is a uvarint length (never 0) and its body, so that a decoder knows where each
// one ends and can name it in an error.
//
//	series   string method, endpoint, upstream; uvarint status; byte flags (1 blocked,
//	         2 limited); varint first, uvarint last-first, uvarint first2xx-first+1 (0:
//	         none); uvarint rings; per ring: uvarint secs, uvarint slots, uvarint buckets,
//	         then the buckets oldest first
//	bucket   the slot: varint for the first of a ring, then uvarint gap from the previous
//	         (at least 1); uvarint calls; uvarint mask of the non-zero fields that follow
//	         (bucketBytesIn...), each a uvarint but latSum, 8 bytes little-endian; the
//	         latency histogram and the callers HLL, each a uvarint length and its
//	         AppendBinary encoding (versioned by the sketch package). 1xx-3xx calls are
//	         calls - 4xx - 5xx.
//	caller   string id; varint first, uvarint last-first, uvarint first2xx-first+1;
//	         uvarint hours, hour buckets; uvarint days, day buckets; uvarint failing
//	         pairs (at most TopFailures), each string endpoint, uvarint status, uvarint count
//	counts   the slot: uvarint for the first, then uvarint gap (at least 1); uvarint
//	         calls; uvarint mask of the non-zero fields that follow (4xx, 5xx, blocked,
//	         limited), each a uvarint; OK is calls - 4xx - 5xx
//	call     varint Unix seconds, uvarint nanoseconds; string method, endpoint, path;
//	         varint status, latency (ns), bytes in, bytes out; string user, company, key;
//	         string IP (netip.Addr.MarshalBinary); string upstream; byte failure; string
//	         request id; byte flags (1 blocked, 2 limited)
//
// A reader accepts only the versions it knows; a change of layout bumps snapshotVersion.
const (
	snapshotMagic   = "VIGILSNP"
	snapshotVersion = 3
	// snapshotVersion2 has no flags in the meta record.
	snapshotVersion2 = 2
	// snapshotVersion1 has no counters section either.
	snapshotVersion1 = 1
	// metaFinestLeftOut, a flag of the meta record, says that the route series' finest
	// ring was left out (a delta).
	metaFinestLeftOut = 1
)

// Section tags, in the order they appear.
const (
	secEnd = iota
	secMeta
	secRoute
	secUsers
	secCompanies
	secKeys
	secRecent
	secTotals
	secCounters
)

var sectionNames = [...]string{"end", "meta", "route", "users", "companies", "keys", "recent", "totals", "counters"}

// A bucket's fields besides calls, in the order of their bits in its field mask. The
// common ones come first, so that the mask usually takes one byte.
const (
	bucketBytesIn = iota
	bucketBytesOut
	bucketLatSum // 8 bytes, not a uvarint
	bucket4xx
	bucket5xx
	bucketBlocked
	bucketLimited
	bucketFail0  // one per failure kind
	bucketFields = bucketFail0 + numFailKinds
)

// bucketCounts returns a bucket's fields but latSum, indexed as above.
func bucketCounts(b *bucket) (f [bucketFields]uint64) {
	f[bucketBytesIn], f[bucketBytesOut] = b.bytesIn, b.bytesOut
	f[bucket4xx], f[bucket5xx] = uint64(b.n4xx), uint64(b.n5xx)
	f[bucketBlocked], f[bucketLimited] = uint64(b.blocked), uint64(b.limited)
	for k, n := range b.fails {
		f[bucketFail0+k] = uint64(n)
	}
	return f
}

// callerCountsFields is the number of caller counts in a field mask: 4xx, 5xx, blocked
// and limited, in this order.
const callerCountsFields = 4

// maxSnapshotSlot bounds the slots a snapshot may hold (about 8.9 million years of
// seconds either side of 1970), so that slot arithmetic cannot overflow.
const maxSnapshotSlot = 1 << 48

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapshotClock gives the time a snapshot is written (a variable for tests).
var snapshotClock = time.Now

// ErrBadSnapshot is wrapped by every error ReadSnapshot returns for input that is not a
// whole, valid snapshot (as opposed to an error reading it).
var ErrBadSnapshot = errors.New("bad snapshot")

// SnapshotError says what is wrong with a snapshot and where.
type SnapshotError struct {
	Section string // "header", "checksum" or a section name
	Record  int    // index of the record in its section, -1 when not in a record
	Offset  int    // byte offset of the first byte found wrong
	Err     error
}

// Error names the section, record and offset found wrong.
func (e *SnapshotError) Error() string {
	where := "section " + e.Section
	if e.Section == "header" || e.Section == "checksum" {
		where = e.Section
	}
	if e.Record >= 0 {
		where += fmt.Sprintf(", record %d", e.Record)
	}
	return fmt.Sprintf("detector: bad snapshot: %s, at offset %d: %v", where, e.Offset, e.Err)
}

// Unwrap returns the underlying error.
func (e *SnapshotError) Unwrap() error { return e.Err }

// Is makes every SnapshotError match ErrBadSnapshot.
func (e *SnapshotError) Is(target error) bool { return target == ErrBadSnapshot }

// SnapshotInfo describes what ReadSnapshot restored.
type SnapshotInfo struct {
	// Written is when the snapshot was written; Bytes its size.
	Written time.Time
	Bytes   int
	// Recorded is the snapshot's count of recorded calls, added to the store's.
	Recorded uint64
	// Series counts the route series restored as series of their own; SeriesMerged those
	// merged into a series the store already had; SeriesFolded those folded into an
	// "other" series because the store's MaxSeries was reached.
	Series, SeriesMerged, SeriesFolded int
	// Callers counts the users, companies and keys restored as callers of their own;
	// CallersMerged those merged into a caller the store already had; CallersDropped those
	// left out because the store's MaxKeys was reached.
	Callers, CallersMerged, CallersDropped int
	// Recent counts the recent calls restored.
	Recent int
	// Counters counts the filtered caller counters restored (their callers are in
	// CounterCallers): those of rules that do not exist yet wait for them to be created,
	// until the next snapshot is written.
	Counters, CounterCallers int
}

// SnapshotPart selects what [Store.WriteSnapshotPart] writes. A busy store's history is
// mostly buckets that no longer change; a base holds those once, and a delta, written
// far more often, the rest.
type SnapshotPart uint8

const (
	// SnapshotFull is the whole history, as WriteSnapshot writes it.
	SnapshotFull SnapshotPart = iota
	// SnapshotBase is the buckets that lie wholly before the cut, of the route series and
	// of the callers' history (a caller's day that spans the cut is left to the delta),
	// with the series and callers they belong to. It has no top failing pairs, recent
	// calls, totals or caller counters.
	SnapshotBase
	// SnapshotDelta is the rest: the buckets from the cut on, the callers' top failing
	// pairs, the recent calls, the totals and the caller counters (whole). Reading a base
	// and then the delta of the same cut into a store, in either order, restores what
	// WriteSnapshot would have written when the delta was.
	SnapshotDelta
	// SnapshotSegment is the buckets that lie wholly between two cuts: what a base of the
	// later cut holds and a base of the earlier one does not (WriteSnapshotSegment). A
	// base, the segments that follow it end to end and the delta of the last one's end,
	// read in any order, restore what the base and delta of that end would.
	SnapshotSegment
)

// hasState says whether the part holds what is not in buckets: the callers' top failing
// pairs, the recent calls, the totals and the caller counters.
func (p SnapshotPart) hasState() bool { return p == SnapshotFull || p == SnapshotDelta }

// WriteSnapshot writes the store's history to w: the route view's series with every
// bucket and sketch, the history of every user, company and key, the ring of recent
// calls, the count of recorded calls, the newest call time, and the per-caller counts of
// the filtered counters (CountCallers). Detail views are not written: they are rebuilt
// from the moment rules track them again.
//
// Calls buffered by Record are applied first. The store keeps recording meanwhile: each
// series and each few hundred callers are encoded under their own short lock, and w is
// written without any lock held, so the snapshot is not one atomic cut across series (a
// call recorded during the write may be in one series and not in another).
func (s *Store) WriteSnapshot(w io.Writer) error {
	return s.WriteSnapshotPart(w, SnapshotFull, time.Time{})
}

// WriteSnapshotPart writes part of the history to w, as WriteSnapshot writes the whole:
// the buckets before cut (SnapshotBase), or those from cut on and everything that is
// not in buckets (SnapshotDelta). The cut should be at least a little in the past, so
// that no call is still on its way into a bucket before it. ReadSnapshot reads either
// part.
func (s *Store) WriteSnapshotPart(w io.Writer, part SnapshotPart, cut time.Time) error {
	if part == SnapshotSegment {
		return errors.New("detector: a snapshot segment has two cuts: WriteSnapshotSegment writes it")
	}
	return s.writeSnapshot(w, part, math.MinInt64, cut.Unix())
}

// WriteSnapshotSegment writes the buckets that lie wholly between the cuts from and to
// (SnapshotSegment), with the series and callers they belong to, as a base of to would
// write them without those before from. Both cuts should be at least a little in the
// past. ReadSnapshot reads it.
func (s *Store) WriteSnapshotSegment(w io.Writer, from, to time.Time) error {
	if !from.Before(to) {
		return fmt.Errorf("detector: snapshot segment from %v to %v: from must be before to", from, to)
	}
	return s.writeSnapshot(w, SnapshotSegment, from.Unix(), to.Unix())
}

// writeSnapshot writes part; a segment's buckets are those in [from, cut), a base's are
// those before cut (from is math.MinInt64).
func (s *Store) writeSnapshot(w io.Writer, part SnapshotPart, from, cut int64) error {
	s.Flush()
	e := &snapEncoder{w: w, buf: make([]byte, 0, snapFlushSize+4096), part: part, from: from, cut: cut}
	e.buf = append(e.buf, snapshotMagic...)
	e.buf = binary.AppendUvarint(e.buf, snapshotVersion)

	e.section(secMeta)
	b := binary.AppendVarint(e.scratch[:0], snapshotClock().UnixNano())
	b = binary.AppendUvarint(b, uint64(s.cfg.MaxSeries))
	b = binary.AppendUvarint(b, uint64(s.cfg.MaxKeys))
	b = binary.AppendUvarint(b, uint64(max(s.cfg.RecentCalls, 0)))
	var flags uint64
	if part == SnapshotDelta {
		// The route series' finest ring (one-second buckets of the last minutes) is most of
		// a busy store's delta, written every minute. A store that reads the delta answers
		// windows that reach before its newest call from the next ring instead
		// (view.fineFrom), as a planner does for windows beyond a ring's reach.
		flags |= metaFinestLeftOut
	}
	b = binary.AppendUvarint(b, flags)
	e.record(b)
	e.endSection()

	e.section(secRoute)
	for _, sr := range s.route.series() {
		sr.mu.Lock()
		if sr.dead.Load() {
			sr.mu.Unlock()
			continue
		}
		var ok bool
		e.scratch, ok = e.appendSeries(e.scratch[:0], sr, s.route.res)
		sr.mu.Unlock()
		if ok {
			e.record(e.scratch)
			e.flushIfFull()
		}
	}
	e.endSection()

	for k, x := range s.callers {
		e.section(byte(secUsers + k))
		e.callers(x, e.part)
		e.endSection()
	}

	e.section(secRecent)
	var recent []Call
	if part.hasState() {
		recent = s.recent.oldestFirst()
	}
	for _, c := range recent {
		e.scratch = appendCall(e.scratch[:0], &c)
		e.record(e.scratch)
		e.flushIfFull()
	}
	e.endSection()

	e.section(secTotals)
	recorded := s.recorded.Load()
	if !part.hasState() {
		recorded = 0 // the delta counts them
	}
	b = binary.AppendUvarint(e.scratch[:0], recorded)
	b = binary.AppendVarint(b, s.lastEpoch.Load())
	e.record(b)
	e.endSection()

	e.section(secCounters)
	if part.hasState() {
		s.trackMu.Lock()
		counters := slices.Clone(s.counters)
		s.pendingCounters = nil // the counts of rules that did not come back are dropped
		s.trackMu.Unlock()
		for _, c := range counters {
			b = append(e.scratch[:0], 0)
			b = appendString(b, c.key)
			b = append(b, byte(c.kind))
			e.record(b)
			e.callers(c.index, SnapshotFull, 1) // counters are written whole
		}
	}
	e.endSection()

	e.buf = append(e.buf, secEnd)
	e.flush()
	if e.err != nil {
		return e.err
	}
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], e.crc)
	if _, err := w.Write(sum[:]); err != nil {
		return fmt.Errorf("detector: write snapshot: %w", err)
	}
	return nil
}

const (
	snapFlushSize   = 256 << 10 // write to w when this much is buffered
	snapCallerChunk = 256       // callers encoded per shard lock
)

// snapEncoder buffers a snapshot on its way to w and keeps its running checksum.
type snapEncoder struct {
	w       io.Writer
	buf     []byte
	scratch []byte // a record
	sketch  []byte // a sketch
	crc     uint32
	err     error
	part    SnapshotPart
	from    int64 // Unix seconds: a segment's first cut (math.MinInt64 for a base)
	cut     int64 // Unix seconds: the parts' cut (a segment's second)
}

// keep says whether the bucket of slot of the route series' ring of index ring, at a
// resolution of secs seconds, belongs to the part being written. A delta leaves out the
// finest ring (see writeSnapshot).
func (e *snapEncoder) keep(ring int, slot, secs int64) bool {
	switch e.part {
	case SnapshotBase, SnapshotSegment: // a base is a segment from math.MinInt64
		return slot >= floorDiv(e.from, secs) && slot < floorDiv(e.cut, secs)
	case SnapshotDelta:
		return ring > 0 && slot >= floorDiv(e.cut, secs)
	}
	return true
}

func (e *snapEncoder) section(tag byte) { e.buf = append(e.buf, tag) }

// callers writes a record per caller of x, each a few hundred under one shard lock, each
// record starting with the bytes of prefix.
func (e *snapEncoder) callers(x *callerIndex, part SnapshotPart, prefix ...byte) {
	for i := range x.shards {
		sh := &x.shards[i]
		for from := 0; ; from += snapCallerChunk {
			sh.mu.Lock()
			to := min(from+snapCallerChunk, len(sh.slab))
			for j := from; j < to; j++ {
				if c := &sh.slab[j]; c.id != "" {
					var ok bool
					if e.scratch, ok = e.appendCaller(append(e.scratch[:0], prefix...), c, part); ok {
						e.record(e.scratch)
					}
				}
			}
			more := to < len(sh.slab)
			sh.mu.Unlock()
			e.flushIfFull()
			if !more {
				break
			}
		}
	}
}

func (e *snapEncoder) endSection() {
	e.buf = append(e.buf, 0)
	e.flushIfFull()
}

// record appends a record to the buffer; flushIfFull writes it out, with no lock held. A
// large record (a busy series) goes out at once, to keep the buffer small.
func (e *snapEncoder) record(body []byte) {
	e.buf = binary.AppendUvarint(e.buf, uint64(len(body)))
	if len(body) < snapFlushSize {
		e.buf = append(e.buf, body...)
		return
	}
	e.flush()
	e.write(body)
}

func (e *snapEncoder) flushIfFull() {
	if len(e.buf) >= snapFlushSize {
		e.flush()
	}
}

func (e *snapEncoder) flush() {
	e.write(e.buf)
	e.buf = e.buf[:0]
}

func (e *snapEncoder) write(p []byte) {
	if e.err == nil && len(p) > 0 {
		e.crc = crc32.Update(e.crc, castagnoli, p)
		if _, err := e.w.Write(p); err != nil {
			e.err = fmt.Errorf("detector: write snapshot: %w", err)
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendTimes appends first, last and first2xx (0: none) as a varint and two deltas.
func appendTimes(b []byte, first, last, first2xx int64) []byte {
	b = binary.AppendVarint(b, first)
	b = binary.AppendUvarint(b, uint64(last-first))
	if first2xx != 0 {
		return binary.AppendUvarint(b, uint64(first2xx-first)+1)
	}
	return append(b, 0)
}

func flagBits(blocked, limited bool) byte {
	var f byte
	if blocked {
		f |= 1
	}
	if limited {
		f |= 2
	}
	return f
}

// appendSeries appends the record of a route series with the buckets of the part being
// written, and reports whether it has any; s.mu held.
func (e *snapEncoder) appendSeries(b []byte, s *series, res []resolution) ([]byte, bool) {
	kept, any := [maxResolutions]int{}, false
	for i, r := range res {
		ring := &s.rings[i]
		for j := 0; j < ring.size; j++ {
			if e.keep(i, ring.at(j).slot, r.secs) {
				kept[i]++
			}
		}
		any = any || kept[i] > 0
	}
	if !any && e.part != SnapshotFull {
		return b, false
	}
	sketch := &e.sketch
	l := &s.labels
	b = appendString(b, l.Method)
	b = appendString(b, l.Endpoint)
	b = appendString(b, l.Upstream)
	b = binary.AppendUvarint(b, uint64(l.Status))
	b = append(b, flagBits(l.Blocked, l.Limited))
	b = appendTimes(b, s.first, s.last, s.first2xx)
	b = binary.AppendUvarint(b, uint64(len(res)))
	for i, r := range res {
		ring := &s.rings[i]
		b = binary.AppendUvarint(b, uint64(r.secs))
		b = binary.AppendUvarint(b, uint64(r.slots))
		b = binary.AppendUvarint(b, uint64(kept[i]))
		prev, first := int64(0), true
		for j := 0; j < ring.size; j++ {
			bk := ring.at(j)
			if !e.keep(i, bk.slot, r.secs) {
				continue
			}
			if cap(b)-len(b) < 16<<10 {
				b = slices.Grow(b, max(len(b), 16<<10)) // double: a busy series takes megabytes
			}
			if first {
				b = binary.AppendVarint(b, bk.slot)
			} else {
				b = binary.AppendUvarint(b, uint64(bk.slot-prev))
			}
			prev, first = bk.slot, false
			b = appendBucket(b, sketch, bk)
		}
	}
	return b, true
}

func appendBucket(b []byte, sketch *[]byte, bk *bucket) []byte {
	b = binary.AppendUvarint(b, uint64(bk.n))
	f := bucketCounts(bk)
	var mask uint64
	for i, v := range f {
		if v != 0 {
			mask |= 1 << i
		}
	}
	if bk.latSum != 0 {
		mask |= 1 << bucketLatSum
	}
	b = binary.AppendUvarint(b, mask)
	for i, v := range f {
		switch {
		case i == bucketLatSum && bk.latSum != 0:
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(bk.latSum))
		case v != 0:
			b = binary.AppendUvarint(b, v)
		}
	}
	*sketch = bk.lat.AppendBinary((*sketch)[:0])
	b = binary.AppendUvarint(b, uint64(len(*sketch)))
	b = append(b, *sketch...)
	*sketch = bk.callers.AppendBinary((*sketch)[:0])
	b = binary.AppendUvarint(b, uint64(len(*sketch)))
	return append(b, *sketch...)
}

// appendCaller appends the record of a caller with the buckets and top failing pairs of
// the part, and reports whether it has any; its shard's lock held.
func (e *snapEncoder) appendCaller(b []byte, c *caller, part SnapshotPart) ([]byte, bool) {
	hours, days := e.callerBuckets(c.hours, hourSecs, part), e.callerBuckets(c.days, daySecs, part)
	withFails := part.hasState() && c.fails != nil
	if part != SnapshotFull && len(hours) == 0 && len(days) == 0 && !withFails {
		return b, false
	}
	b = appendString(b, c.id)
	b = appendTimes(b, c.first, c.last, c.first2xx)
	b = appendCallerBuckets(b, hours)
	b = appendCallerBuckets(b, days)
	var fails []Failing
	if withFails {
		for _, f := range c.fails {
			if f.Count > 0 {
				fails = append(fails, f)
			}
		}
	}
	b = binary.AppendUvarint(b, uint64(len(fails)))
	for _, f := range fails {
		b = appendString(b, f.Endpoint)
		b = binary.AppendUvarint(b, uint64(f.Status))
		b = binary.AppendUvarint(b, uint64(f.Count))
	}
	return b, true
}

// callerBuckets returns the run of bs, sorted by slot, that belongs to the part.
func (e *snapEncoder) callerBuckets(bs []callerBucket, secs int64, part SnapshotPart) []callerBucket {
	if part == SnapshotFull {
		return bs
	}
	search := func(cut int64) int {
		i, _ := slices.BinarySearchFunc(bs, floorDiv(cut, secs), func(b callerBucket, slot int64) int {
			return cmp.Compare(int64(b.slot), slot)
		})
		return i
	}
	if part == SnapshotDelta {
		return bs[search(e.cut):]
	}
	return bs[search(e.from):search(e.cut)] // a base is a segment from math.MinInt64
}

func appendCallerBuckets(b []byte, bs []callerBucket) []byte {
	b = binary.AppendUvarint(b, uint64(len(bs)))
	for i := range bs {
		cb := &bs[i]
		if i == 0 {
			b = binary.AppendUvarint(b, uint64(cb.slot))
		} else {
			b = binary.AppendUvarint(b, uint64(cb.slot-bs[i-1].slot))
		}
		b = binary.AppendUvarint(b, uint64(cb.Calls))
		fields := [...]uint32{cb.Status4, cb.Status5, cb.Blocked, cb.Limited}
		var mask uint64
		for k, v := range fields {
			if v != 0 {
				mask |= 1 << k
			}
		}
		b = binary.AppendUvarint(b, mask)
		for _, v := range fields {
			if v != 0 {
				b = binary.AppendUvarint(b, uint64(v))
			}
		}
	}
	return b
}

func appendCall(b []byte, c *Call) []byte {
	b = binary.AppendVarint(b, c.Time.Unix())
	b = binary.AppendUvarint(b, uint64(c.Time.Nanosecond()))
	b = appendString(b, c.Method)
	b = appendString(b, c.Endpoint)
	b = appendString(b, c.Path)
	b = binary.AppendVarint(b, int64(c.Status))
	b = binary.AppendVarint(b, int64(c.Latency))
	b = binary.AppendVarint(b, c.BytesIn)
	b = binary.AppendVarint(b, c.BytesOut)
	b = appendString(b, c.User)
	b = appendString(b, c.Company)
	b = appendString(b, c.Key)
	ip, _ := c.IP.MarshalBinary() // never fails
	b = binary.AppendUvarint(b, uint64(len(ip)))
	b = append(b, ip...)
	b = appendString(b, c.Upstream)
	b = append(b, byte(c.Failure))
	b = appendString(b, c.RequestID)
	return append(b, flagBits(c.Blocked, c.Limited))
}

// oldestFirst returns a copy of the kept calls, oldest first.
func (r *recentRing) oldestFirst() []Call {
	var out []Call
	r.newest(func(c *Call) bool {
		out = append(out, *c)
		return true
	})
	slices.Reverse(out)
	return out
}
