package detector

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"time"
)

// ReadSnapshot restores a snapshot written by WriteSnapshot, and says what it restored.
//
// The snapshot is read record by record into new structures, and its checksum verified,
// before anything is applied: on input that is truncated, corrupt or of an unknown format
// version it returns an error that wraps ErrBadSnapshot (a *SnapshotError naming the
// section, record and byte offset found wrong) and leaves the store exactly as it was.
// Errors reading r are returned as they are. A snapshot read whole ends r: bytes after
// its checksum are an error.
//
// The snapshot is merged into what the store already holds, so ReadSnapshot may be called
// after calls were recorded (traffic that arrived before the snapshot was read) and while
// calls are being recorded: a series or caller present in both gets the buckets of both
// added together (they are different calls, those of an earlier process), times of first
// and last calls are the earliest and latest of both, the count of recorded calls adds
// up, and the snapshot's recent calls go before those recorded since. Reading the same
// snapshot twice therefore counts its calls twice. Buckets are kept as far back as the
// store's rings reach.
//
// The store's caps hold. Series are restored most recently active first: once the store
// has MaxSeries, the rest are folded into the "other" series of their status and flags,
// as Record does (their calls stay in totals and are counted in Stats.Overflow). Callers
// too are restored most recently active first: a caller that finds its shard of the store
// full (MaxKeys) is left out and counted in Stats.Evictions. SnapshotInfo gives the
// numbers.
func (s *Store) ReadSnapshot(r io.Reader) (SnapshotInfo, error) {
	snap, err := decodeSnapshot(r, s.route.res)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return s.restore(snap), nil
}

// decodedSnapshot is a snapshot decoded into structures of the store, not yet applied.
type decodedSnapshot struct {
	version uint64
	written time.Time
	// finestLeftOut says that the route series' finest ring was left out (a delta).
	finestLeftOut bool
	size          int
	series        []*series
	callers       [3][]caller
	recent        []Call
	recorded      uint64
	newest        int64
	counters      []decodedCounter
}

// decodedCounter is a filtered caller counter of a snapshot.
type decodedCounter struct {
	key     string
	kind    Dim
	callers []caller
}

// snapStream reads a snapshot from r, keeping its checksum and offset.
type snapStream struct {
	r   *bufio.Reader
	crc uint32
	off int
	buf []byte
	one [1]byte
	err error // the error of r, when not io.EOF
}

func (st *snapStream) ReadByte() (byte, error) {
	c, err := st.r.ReadByte()
	if err != nil {
		return 0, st.readErr(err)
	}
	st.one[0] = c
	st.crc = crc32.Update(st.crc, castagnoli, st.one[:])
	st.off++
	return c, nil
}

// readErr keeps an error of r other than its end, and returns the error to report.
func (st *snapStream) readErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errTruncated
	}
	if st.err == nil {
		st.err = err
	}
	return err
}

// next reads the next n bytes into a buffer reused by the next call. It grows the buffer
// as bytes arrive, so that a length made up by a corrupt snapshot costs no more memory
// than the snapshot has.
func (st *snapStream) next(n int) ([]byte, error) {
	st.buf = st.buf[:0]
	for len(st.buf) < n {
		chunk := min(n-len(st.buf), max(len(st.buf), 64<<10))
		st.buf = slices.Grow(st.buf, chunk)
		got, err := io.ReadFull(st.r, st.buf[len(st.buf):len(st.buf)+chunk])
		st.crc = crc32.Update(st.crc, castagnoli, st.buf[len(st.buf):len(st.buf)+got])
		st.off += got
		st.buf = st.buf[:len(st.buf)+got]
		if err != nil {
			return nil, st.readErr(err)
		}
	}
	return st.buf, nil
}

