package detector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func init() {
	// Snapshots of the same content are the same bytes: tests compare stores by them.
	snapshotClock = func() time.Time { return time.Date(2026, 11, 24, 13, 0, 0, 0, time.UTC) }
}

func snapshotOf(t testing.TB, s *Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func restored(t testing.TB, snap []byte, cfg Config) (*Store, SnapshotInfo) {
	t.Helper()
	s := New(cfg)
	info, err := s.ReadSnapshot(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	return s, info
}

// sameAnswers checks that two stores answer the same queries alike: route aggregates over
// several filters, groupings, windows and ends, caller history aggregates, every caller's
// history, the recent calls and the stats.
func sameAnswers(t *testing.T, a, b *Store, calls []Call, now time.Time) {
	t.Helper()
	filters := []Filter{{}, {Endpoint: "/users/*", Status: "5xx,429"}, {Blocked: bptr(true)}}
	groups := []DimSet{0, Dims(DimEndpoint, DimStatus), Dims(DimUpstream, DimMethod, DimLimited)}
	windows := []time.Duration{time.Second, 10 * time.Minute, time.Hour, 30 * time.Hour, 10 * 24 * time.Hour}
	ends := []time.Time{now, now.Add(-3 * time.Hour)}
	for _, f := range filters {
		for _, g := range groups {
			for _, win := range windows {
				for _, end := range ends {
					q := Query{Filter: compiled(t, f), GroupBy: g, Window: win, End: end}
					sameAggregates(t, fmt.Sprintf("route %+v/%s/%s/-%s", f, g, win, now.Sub(end)), a, b, &q)
				}
			}
		}
	}
	for _, c := range []struct {
		f Filter
		g DimSet
	}{{Filter{}, Dims(DimUser)}, {Filter{Status: "4xx"}, Dims(DimCompany)}, {Filter{Limited: bptr(true)}, Dims(DimKey)}, {Filter{User: "u-3"}, 0}} {
		for _, win := range []time.Duration{time.Hour, 24 * time.Hour, 20 * 24 * time.Hour} {
			q := Query{Filter: compiled(t, c.f), GroupBy: c.g, Window: win, End: now}
			sameAggregates(t, fmt.Sprintf("callers %+v/%s/%s", c.f, c.g, win), a, b, &q)
		}
	}
	ids := map[Dim]map[string]bool{DimUser: {}, DimCompany: {}, DimKey: {}}
	for i := range calls {
		c := &calls[i]
		ids[DimUser][identity(c.User)] = true
		ids[DimCompany][identity(c.Company)] = true
		ids[DimKey][identity(c.Key)] = true
	}
	for dim, m := range ids {
		for id := range m {
			ha, oka := a.Caller(dim, id)
			hb, okb := b.Caller(dim, id)
			// The top failing pairs are approximate and depend on the order calls came in
			// (TestTopFailures checks them).
			ha.TopFailing, hb.TopFailing = nil, nil
			if oka != okb || !reflect.DeepEqual(ha, hb) {
				t.Errorf("Caller(%s, %q): %v %+v, want %v %+v", dim, id, okb, hb, oka, ha)
			}
		}
	}
	// Calls are applied in the order Flush finds them in its buffers, not quite the order
	// they were recorded in: compare the recent calls kept, in any order.
	if ra, rb := sortedCalls(recentCalls(a)), sortedCalls(recentCalls(b)); !slices.Equal(ra, rb) {
		t.Errorf("recent calls differ: %d and %d", len(ra), len(rb))
	}
	if sa, sb := a.Stats(), b.Stats(); sa != sb {
		t.Errorf("stats %+v, want %+v", sb, sa)
	}
}

// sortedCalls returns the calls as text, sorted.
func sortedCalls(calls []Call) []string {
	out := make([]string, len(calls))
	for i := range calls {
		out[i] = fmt.Sprintf("%+v", calls[i])
	}
	slices.Sort(out)
	return out
}

func compiled(t testing.TB, f Filter) *Matcher {
	m, err := f.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func recentCalls(s *Store) []Call {
	var out []Call
	s.Recent(nil, func(c *Call) bool {
		out = append(out, *c)
		return true
	})
	return out
}

// sameAggregates checks that a and b answer q alike: counts exactly, sketches on every
// quantile and estimate, latency sums up to rounding (merging adds them in another order).
func sameAggregates(t *testing.T, name string, a, b *Store, q *Query) {
	t.Helper()
	ga, erra := a.Aggregate(q)
	gb, errb := b.Aggregate(q)
	if erra != nil || errb != nil {
		t.Fatalf("%s: %v, %v", name, erra, errb)
	}
	if len(ga) != len(gb) {
		t.Errorf("%s: %d groups, want %d", name, len(gb), len(ga))
		return
	}
	SortAggregates(ga, AllDims)
	SortAggregates(gb, AllDims)
	for i := range ga {
		x, y := ga[i], gb[i]
		if math.Abs(x.LatencySum-y.LatencySum) > 1e-9*math.Abs(x.LatencySum) {
			t.Errorf("%s group %+v: latency sum %v, want %v", name, y.Group, y.LatencySum, x.LatencySum)
		}
		for _, p := range []float64{0, 0.1, 0.5, 0.9, 0.99, 1} {
			if qx, qy := x.LatencyQuantile(p), y.LatencyQuantile(p); qx != qy && !(math.IsNaN(qx) && math.IsNaN(qy)) {
				t.Errorf("%s group %+v: p%v %v, want %v", name, y.Group, p*100, qy, qx)
			}
		}
		if x.UniqueCallers() != y.UniqueCallers() {
			t.Errorf("%s group %+v: %d callers, want %d", name, y.Group, y.UniqueCallers(), x.UniqueCallers())
		}
		if (x.Latency == nil) != (y.Latency == nil) || (x.Callers == nil) != (y.Callers == nil) {
			t.Errorf("%s group %+v: sketches present differ", name, y.Group)
		}
		x.LatencySum, y.LatencySum = 0, 0
		x.Latency, y.Latency, x.Callers, y.Callers = nil, nil, nil, nil
		if x != y {
			t.Errorf("%s: %+v, want %+v", name, y, x)
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	w := newWorld(t, 11, 6000)
	snap := snapshotOf(t, w.store)
	s, info := restored(t, snap, Config{})
	sameAnswers(t, w.store, s, w.calls, w.now)
	if a, b := recentCalls(w.store), recentCalls(s); !reflect.DeepEqual(a, b) {
		t.Error("recent calls in another order")
	}
	st := w.store.Stats()
	want := SnapshotInfo{Written: snapshotClock(), Bytes: len(snap), Recorded: 6000, Series: int(st.Series),
		Callers: int(st.Users + st.Companies + st.Keys), Recent: 6000}
	if info != want {
		t.Errorf("info %+v, want %+v", info, want)
	}
	t.Logf("%d calls, %d series, %d callers: %d bytes", len(w.calls), st.Series, info.Callers, len(snap))
}

// A store that recorded some calls and then restores a snapshot of the calls before them
// answers like a store that recorded them all.
func TestSnapshotMergesIntoRecordedCalls(t *testing.T) {
	w := newWorld(t, 12, 5000)
	// Recent calls large enough for all: which ones a full ring keeps depends on the order
	// Flush applies calls in.
	cfg := Config{RecentCalls: len(w.calls)}
	all, older, newer := New(cfg), New(cfg), New(cfg)
	k := len(w.calls) * 2 / 3
	for i := range w.calls {
		all.Record(&w.calls[i])
		if i < k {
			older.Record(&w.calls[i])
		} else {
			newer.Record(&w.calls[i])
		}
	}
	newer.Flush()
	info, err := newer.ReadSnapshot(bytes.NewReader(snapshotOf(t, older)))
	if err != nil {
		t.Fatal(err)
	}
	if info.SeriesMerged == 0 || info.CallersMerged == 0 || info.Recorded != uint64(k) {
		t.Errorf("info %+v: want merged series and callers, %d recorded", info, k)
	}
	sameAnswers(t, all, newer, w.calls, w.now)
}

// Restored recent calls go before those recorded since, and the newest are kept.
func TestSnapshotRecentOrder(t *testing.T) {
	cfg := Config{RecentCalls: 6}
	a, b := New(cfg), New(cfg)
	for i := range 8 {
		c := Call{Time: time.Unix(int64(1790000000+i), 0).UTC(), RequestID: fmt.Sprint(i)}
		if i < 5 {
			a.Record(&c)
			a.Flush()
		} else {
			b.Record(&c)
			b.Flush()
		}
	}
	info, err := b.ReadSnapshot(bytes.NewReader(snapshotOf(t, a)))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range recentCalls(b) {
		ids = append(ids, c.RequestID)
	}
	if got := strings.Join(ids, ","); got != "7,6,5,4,3,2" || info.Recent != 3 {
		t.Errorf("recent calls %s (%d restored), want 7,6,5,4,3,2 (3 restored)", got, info.Recent)
	}
}

// A restored store goes on recording: buckets continue and rings expire as they would
// have in the store the snapshot was taken of.
func TestSnapshotRestoredKeepsRecording(t *testing.T) {
	w := newWorld(t, 13, 5000)
	s, _ := restored(t, snapshotOf(t, w.store), Config{})
	more := newWorld(t, 14, 2000).calls
	shift := 25 * time.Minute // past the 1 s ring's 10 minutes: old buckets expire
	all := append(slices.Clone(w.calls), more...)
	for i := range more {
		more[i].Time = more[i].Time.Add(shift)
		w.store.Record(&more[i])
		s.Record(&more[i])
	}
	sameAnswers(t, w.store, s, all, w.now.Add(shift))
	for _, at := range []time.Time{w.now.Add(2 * time.Hour), w.now.Add(40 * 24 * time.Hour)} {
		if a, b := w.store.Sweep(at), s.Sweep(at); a != b {
			t.Errorf("Sweep(%s): %d series removed, want %d", at, b, a)
		}
		if a, b := w.store.Stats(), s.Stats(); a != b {
			t.Errorf("stats after Sweep(%s): %+v, want %+v", at, b, a)
		}
	}
}

// Restoring respects the store's caps: the most recently active series keep their own,
// the others are folded into "other" with their calls; callers beyond MaxKeys are left out.
func TestSnapshotLowerCaps(t *testing.T) {
	w := newWorld(t, 15, 5000)
	snap := snapshotOf(t, w.store)
	orig := w.store.Stats()
	const maxSeries, maxKeys = 40, 64 // one caller per shard
	s, info := restored(t, snap, Config{MaxSeries: maxSeries, MaxKeys: maxKeys})
	st := s.Stats()
	if info.Series != maxSeries || info.SeriesFolded == 0 || info.Series+info.SeriesFolded+info.SeriesMerged != int(orig.Series) {
		t.Errorf("info %+v: want %d series of their own, the rest of %d folded", info, maxSeries, orig.Series)
	}
	if st.Overflow == 0 {
		t.Error("no calls counted as overflow")
	}
	// The series kept are the most recently active ones.
	kept := map[Labels]bool{}
	var oldestKept int64 = math.MaxInt64
	for _, sr := range s.route.series() {
		if sr.labels.Endpoint != Other {
			kept[sr.labels] = true
			oldestKept = min(oldestKept, sr.last)
		}
	}
	for _, sr := range w.store.route.series() {
		if !kept[sr.labels] && sr.last > oldestKept {
			t.Errorf("series %+v (last call %d) folded while one with last call %d was kept", sr.labels, sr.last, oldestKept)
		}
	}
	// Folded calls still count in totals.
	for _, win := range []time.Duration{time.Minute, time.Hour, 10 * 24 * time.Hour} {
		q := Query{Window: win, End: w.now}
		sameAggregates(t, fmt.Sprintf("totals over %s", win), w.store, s, &q)
	}
	callers := int(orig.Users + orig.Companies + orig.Keys)
	if got := int(st.Users + st.Companies + st.Keys); got > 3*maxKeys || got != info.Callers || got+info.CallersDropped != callers {
		t.Errorf("%d callers kept, %d dropped of %d (info %+v), cap %d per kind", got, info.CallersDropped, callers, info, maxKeys)
	}
	if st.Evictions != uint64(info.CallersDropped) {
		t.Errorf("%d evictions, want %d", st.Evictions, info.CallersDropped)
	}
	// The callers kept are the most recently active of their shard.
	for k, x := range s.callers {
		oldestKept := map[*callerShard]int64{}
		for i := range x.shards {
			sh := &x.shards[i]
			for _, c := range sh.slab {
				if v, ok := oldestKept[sh]; !ok || c.last < v {
					oldestKept[sh] = c.last
				}
			}
		}
		for i := range w.store.callers[k].shards {
			for _, c := range w.store.callers[k].shards[i].slab {
				sh := x.shard(c.id)
				if _, ok := sh.m[c.id]; !ok && c.last > oldestKept[sh] {
					t.Errorf("caller %q (last call %d) dropped while one with last call %d was kept", c.id, c.last, oldestKept[sh])
				}
			}
		}
	}
}

// damagedTarget is a store with calls of its own, for reads that must change nothing.
func damagedTarget(t *testing.T) (*Store, []byte) {
	s := newWorld(t, 21, 100).store
	return s, snapshotOf(t, s)
}

func TestSnapshotRejectsTruncation(t *testing.T) {
	snap := snapshotOf(t, newWorld(t, 20, 100).store)
	s, before := damagedTarget(t)
	cuts := 0
	step := len(snap)/400 + 1
	for n := 0; n < len(snap); n++ {
		if n > 40 && n < len(snap)-40 && n%step != 0 {
			continue
		}
		cuts++
		_, err := s.ReadSnapshot(bytes.NewReader(snap[:n]))
		if !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("snapshot cut to %d of %d bytes: error %v, want ErrBadSnapshot", n, len(snap), err)
		}
	}
	if after := snapshotOf(t, s); !bytes.Equal(before, after) {
		t.Error("a rejected snapshot changed the store")
	}
	t.Logf("%d bytes, %d cuts rejected (every %d bytes, and near both ends)", len(snap), cuts, step)
}

func TestSnapshotRejectsCorruption(t *testing.T) {
	snap := snapshotOf(t, newWorld(t, 20, 100).store)
	s, before := damagedTarget(t)
	bad := slices.Clone(snap)
	step := len(snap)/400 + 1
	for i := range snap {
		if i > 40 && i < len(snap)-40 && i%step != 0 {
			continue
		}
		x := []byte{1, 0x80, 0xff, 0x10}[i%4]
		bad[i] ^= x
		_, err := s.ReadSnapshot(bytes.NewReader(bad))
		bad[i] ^= x
		if !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("byte %d of %d xor %#x: error %v, want ErrBadSnapshot", i, len(snap), x, err)
		}
	}
	if after := snapshotOf(t, s); !bytes.Equal(before, after) {
		t.Error("a rejected snapshot changed the store")
	}
}

// withChecksum returns b with its last 4 bytes replaced by the checksum of the others, so
// that a test reaches the decoder's own checks.
func withChecksum(b []byte) []byte {
	b = slices.Clone(b)
	if len(b) >= 4 {
		binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
	}
	return b
}

func TestSnapshotErrors(t *testing.T) {
	snap := snapshotOf(t, newWorld(t, 22, 200).store)
	recordAt := len(snapshotMagic) + 1 + 1 // header, meta tag
	metaEnd := recordAt + 1 + int(snap[recordAt])
	longMeta := slices.Concat(snap[:recordAt], []byte{snap[recordAt] + 1}, snap[recordAt+1:metaEnd], []byte{0}, snap[metaEnd:])
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "header, at offset 0: not a Vigil snapshot"},
		{"other file", []byte("{\"rules\": []}"), "not a Vigil snapshot"},
		{"version 4", append([]byte(snapshotMagic), 4, 0, 0, 0, 0), "format version 4, this build reads versions 1 to 3 only"},
		{"header only", []byte(snapshotMagic + "\x01"), "section meta, at offset 9: truncated: the snapshot ends here"},
		{"checksum", append(slices.Clone(snap[:len(snap)-1]), snap[len(snap)-1]^1), "checksum, at offset " + fmt.Sprint(len(snap)-4)},
		{"truncated", snap[:metaEnd-1], fmt.Sprintf("section meta, record 0, at offset %d: record of %d bytes from offset %d: truncated", metaEnd-1, snap[recordAt], recordAt)},
		{"truncated record", snap[:len(snap)/2], "truncated: the snapshot ends here"},
		{"trailing bytes", withChecksum(append(slices.Clone(snap), 0, 0, 0, 0)), fmt.Sprintf("checksum, at offset %d: bytes after the checksum", len(snap))},
		{"meta record length", slices.Concat(snap[:recordAt], []byte{0xff, 0xff, 0x7f}, snap[recordAt+1:]), fmt.Sprintf("section meta, record 0, at offset %d: record of 2097151 bytes from offset 10: truncated", len(snap)+2)},
		{"long record, good checksum", withChecksum(longMeta), fmt.Sprintf("section meta, record 0, at offset %d: 1 bytes after the end of the record (the checksum matches: the snapshot was written wrong)", metaEnd)},
		{"long record, bad checksum", longMeta, "1 bytes after the end of the record (and the checksum does not match: the snapshot is damaged)"},
		{"section order", withChecksum(slices.Concat(snap[:recordAt-1], []byte{secRoute}, snap[recordAt:])), "section meta, at offset 9: section tag 2, want 1 (meta)"},
	}
	s, before := damagedTarget(t)
	for _, c := range cases {
		_, err := s.ReadSnapshot(bytes.NewReader(c.b))
		var se *SnapshotError
		if !errors.Is(err, ErrBadSnapshot) || !errors.As(err, &se) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want ErrBadSnapshot saying %q", c.name, err, c.want)
		}
	}
	// A failing reader is an I/O error, not a bad snapshot.
	_, err := s.ReadSnapshot(io.MultiReader(bytes.NewReader(snap[:100]), iotest{}))
	if err == nil || errors.Is(err, ErrBadSnapshot) {
		t.Errorf("reader error: %v, want an error that is not ErrBadSnapshot", err)
	}
	if after := snapshotOf(t, s); !bytes.Equal(before, after) {
		t.Error("a rejected snapshot changed the store")
	}
}

