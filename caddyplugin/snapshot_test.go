package caddyplugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/vigilgw/vigil/caddyplugin/limit"
	"github.com/vigilgw/vigil/detector"
)

// recordOrders records n calls of u-1 to GET /v1/orders at at.
func recordOrders(e *engine, at time.Time, n int) {
	for range n {
		e.store.Record(&detector.Call{Time: at, Method: "GET", Endpoint: "/v1/orders", Status: 200, User: "u-1"})
	}
}

// TestSnapshotBaseAndDelta checks how the engine saves its state: a base of the store's
// buckets before the cut, written at the first save and not again until it moves on, and
// a delta of the rest written every time; a restart reads both, or the base alone when
// the delta goes with an older cut or is damaged (kept aside).
func TestSnapshotBaseAndDelta(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	app := &App{storage: &certmagic.FileStorage{Path: dir}}
	now := time.Date(2026, 11, 24, 12, 30, 0, 0, time.UTC)
	newAt := func() *engine {
		e := newEngine(app, slog.New(slog.DiscardHandler))
		e.setClock(now)
		return e
	}
	count := func(e *engine) uint64 {
		var f detector.Filter
		m, err := f.Compile()
		if err != nil {
			t.Fatal(err)
		}
		aggs, err := e.store.Aggregate(&detector.Query{Filter: m, Window: 24 * time.Hour, End: now})
		if err != nil || len(aggs) != 1 {
			t.Fatalf("aggregate: %v %v", aggs, err)
		}
		return aggs[0].Count
	}
	q := limit.Quota{Limit: 1000, Period: limit.Day}
	used := func(e *engine) int64 {
		u, err := e.limiter.QuotaUsage(ctx, "site/user", "u-1", q, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		return u.Used
	}

	e := newAt()
	recordOrders(e, now.Add(-2*time.Hour), 5)    // before the cut (12:20): in the base
	recordOrders(e, now.Add(-10*time.Minute), 3) // after it: in the delta
	e.saveSnapshot(app.storage)
	base, err := app.storage.Load(ctx, snapshotKey())
	if err != nil {
		t.Fatal(err)
	}
	recordOrders(e, now.Add(-time.Minute), 4)
	if _, err := e.limiter.AddQuota(ctx, "site/user", "u-1", q, nil, now, 7); err != nil {
		t.Fatal(err)
	}
	e.saveSnapshot(app.storage)
	if again, _ := app.storage.Load(ctx, snapshotKey()); string(again) != string(base) {
		t.Fatal("the base was written again before the cut moved on")
	}
	if st := e.snapStats; st.Base.Writes != 1 || st.Delta.Writes != 2 || st.Base.Failures+st.Delta.Failures != 0 ||
		st.Base.Bytes != int64(len(base)) || st.Delta.Bytes == 0 || st.LastSuccess.IsZero() {
		t.Fatalf("snapshot stats %+v", st)
	}
	// A storage that fails: counted, and the parts in the good storage stay a pair.
	file := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.chainCut.Store(0) // as when nothing is in storage: a base is due
	e.saveSnapshot(&certmagic.FileStorage{Path: file})
	if st := e.snapStats; st.Base.Failures != 1 || st.Delta.Failures != 0 || st.Delta.Writes != 2 {
		t.Fatalf("snapshot stats after a failing storage %+v, want one base failure and no delta tried", st)
	}
	e.chainCut.Store(cutAt(now).Unix())

	r := newAt()
	if got := count(r); got != 12 {
		t.Fatalf("restored %d calls, want 12 (5 from the base, 7 from the delta)", got)
	}
	if got := used(r); got != 7 {
		t.Fatalf("restored quota used %d, want 7 (the delta's, newer than the base's)", got)
	}
	if r.chainCut.Load() != cutAt(now).Unix() {
		t.Fatalf("restored base cut %d", r.chainCut.Load())
	}

	// A delta of another base (the gateway stopped between the two writes): base alone.
	other, err := e.encodeSnapshot(detector.SnapshotDelta, time.Time{}, now.Add(-time.Hour).Truncate(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	delta, _ := app.storage.Load(ctx, deltaKey(snapshotKey()))
	if err := app.storage.Store(ctx, deltaKey(snapshotKey()), other); err != nil {
		t.Fatal(err)
	}
	if got := count(newAt()); got != 5 {
		t.Fatalf("with another base's delta: %d calls, want the base's 5", got)
	}

	// A damaged delta: base alone, the delta kept aside.
	delta[len(delta)/2] ^= 0xff
	if err := app.storage.Store(ctx, deltaKey(snapshotKey()), delta); err != nil {
		t.Fatal(err)
	}
	if got := count(newAt()); got != 5 {
		t.Fatalf("with a damaged delta: %d calls, want the base's 5", got)
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "vigil", "snapshot", "*.delta.corrupt-*"))
	if len(aside) != 1 {
		t.Fatalf("the damaged delta was not kept aside: %v", aside)
	}
}

// TestSnapshotVersion1 checks that a snapshot of the format before bases and deltas
// (version 1: no part or cut) is restored as a full one, and that the next save writes
// a base and a delta.
func TestSnapshotVersion1(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	app := &App{storage: &certmagic.FileStorage{Path: dir}}
	now := time.Date(2026, 11, 24, 12, 30, 0, 0, time.UTC)
	store := detector.New(detector.Config{})
	for range 6 {
		store.Record(&detector.Call{Time: now.Add(-3 * time.Hour), Method: "GET", Endpoint: "/v1/orders", Status: 200, User: "u-1"})
	}
	var st bytes.Buffer
	if err := store.WriteSnapshot(&st); err != nil {
		t.Fatal(err)
	}
	v1 := append([]byte(snapshotMagic), 1)
	for _, sec := range [][]byte{st.Bytes(), []byte(`{"rules": []}`), []byte(`[]`), []byte(`[]`), []byte(`[]`)} {
		v1 = binary.AppendUvarint(v1, uint64(len(sec)))
		v1 = append(v1, sec...)
	}
	sum := sha256.Sum256(v1)
	if err := app.storage.Store(ctx, snapshotKey(), append(v1, sum[:]...)); err != nil {
		t.Fatal(err)
	}
	e := newEngine(app, slog.New(slog.DiscardHandler))
	e.setClock(now)
	if got := e.store.Stats().Recorded; got != 6 {
		t.Fatalf("restored %d calls from a version 1 snapshot, want 6", got)
	}
	if e.chainCut.Load() != 0 {
		t.Fatal("a version 1 snapshot taken for a base")
	}
	e.saveSnapshot(app.storage)
	for _, k := range []string{snapshotKey(), deltaKey(snapshotKey())} {
		if !app.storage.Exists(ctx, k) {
			t.Fatalf("no %s after the first save", k)
		}
	}
}

// TestSnapshotSegments: as the cut moves on, the base stays and a segment per move is
// written; a restart reads the base, the segments and the delta; a segment written just
// before a stop, without its delta, is skipped (its calls are in the delta of the cut
// before); a missing segment loses its hours only; a damaged one is kept aside; a day
// later the base is written again and the segments are deleted. A version 2 base and
// delta (before segments) are restored too.
func TestSnapshotSegments(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	app := &App{storage: &certmagic.FileStorage{Path: dir}}
	t0 := time.Date(2026, 11, 24, 12, 30, 0, 0, time.UTC)
	at := func(now time.Time) *engine {
		e := newEngine(app, slog.New(slog.DiscardHandler))
		e.setClock(now)
		return e
	}
	count := func(e *engine, end time.Time) uint64 {
		aggs, err := e.store.Aggregate(&detector.Query{Window: 40 * time.Hour, End: end})
		if err != nil || len(aggs) != 1 {
			t.Fatalf("aggregate: %v %v", aggs, err)
		}
		return aggs[0].Total
	}
	segments := func() []string {
		keys, _ := app.storage.List(ctx, segmentsKey(snapshotKey()), false)
		slices.Sort(keys)
		return keys
	}

	e := at(t0)
	recordOrders(e, t0.Add(-2*time.Hour), 5) // 10:30: in the base (cut 12:20)
	recordOrders(e, t0.Add(-time.Minute), 1) // 12:29: in the delta, then the first segment
	e.saveSnapshot(app.storage)
	base, _ := app.storage.Load(ctx, snapshotKey())
	for h := 1; h <= 2; h++ { // 13:30 and 14:30: a segment each
		now := t0.Add(time.Duration(h) * time.Hour)
		e.setClock(now)
		recordOrders(e, now.Add(-time.Minute), 10*h)
		e.saveSnapshot(app.storage)
	}
	if again, _ := app.storage.Load(ctx, snapshotKey()); !bytes.Equal(again, base) {
		t.Fatal("the base was written again within the day")
	}
	cut := func(h int) int64 { return cutAt(t0.Add(time.Duration(h) * time.Hour)).Unix() }
	want := []string{segmentKey(snapshotKey(), cut(0), cut(1)), segmentKey(snapshotKey(), cut(1), cut(2))}
	if got := segments(); !slices.Equal(got, want) {
		t.Fatalf("segments %v, want %v", got, want)
	}
	if st := e.snapStats; st.Base.Writes != 1 || st.Segment.Writes != 2 || st.Delta.Writes != 3 || st.Segment.Bytes == 0 ||
		st.Segment.Bytes >= st.Base.Bytes+st.Delta.Bytes {
		t.Fatalf("snapshot stats %+v", st)
	}
	t2 := t0.Add(2 * time.Hour)
	r := at(t2)
	if got := count(r, t2); got != 36 || r.chainCut.Load() != cut(2) || r.baseAt.Load() != cut(0) {
		t.Fatalf("restored %d calls, cuts %d and %d; want 36 (5+1+10+20), %d and %d", got, r.chainCut.Load(), r.baseAt.Load(), cut(2), cut(0))
	}

	// A shorter segment from the same cut (written before a stop that lost its delta) is
	// passed over for the longer one written after the restart.
	short, err := e.encodeSnapshot(detector.SnapshotSegment, time.Unix(cut(0), 0), time.Unix(cut(0)+1800, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := app.storage.Store(ctx, segmentKey(snapshotKey(), cut(0), cut(0)+1800), short); err != nil {
		t.Fatal(err)
	}
	if got := count(at(t2), t2); got != 36 {
		t.Fatalf("with a shorter segment beside the first: %d calls, want 36", got)
	}
	if err := app.storage.Delete(ctx, segmentKey(snapshotKey(), cut(0), cut(0)+1800)); err != nil {
		t.Fatal(err)
	}

	// Stopped between a segment and its delta: the delta of the cut before has its calls.
	t3 := t0.Add(3 * time.Hour)
	e.setClock(t3)
	recordOrders(e, t3.Add(-time.Minute), 7)
	late, err := e.encodeSnapshot(detector.SnapshotSegment, time.Unix(cut(2), 0), time.Unix(cut(3), 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := app.storage.Store(ctx, segmentKey(snapshotKey(), cut(2), cut(3)), late); err != nil {
		t.Fatal(err)
	}
	if got := count(at(t3), t3); got != 36 {
		t.Fatalf("with a segment newer than the delta: %d calls, want 36 (the 7 after the last delta are not saved)", got)
	}

	// A missing segment: its hour is lost, the rest is not.
	first, _ := app.storage.Load(ctx, want[0])
	if err := app.storage.Delete(ctx, want[0]); err != nil {
		t.Fatal(err)
	}
	if got := count(at(t2), t2); got != 25 {
		t.Fatalf("without the 12:20-13:20 segment: %d calls, want 25 (5 from the base, 20 from the delta)", got)
	}
	// A damaged one: the same, and it is kept aside.
	first[len(first)/2] ^= 0xff
	if err := app.storage.Store(ctx, want[0], first); err != nil {
		t.Fatal(err)
	}
	if got := count(at(t2), t2); got != 25 {
		t.Fatalf("with a damaged segment: %d calls, want 25", got)
	}
	if aside, _ := filepath.Glob(filepath.Join(dir, "vigil", "snapshot", "*.segments", "*.corrupt-*")); len(aside) != 1 {
		t.Fatalf("the damaged segment was not kept aside: %v", aside)
	}

	// A day after the base: the base is written again and the segments go, but for the
	// damaged one kept aside.
	e.chainCut.Store(cut(2)) // as the storage now holds: the base and the delta of 14:20
	t26 := t0.Add(26 * time.Hour)
	e.setClock(t26)
	e.saveSnapshot(app.storage)
	if again, _ := app.storage.Load(ctx, snapshotKey()); bytes.Equal(again, base) || len(segments()) != 1 || e.baseAt.Load() != cut(26) {
		t.Fatalf("a day later: base rewritten %v, segments %v, base cut %d", !bytes.Equal(again, base), segments(), e.baseAt.Load())
	}
	if got := count(at(t26), t26); got != 43 {
		t.Fatalf("after the new base: %d calls, want 43", got)
	}

	// Version 2 (before segments): a base and a delta without the first cut's varint.
	v2 := func(v3 []byte) []byte {
		t.Helper()
		d, err := decodeSnapshot(v3)
		if err != nil {
			t.Fatal(err)
		}
		h := append([]byte(snapshotMagic), 2, byte(d.part))
		h = binary.AppendVarint(h, d.cut)
		body := v3[len(snapshotMagic)+2+len(binary.AppendVarint(nil, d.cut))+1 : len(v3)-sha256.Size]
		b := append(h, body...)
		sum := sha256.Sum256(b)
		return append(b, sum[:]...)
	}
	for _, k := range []string{snapshotKey(), deltaKey(snapshotKey())} {
		data, _ := app.storage.Load(ctx, k)
		if err := app.storage.Store(ctx, k, v2(data)); err != nil {
			t.Fatal(err)
		}
	}
	if got := count(at(t26), t26); got != 43 {
		t.Fatalf("from a version 2 base and delta: %d calls, want 43", got)
	}
}

// TestSegmentChain: the chain follows the first cut end to end, stops at a gap and at
// the delta's cut, takes the longer of two segments from one cut whatever the order
// storage lists them in, and passes over keys that are not segments.
func TestSegmentChain(t *testing.T) {
	key := func(from, to int64) string { return segmentKey("vigil/snapshot/x", from, to) }
	keys := []string{key(100, 200), key(100, 150), key(200, 300), key(300, 400), key(500, 600), key(50, 100),
		"vigil/snapshot/x.segments/200-300.corrupt-1795536000", "vigil/snapshot/x.segments/junk"}
	for _, order := range [][]int{{0, 1, 2, 3, 4, 5, 6, 7}, {7, 6, 5, 4, 3, 2, 1, 0}, {1, 6, 3, 0, 7, 2, 5, 4}} {
		var ks []string
		for _, i := range order {
			ks = append(ks, keys[i])
		}
		var got []string
		for _, r := range segmentChain(ks, 100, 1000) {
			got = append(got, r.key)
		}
		if want := []string{key(100, 200), key(200, 300), key(300, 400)}; !slices.Equal(got, want) {
			t.Errorf("order %v: chain %v, want %v", order, got, want)
		}
		if c := segmentChain(ks, 100, 300); len(c) != 2 || c[1].to != 300 {
			t.Errorf("order %v: chain up to 300: %+v", order, c)
		}
	}
}