// checksumOK reads the rest of the snapshot and reports whether its last 4 bytes are the
// checksum of all before them: after a record found wrong, it tells damage from a bad
// writer.
func (st *snapStream) checksumOK() bool {
	buf := make([]byte, 4, 64<<10)
	have := 0 // bytes held back in buf[:4], which may be the checksum
	for {
		n, err := st.r.Read(buf[have:cap(buf)])
		n += have
		if n > 4 {
			st.crc = crc32.Update(st.crc, castagnoli, buf[:n-4])
			copy(buf, buf[n-4:n])
			n = 4
		}
		have = n
		if err != nil {
			return have == 4 && st.err == nil && binary.LittleEndian.Uint32(buf) == st.crc
		}
	}
}

// decodeSnapshot reads a snapshot for a store whose route view has resolutions res, and
// checks its checksum. It changes nothing but what it returns.
func decodeSnapshot(r io.Reader, res []resolution) (*decodedSnapshot, error) {
	st := &snapStream{r: bufio.NewReaderSize(r, 64<<10)}
	fail := func(section string, rec, off int, err error) (*decodedSnapshot, error) {
		if st.err != nil {
			return nil, fmt.Errorf("detector: read snapshot: %w", st.err)
		}
		return nil, &SnapshotError{Section: section, Record: rec, Offset: off, Err: err}
	}
	if b, err := st.next(len(snapshotMagic)); err != nil || string(b) != snapshotMagic {
		return fail("header", -1, 0, fmt.Errorf("not a Vigil snapshot (no %q at the start)", snapshotMagic))
	}
	sections := []byte{secMeta, secRoute, secUsers, secCompanies, secKeys, secRecent, secTotals, secCounters, secEnd}
	v, err := binary.ReadUvarint(st)
	if err != nil || v < snapshotVersion1 || v > snapshotVersion {
		if err != nil {
			return fail("header", -1, st.off, fmt.Errorf("format version: %w", err))
		}
		return fail("header", -1, len(snapshotMagic), fmt.Errorf("format version %d, this build reads versions %d to %d only", v, snapshotVersion1, snapshotVersion))
	} else if v == snapshotVersion1 {
		sections = slices.Delete(sections, 7, 8) // no counters
	}
	snap := &decodedSnapshot{version: v}
	for _, tag := range sections {
		name := sectionNames[tag]
		at := st.off
		if got, err := st.ReadByte(); err != nil || got != tag {
			if err == nil {
				err = fmt.Errorf("section tag %d, want %d (%s)", got, tag, name)
			}
			return fail(name, -1, at, err)
		}
		if tag == secEnd {
			break
		}
		for rec := 0; ; rec++ {
			at := st.off
			n, err := binary.ReadUvarint(st)
			if err == nil && n > math.MaxInt32 {
				err = fmt.Errorf("record of %d bytes", n)
			}
			if err != nil {
				return fail(name, rec, at, err)
			}
			if n == 0 {
				if (tag == secMeta || tag == secTotals) && rec != 1 {
					return fail(name, -1, at, fmt.Errorf("%d records, want 1", rec))
				}
				break
			}
			if (tag == secMeta || tag == secTotals) && rec > 0 {
				return fail(name, rec, at, errors.New("more than one record"))
			}
			body, err := st.next(int(n))
			if err != nil {
				return fail(name, rec, st.off, fmt.Errorf("record of %d bytes from offset %d: %w", n, at, err))
			}
			d := snapDecoder{b: body, base: st.off - len(body)}
			d.record(snap, tag, res)
			if d.err == nil && d.pos != len(body) {
				d.failf("%d bytes after the end of the record", len(body)-d.pos)
			}
			if d.err != nil {
				if st.checksumOK() {
					d.err = fmt.Errorf("%w (the checksum matches: the snapshot was written wrong)", d.err)
				} else {
					d.err = fmt.Errorf("%w (and the checksum does not match: the snapshot is damaged)", d.err)
				}
				return fail(name, rec, d.base+d.errAt, d.err)
			}
		}
	}
	body, crc := st.off, st.crc
	sum, err := st.next(4)
	if err != nil {
		return fail("checksum", -1, body, err)
	}
	if want := binary.LittleEndian.Uint32(sum); want != crc {
		return fail("checksum", -1, body, fmt.Errorf("CRC-32C of the first %d bytes is %08x, the snapshot says %08x: it is damaged", body, crc, want))
	}
	if _, err := st.r.ReadByte(); err != io.EOF {
		if err != nil {
			return fail("checksum", -1, st.off, st.readErr(err))
		}
		return fail("checksum", -1, st.off, errors.New("bytes after the checksum"))
	}
	snap.size = st.off
	return snap, nil
}