type iotest struct{}

func (iotest) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// TestSnapshotCoversEveryField fails when a struct the snapshot encodes gains a field:
// encode it (and bump snapshotVersion if the layout changes), then update the count.
func TestSnapshotCoversEveryField(t *testing.T) {
	for _, c := range []struct {
		v      any
		fields int
	}{{bucket{}, 13 + numFailKinds - 4 /* appendBucket writes 4 failure kinds */}, {caller{}, 7}, {CallerCounts{}, 6}, {callerBucket{}, 2}, {Call{}, 17}, {Labels{}, 9}, {series{}, 8}} {
		if n := reflect.TypeOf(c.v).NumField(); n != c.fields {
			t.Errorf("%T has %d fields, the snapshot knows %d", c.v, n, c.fields)
		}
	}
	// Every field of a recent call survives.
	c := Call{Time: time.Unix(1790000000, 123456789).UTC(), Method: "PATCH", Endpoint: "/e", Path: "/e/1", Status: 418,
		Latency: -time.Millisecond, BytesIn: 1, BytesOut: -2, User: "u", Company: "c", Key: "key:1",
		IP: netip.MustParseAddr("fe80::1%eth0"), Upstream: "up:1", Failure: FailureTLS, RequestID: "r", Blocked: true, Limited: true}
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("test call leaves %s zero", v.Type().Field(i).Name)
		}
	}
	s := New(Config{})
	s.Record(&c)
	r, _ := restored(t, snapshotOf(t, s), Config{})
	if got := recentCalls(r); len(got) != 1 || !reflect.DeepEqual(got[0], c) {
		t.Errorf("recent call %+v, want %+v", got, c)
	}
}