// snapDecoder reads the fields of one record. The first failure is kept in err with its
// offset; reads after it return zero values, so a decoder checks err once in a while.
type snapDecoder struct {
	b     []byte
	pos   int
	base  int // offset of b in the snapshot
	err   error
	errAt int
}

func (d *snapDecoder) fail(err error) {
	if d.err == nil {
		d.err, d.errAt = err, d.pos
	}
}

func (d *snapDecoder) failf(format string, args ...any) { d.fail(fmt.Errorf(format, args...)) }

// left returns the bytes left in the record.
func (d *snapDecoder) left() int { return len(d.b) - d.pos }

var (
	errTruncated   = errors.New("truncated: the snapshot ends here")
	errRecordShort = errors.New("the record ends before its fields do")
)

func (d *snapDecoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.left() < 1 {
		d.fail(errRecordShort)
		return 0
	}
	d.pos++
	return d.b[d.pos-1]
}

func (d *snapDecoder) uvarint() uint64 { return readVarint(d, binary.Uvarint) }

func (d *snapDecoder) varint() int64 { return readVarint(d, binary.Varint) }

func readVarint[T uint64 | int64](d *snapDecoder, decode func([]byte) (T, int)) T {
	if d.err != nil {
		return 0
	}
	v, n := decode(d.b[d.pos:])
	switch {
	case n == 0:
		d.fail(errRecordShort)
		return 0
	case n < 0:
		d.failf("varint overflows 64 bits")
		return 0
	}
	d.pos += n
	return v
}

// count reads a number of items that take at least one byte each.
func (d *snapDecoder) count(what string) int {
	at := d.pos
	n := d.uvarint()
	if d.err == nil && n > uint64(d.left()) {
		d.pos = at
		d.failf("%d %s in the %d bytes left", n, what, d.left())
		return 0
	}
	return int(n)
}

// bytes reads a uvarint length and that many bytes, which alias the record.
func (d *snapDecoder) bytes() []byte {
	at := d.pos
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(d.left()) {
		d.pos = at
		d.failf("a length of %d with %d bytes left", n, d.left())
		return nil
	}
	d.pos += int(n)
	return d.b[d.pos-int(n) : d.pos]
}

func (d *snapDecoder) string() string { return string(d.bytes()) }

// times reads first, last and first2xx as appendTimes wrote them.
func (d *snapDecoder) times() (first, last, first2xx int64) {
	at := d.pos
	first = d.varint()
	dl, d2 := d.uvarint(), d.uvarint()
	if d.err != nil {
		return 0, 0, 0
	}
	if first < -maxSnapshotSlot || first > maxSnapshotSlot || dl > maxSnapshotSlot || d2 > dl+1 {
		d.pos = at
		d.failf("first, last and first success out of order or range (%d, +%d, +%d)", first, dl, d2)
		return 0, 0, 0
	}
	last = first + int64(dl)
	if d2 != 0 {
		first2xx = first + int64(d2) - 1
	}
	return first, last, first2xx
}

// record decodes one record of section tag into snap.
func (d *snapDecoder) record(snap *decodedSnapshot, tag byte, res []resolution) {
	switch tag {
	case secMeta:
		ns := d.varint()
		d.uvarint() // the writer's MaxSeries, MaxKeys and RecentCalls
		d.uvarint()
		d.uvarint()
		if snap.version > snapshotVersion2 {
			snap.finestLeftOut = d.uvarint()&metaFinestLeftOut != 0
		}
		snap.written = time.Unix(0, ns).UTC()
	case secRoute:
		if s := d.series(res); d.err == nil {
			snap.series = append(snap.series, s)
		}
	case secUsers, secCompanies, secKeys:
		var c caller
		if d.caller(&c); d.err == nil {
			snap.callers[tag-secUsers] = append(snap.callers[tag-secUsers], c)
		}
	case secRecent:
		var c Call
		if d.call(&c); d.err == nil {
			snap.recent = append(snap.recent, c)
		}
	case secTotals:
		snap.recorded = d.uvarint()
		snap.newest = d.varint()
	case secCounters:
		switch d.byte() {
		case 0:
			key := d.string()
			kind := Dim(d.byte())
			if d.err == nil && kind != DimUser && kind != DimCompany && kind != DimKey {
				d.failf("counter %q of kind %d, want a user, company or key counter", key, kind)
			}
			snap.counters = append(snap.counters, decodedCounter{key: key, kind: kind})
		case 1:
			if len(snap.counters) == 0 {
				d.failf("a counter's caller before any counter")
				return
			}
			var c caller
			if d.caller(&c); d.err == nil {
				dc := &snap.counters[len(snap.counters)-1]
				dc.callers = append(dc.callers, c)
			}
		default:
			if d.err == nil {
				d.failf("counter record of an unknown type")
			}
		}
	}
}

// series decodes a route series, keeping the rings whose width res has, trimmed to the
// slots res keeps.
func (d *snapDecoder) series(res []resolution) *series {
	s := &series{}
	l := &s.labels
	l.Method, l.Endpoint, l.Upstream = d.string(), d.string(), d.string()
	at := d.pos
	if st := d.uvarint(); st > math.MaxUint16 {
		d.pos = at
		d.failf("status %d", st)
	} else {
		l.Status = uint16(st)
	}
	l.Blocked, l.Limited = d.flags()
	s.first, s.last, s.first2xx = d.times()
	s.newest.Store(s.last)
	nrings := d.count("rings")
	var seen [maxResolutions]bool
	for k := 0; k < nrings && d.err == nil; k++ {
		at := d.pos
		secs, slots := d.uvarint(), d.uvarint()
		if d.err != nil {
			break
		}
		if secs == 0 || secs > 1<<32 || slots == 0 || slots > 1<<32 {
			d.pos = at
			d.failf("ring %d: %d slots of %d s", k, slots, secs)
			break
		}
		i := slices.IndexFunc(res, func(r resolution) bool { return r.secs == int64(secs) })
		if i >= 0 && seen[i] {
			d.pos = at
			d.failf("ring %d: a second ring of %d s", k, secs)
			break
		}
		var r *ring
		if i >= 0 {
			seen[i] = true
			r = &s.rings[i]
		}
		d.ring(r, int64(slots))
		if d.err != nil {
			d.err = fmt.Errorf("ring of %d s: %w", secs, d.err)
			break
		}
		if r != nil {
			r.trim(res[i].slots)
		}
	}
	return s
}

// ring decodes the buckets of a ring that kept slots slots into r (nil: decode and drop).
func (d *snapDecoder) ring(r *ring, slots int64) {
	n := d.count("buckets")
	if int64(n) > slots {
		d.failf("%d buckets in a ring of %d", n, slots)
		return
	}
	var buf []bucket
	if r != nil {
		buf = make([]bucket, n)
	}
	var tmp bucket
	var slot, first int64
	for j := 0; j < n; j++ {
		at := d.pos
		if j == 0 {
			slot = d.varint()
		} else {
			gap := d.uvarint()
			if d.err == nil && (gap == 0 || gap > 2*maxSnapshotSlot) {
				d.pos = at
				d.failf("bucket %d: slot gap %d", j, gap)
				return
			}
			slot += int64(gap)
		}
		if d.err == nil && (slot < -maxSnapshotSlot || slot > maxSnapshotSlot) {
			d.pos = at
			d.failf("bucket %d: slot %d out of range", j, slot)
			return
		}
		if j == 0 {
			first = slot
		}
		b := &tmp
		if r != nil {
			b = &buf[j]
		}
		b.slot = slot
		if d.bucket(b); d.err != nil {
			d.err = fmt.Errorf("bucket %d: %w", j, d.err)
			return
		}
	}
	if n > 0 && first <= slot-slots {
		d.failf("buckets from slot %d to %d, more than the ring's %d", first, slot, slots)
		return
	}
	if r != nil {
		*r = ring{buf: buf, size: n, last: slot}
	}
}