// Snapshots are written and read while calls are being recorded (run with -race).
func TestSnapshotWhileRecording(t *testing.T) {
	w := newWorld(t, 23, 2000)
	target := New(Config{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range []*Store{w.store, target} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			calls := newWorld(t, 24, 1000).calls
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s.Record(&calls[i%len(calls)])
				if i%500 == 0 {
					s.Sweep(w.now)
					time.Sleep(time.Millisecond) // leave the other core some time
				}
			}
		}()
	}
	for range 2 {
		snap := snapshotOf(t, w.store)
		if _, err := target.ReadSnapshot(bytes.NewReader(snap)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if _, err := New(Config{}).ReadSnapshot(bytes.NewReader(snapshotOf(t, target))); err != nil {
		t.Fatal(err)
	}
}

func FuzzReadSnapshot(f *testing.F) {
	f.Add(snapshotOf(f, newWorld(f, 25, 30).store))
	f.Add(snapshotOf(f, New(Config{})))
	f.Add([]byte(snapshotMagic + "\x01"))
	f.Add([]byte{})
	c := Call{Time: time.Unix(1790000000, 0), Method: "GET", Endpoint: "/x", Status: 200, User: "u-1"}
	var s *Store // reused while inputs are rejected, which must leave it as it was
	var before []byte
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, withChecksum(b)} {
			if s == nil {
				s = New(Config{MaxSeries: 20, MaxKeys: 64, RecentCalls: 10})
				s.Record(&c)
				before = snapshotOf(t, s)
			}
			if _, err := s.ReadSnapshot(bytes.NewReader(in)); err != nil {
				if !errors.Is(err, ErrBadSnapshot) {
					t.Fatalf("error %v does not wrap ErrBadSnapshot", err)
				}
				if after := snapshotOf(t, s); !bytes.Equal(before, after) {
					t.Fatal("a rejected snapshot changed the store")
				}
				continue
			}
			// Whatever was accepted, the store keeps working.
			s.Record(&c)
			s.Stats()
			for _, q := range []Query{{Window: time.Minute, End: c.Time}, {GroupBy: Dims(DimUser), Window: 30 * 24 * time.Hour, End: c.Time},
				{GroupBy: Dims(DimEndpoint, DimStatus), Window: 30 * 24 * time.Hour, End: c.Time}} {
				if _, err := s.Aggregate(&q); err != nil {
					t.Fatal(err)
				}
			}
			s.Caller(DimUser, "u-1")
			recentCalls(s)
			s.Sweep(c.Time)
			if _, err := New(Config{}).ReadSnapshot(bytes.NewReader(snapshotOf(t, s))); err != nil {
				t.Fatalf("the snapshot of a restored store does not read back: %v", err)
			}
			s = nil
		}
	})
}