// bucket decodes the fields of a bucket after its slot.
func (d *snapDecoder) bucket(b *bucket) {
	at := d.pos
	n := d.uvarint()
	mask := d.uvarint()
	if d.err != nil {
		return
	}
	if n == 0 || n > math.MaxUint32 || mask >= 1<<bucketFields {
		d.pos = at
		d.failf("%d calls, field mask %#x", n, mask)
		return
	}
	var f [bucketFields]uint64
	for i := range f {
		switch {
		case mask&(1<<i) == 0:
		case i == bucketLatSum:
			if raw := d.bytesN(8); raw != nil {
				b.latSum = math.Float64frombits(binary.LittleEndian.Uint64(raw))
			}
		default:
			f[i] = d.uvarint()
		}
	}
	if d.err != nil {
		return
	}
	var fails uint64
	ok := f[bucket4xx] <= n && f[bucket5xx] <= n && f[bucket4xx]+f[bucket5xx] <= n && f[bucketBlocked] <= n && f[bucketLimited] <= n
	for k := range numFailKinds {
		fails += f[bucketFail0+k]
		ok = ok && f[bucketFail0+k] <= n
	}
	if !ok || fails > n || math.IsNaN(b.latSum) || math.IsInf(b.latSum, 0) {
		d.pos = at
		d.failf("counts that do not add up (%d calls: %v, latency sum %g)", n, f, b.latSum)
		return
	}
	b.n, b.n4xx, b.n5xx = uint32(n), uint32(f[bucket4xx]), uint32(f[bucket5xx])
	b.n2xx = b.n - b.n4xx - b.n5xx
	b.blocked, b.limited = uint32(f[bucketBlocked]), uint32(f[bucketLimited])
	for k := range b.fails {
		b.fails[k] = uint32(f[bucketFail0+k])
	}
	b.bytesIn, b.bytesOut = f[bucketBytesIn], f[bucketBytesOut]
	at = d.pos
	if err := b.lat.UnmarshalBinary(d.bytes()); d.err == nil && err != nil {
		d.pos = at
		d.fail(err)
		return
	}
	at = d.pos
	if err := b.callers.UnmarshalBinary(d.bytes()); d.err == nil && err != nil {
		d.pos = at
		d.fail(err)
	}
}

// bytesN reads n bytes.
func (d *snapDecoder) bytesN(n int) []byte {
	if d.err != nil {
		return nil
	}
	if d.left() < n {
		d.fail(errRecordShort)
		return nil
	}
	d.pos += n
	return d.b[d.pos-n : d.pos]
}

// trim drops the buckets more than slots before the newest, as bucketFor would have.
func (r *ring) trim(slots int64) {
	k := 0
	for k < r.size && r.buf[k].slot <= r.last-slots {
		k++
	}
	if k > 0 {
		r.buf = r.buf[k:]
		r.size -= k
	}
}

// caller decodes a caller.
func (d *snapDecoder) caller(c *caller) {
	at := d.pos
	c.id = d.string()
	if d.err == nil && c.id == "" {
		d.pos = at
		d.failf("a caller with an empty id")
		return
	}
	c.first, c.last, c.first2xx = d.times()
	c.hours = d.callerBuckets("hour", CallerHours)
	c.days = d.callerBuckets("day", CallerDays)
	n := d.count("failing pairs")
	if d.err == nil && n > TopFailures {
		d.failf("%d failing pairs, more than %d", n, TopFailures)
		return
	}
	for i := 0; i < n && d.err == nil; i++ {
		if c.fails == nil {
			c.fails = new(topFailures)
		}
		ep := d.string()
		st := d.uvarint()
		cnt := d.uvarint()
		if d.err == nil && (st > 999 || cnt == 0 || cnt > math.MaxUint32) {
			d.failf("failing pair %d: status %d, count %d", i, st, cnt)
			return
		}
		c.fails[i] = Failing{Endpoint: ep, Status: int(st), Count: uint32(cnt)}
	}
}

// callerBuckets decodes the hour or day buckets of a caller, trimmed to the n kept.
func (d *snapDecoder) callerBuckets(what string, n int64) []callerBucket {
	cnt := d.count(what + " buckets")
	if cnt == 0 || d.err != nil {
		return nil
	}
	bs := make([]callerBucket, cnt)
	var slot uint64
	for j := range bs {
		at := d.pos
		v := d.uvarint()
		if j > 0 && v == 0 {
			d.pos = at
			d.failf("%s bucket %d: slot gap 0", what, j)
			return nil
		}
		slot += v
		calls := d.uvarint()
		mask := d.uvarint()
		if d.err != nil {
			return nil
		}
		if v > math.MaxUint32 || slot > math.MaxUint32 || calls == 0 || calls > math.MaxUint32 || mask >= 1<<callerCountsFields {
			d.pos = at
			d.failf("%s bucket %d: slot %d, %d calls, field mask %#x", what, j, slot, calls, mask)
			return nil
		}
		var f [callerCountsFields]uint64
		for i := range f {
			if mask&(1<<i) != 0 {
				f[i] = d.uvarint()
			}
		}
		if d.err == nil && (f[0]+f[1] > calls || f[0] > calls || f[1] > calls || f[2] > calls || f[3] > calls) {
			d.pos = at
			d.failf("%s bucket %d: counts that do not add up (%d calls: %v)", what, j, calls, f)
		}
		if d.err != nil {
			return nil
		}
		b := &bs[j]
		b.slot = uint32(slot)
		b.Calls, b.Status4, b.Status5, b.Blocked, b.Limited = uint32(calls), uint32(f[0]), uint32(f[1]), uint32(f[2]), uint32(f[3])
		b.OK = b.Calls - b.Status4 - b.Status5
	}
	return trimCallerBuckets(bs, n)
}

// call decodes a recent call.
func (d *snapDecoder) call(c *Call) {
	sec := d.varint()
	at := d.pos
	ns := d.uvarint()
	if d.err == nil && ns >= 1e9 {
		d.pos = at
		d.failf("%d nanoseconds", ns)
		return
	}
	c.Time = time.Unix(sec, int64(ns)).UTC()
	c.Method, c.Endpoint, c.Path = d.string(), d.string(), d.string()
	at = d.pos
	st := d.varint()
	if st < math.MinInt32 || st > math.MaxInt32 {
		d.pos = at
		d.failf("status %d", st)
		return
	}
	c.Status = int(st)
	c.Latency = time.Duration(d.varint())
	c.BytesIn, c.BytesOut = d.varint(), d.varint()
	c.User, c.Company, c.Key = d.string(), d.string(), d.string()
	at = d.pos
	if ip := d.bytes(); d.err == nil {
		if err := c.IP.UnmarshalBinary(ip); err != nil {
			d.pos = at
			d.failf("IP address: %v", err)
			return
		}
	}
	c.Upstream = d.string()
	c.Failure = Failure(d.byte())
	c.RequestID = d.string()
	c.Blocked, c.Limited = d.flags()
}

// flags reads the byte of flagBits.
func (d *snapDecoder) flags() (blocked, limited bool) {
	at := d.pos
	f := d.byte()
	if f > 3 {
		d.pos = at
		d.failf("flags %#x", f)
	}
	return f&1 != 0, f&2 != 0
}