// A filtered caller counter's counts survive a restart, whether its rule is set up
// before the snapshot is read or after; a version 1 snapshot (no counters) still reads.
func TestSnapshotKeepsCallerCounters(t *testing.T) {
	f := Filter{Status: "400,404"}
	m, err := f.Compile()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	s := New(Config{})
	cnt := s.CountCallers(DimUser, m)
	for i, st := range []int{400, 404, 404, 500, 200, 400} {
		s.Record(&Call{Time: at.Add(time.Duration(i) * time.Hour), Method: "GET", Endpoint: "/a", Status: st, User: "u-1"})
	}
	s.Record(&Call{Time: at, Method: "GET", Endpoint: "/a", Status: 404, User: "u-2"})
	s.Flush()
	end := at.Add(24 * time.Hour)
	if n := cnt.CountApplied("u-1", 7*24*time.Hour, end).Calls; n != 4 {
		t.Fatalf("before: u-1 counted %d, want 4", n)
	}
	snap := snapshotOf(t, s)

	after, info := restored(t, snap, Config{}) // the rule comes after the snapshot is read
	if info.Counters != 1 || info.CounterCallers != 2 {
		t.Fatalf("info %+v, want 1 counter of 2 callers", info)
	}
	c2 := after.CountCallers(DimUser, m)
	if n := c2.CountApplied("u-1", 7*24*time.Hour, end).Calls; n != 4 {
		t.Errorf("rule after restore: u-1 counted %d, want 4", n)
	}
	if n := c2.CountApplied("u-2", 7*24*time.Hour, end).Calls; n != 1 {
		t.Errorf("rule after restore: u-2 counted %d, want 1", n)
	}
	of := Filter{Status: "500"}
	other, _ := of.Compile()
	if n := after.CountCallers(DimUser, other).CountApplied("u-1", 7*24*time.Hour, end).Calls; n != 0 {
		t.Errorf("another filter took the counts: %d", n)
	}

	before := New(Config{}) // the rule is set up first, then the snapshot read
	c3 := before.CountCallers(DimUser, m)
	before.Record(&Call{Time: end, Method: "GET", Endpoint: "/a", Status: 400, User: "u-1"})
	if _, err := before.ReadSnapshot(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	before.Flush()
	if n := c3.CountApplied("u-1", 7*24*time.Hour, end.Add(time.Hour)).Calls; n != 5 {
		t.Errorf("rule before restore: u-1 counted %d, want 4 restored + 1 new", n)
	}

	// Unclaimed counts are dropped when the next snapshot is written.
	lone, _ := restored(t, snap, Config{})
	_ = snapshotOf(t, lone)
	if n := lone.CountCallers(DimUser, m).CountApplied("u-1", 7*24*time.Hour, end).Calls; n != 0 {
		t.Errorf("counts claimed after the next snapshot: %d", n)
	}

	// The same store as a version 1 snapshot: no counters section.
	plain := snapshotOf(t, New(Config{}))
	body := plain[:len(plain)-4]
	if !bytes.HasSuffix(body, []byte{secCounters, 0, secEnd}) || body[len(snapshotMagic)] != snapshotVersion {
		t.Fatalf("unexpected layout % x", body[len(body)-8:])
	}
	v1 := append(withoutMetaFlags(t, body[:len(body)-3]), secEnd)
	v1[len(snapshotMagic)] = snapshotVersion1
	v1 = binary.LittleEndian.AppendUint32(v1, crc32.Checksum(v1, crc32.MakeTable(crc32.Castagnoli)))
	if _, err := New(Config{}).ReadSnapshot(bytes.NewReader(v1)); err != nil {
		t.Errorf("version 1 snapshot: %v", err)
	}
	// And as a version 2 snapshot: counters, but no flags in the meta record.
	v2 := withoutMetaFlags(t, body)
	v2[len(snapshotMagic)] = snapshotVersion2
	v2 = binary.LittleEndian.AppendUint32(v2, crc32.Checksum(v2, crc32.MakeTable(crc32.Castagnoli)))
	if _, err := New(Config{}).ReadSnapshot(bytes.NewReader(v2)); err != nil {
		t.Errorf("version 2 snapshot: %v", err)
	}
}

// withoutMetaFlags returns a copy of the snapshot body b (no checksum) whose meta record
// has no flags, as versions 1 and 2 wrote it.
func withoutMetaFlags(t *testing.T, b []byte) []byte {
	t.Helper()
	at := len(snapshotMagic) + 1 // after the version, one byte: the meta tag
	if b[at] != secMeta || b[at+1] >= 0x80 || b[at+1+int(b[at+1])] != 0 {
		t.Fatalf("unexpected meta record % x", b[at:at+2])
	}
	n := int(b[at+1])
	out := append(slices.Clone(b[:at]), secMeta, byte(n-1))
	out = append(out, b[at+2:at+1+n]...) // the record but its last byte, the flags (0)
	return append(out, b[at+2+n:]...)
}

// A base written at a cut and a delta written later, at the same cut, read back into a
// store in either order, answer as the store that wrote them: no bucket is in both, none
// is missing, and the top failing pairs, recent calls and totals come once, from the
// delta.
func TestSnapshotBaseAndDelta(t *testing.T) {
	w := newWorld(t, 13, 6000)
	cut := w.now.Add(-3 * time.Hour).Truncate(time.Hour)
	cfg := Config{RecentCalls: len(w.calls)}
	s := New(cfg)
	var late []Call
	for i := range w.calls {
		if w.calls[i].Time.Before(cut) {
			s.Record(&w.calls[i])
		} else {
			late = append(late, w.calls[i])
		}
	}
	var base, delta bytes.Buffer
	if err := s.WriteSnapshotPart(&base, SnapshotBase, cut); err != nil {
		t.Fatal(err)
	}
	for i := range late {
		s.Record(&late[i])
	}
	if err := s.WriteSnapshotPart(&delta, SnapshotDelta, cut); err != nil {
		t.Fatal(err)
	}
	full := snapshotOf(t, s)
	if base.Len() >= len(full) || delta.Len() >= len(full) {
		t.Errorf("base %d and delta %d bytes, want each less than the full %d", base.Len(), delta.Len(), len(full))
	}
	for _, order := range [][]*bytes.Buffer{{&base, &delta}, {&delta, &base}} {
		r := New(cfg)
		for _, part := range order {
			if _, err := r.ReadSnapshot(bytes.NewReader(part.Bytes())); err != nil {
				t.Fatal(err)
			}
		}
		finestLeftOut(t, s, r, w.now)
		sameAnswers(t, s, r, w.calls, w.now)
		for _, id := range []string{"u-1", "u-7", Anonymous} {
			a, _ := s.Caller(DimUser, id)
			b, _ := r.Caller(DimUser, id)
			if !reflect.DeepEqual(a.TopFailing, b.TopFailing) {
				t.Errorf("%s's top failing pairs %+v, want %+v", id, b.TopFailing, a.TopFailing)
			}
		}
	}
	t.Logf("full %d bytes, base %d, delta %d", len(full), base.Len(), delta.Len())
}

// finestLeftOut checks what a store r that read a delta answers without its finest ring,
// which the delta leaves out: a short window up to now, which the live store s answers
// from one-second buckets, is answered from minute buckets, so that it holds at least
// the calls of the window (never none for want of the one-second buckets). Then it has
// s answer from the same rings, for sameAnswers.
func finestLeftOut(t *testing.T, s, r *Store, now time.Time) {
	t.Helper()
	newest := s.lastEpoch.Load()
	if got := r.route.fineFrom.Load(); got != newest+1 {
		t.Fatalf("after a delta the finest ring holds every call from %d, want %d (after the newest call)", got, newest+1)
	}
	for _, win := range []time.Duration{time.Minute, 10 * time.Minute} {
		q := Query{Window: win, End: now}
		live, err1 := s.Aggregate(&q)
		read, err2 := r.Aggregate(&q)
		if err1 != nil || err2 != nil || len(live) != 1 || len(read) != 1 || read[0].Total < live[0].Total || live[0].Total == 0 {
			t.Fatalf("%s up to now: %+v (%v) from the snapshot, %+v (%v) live: want at least the live calls", win, read, err2, live, err1)
		}
	}
	s.route.fineFrom.Store(r.route.fineFrom.Load())
}

// TestSnapshotSegments: a base, the segments that follow it end to end (one across a
// midnight, where callers' days close) and the delta of the last segment's end, read in
// any order, restore what a full snapshot would; a segment holds only its own buckets.
func TestSnapshotSegments(t *testing.T) {
	w := newWorld(t, 17, 6000)
	day := w.now.Truncate(24 * time.Hour)
	cuts := []time.Time{day.Add(-5 * time.Hour), day.Add(-2 * time.Hour), day.Add(time.Hour), w.now.Add(-time.Hour).Truncate(time.Hour)}
	if !cuts[2].Before(cuts[3]) || !w.calls[0].Time.Before(cuts[0]) {
		t.Fatalf("the world's calls (from %v) and cuts %v do not fit the test", w.calls[0].Time, cuts)
	}
	cfg := Config{RecentCalls: len(w.calls)}
	s := New(cfg)
	for i := range w.calls {
		s.Record(&w.calls[i])
	}
	var parts []*bytes.Buffer
	add := func(write func(*bytes.Buffer) error) {
		t.Helper()
		var b bytes.Buffer
		if err := write(&b); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, &b)
	}
	add(func(b *bytes.Buffer) error { return s.WriteSnapshotPart(b, SnapshotBase, cuts[0]) })
	for i := 1; i < len(cuts); i++ {
		add(func(b *bytes.Buffer) error { return s.WriteSnapshotSegment(b, cuts[i-1], cuts[i]) })
	}
	add(func(b *bytes.Buffer) error { return s.WriteSnapshotPart(b, SnapshotDelta, cuts[len(cuts)-1]) })
	full := snapshotOf(t, s)
	total := 0
	for _, p := range parts {
		total += p.Len()
	}
	for _, order := range [][]int{{0, 1, 2, 3, 4}, {4, 2, 0, 3, 1}} {
		r := New(cfg)
		for _, i := range order {
			if _, err := r.ReadSnapshot(bytes.NewReader(parts[i].Bytes())); err != nil {
				t.Fatal(err)
			}
		}
		finestLeftOut(t, s, r, w.now)
		sameAnswers(t, s, r, w.calls, w.now)
		a, _ := s.Caller(DimUser, "u-1")
		b, _ := r.Caller(DimUser, "u-1")
		if !reflect.DeepEqual(a, b) {
			t.Errorf("u-1 after order %v: %+v, want %+v", order, b, a)
		}
	}
	// A segment has the calls between its cuts and no others.
	r := New(cfg)
	if _, err := r.ReadSnapshot(bytes.NewReader(parts[2].Bytes())); err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range w.calls {
		if !w.calls[i].Time.Before(cuts[1]) && w.calls[i].Time.Before(cuts[2]) {
			want++
		}
	}
	aggs, err := r.Aggregate(&Query{Window: w.now.Sub(w.calls[0].Time) + time.Hour, End: w.now})
	if err != nil || len(aggs) != 1 || aggs[0].Total != uint64(want) || want == 0 {
		t.Fatalf("the segment from %v to %v restores %+v (%v), want %d calls", cuts[1], cuts[2], aggs, err, want)
	}
	if err := s.WriteSnapshotSegment(new(bytes.Buffer), cuts[1], cuts[1]); err == nil {
		t.Error("an empty segment was written")
	}
	if err := s.WriteSnapshotPart(new(bytes.Buffer), SnapshotSegment, cuts[1]); err == nil {
		t.Error("WriteSnapshotPart wrote a segment, which has two cuts")
	}
	t.Logf("full %d bytes; base, segments and delta %d in all", len(full), total)
}
