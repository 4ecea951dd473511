package caddyplugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/vigilgw/vigil/caddyplugin/limit"
	"github.com/vigilgw/vigil/detector"
)

// TestSnapshotBaseAndDelta checks how the engine saves its state: a base of the store's
// buckets before the hour, written once an hour, and a delta of the rest written every
// time; a restart reads both, or the base alone when the delta goes with another base or
// is damaged (kept aside).
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
	record := func(e *engine, at time.Time, n int) {
		for range n {
			e.store.Record(&detector.Call{Time: at, Method: "GET", Endpoint: "/v1/orders", Status: 200, User: "u-1"})
		}
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
	record(e, now.Add(-2*time.Hour), 5)    // before the cut (12:00): in the base
	record(e, now.Add(-10*time.Minute), 3) // after it: in the delta
	e.saveSnapshot(app.storage)
	base, err := app.storage.Load(ctx, snapshotKey())
	if err != nil {
		t.Fatal(err)
	}
	record(e, now.Add(-time.Minute), 4)
	if _, err := e.limiter.AddQuota(ctx, "site/user", "u-1", q, nil, now, 7); err != nil {
		t.Fatal(err)
	}
	e.saveSnapshot(app.storage)
	if again, _ := app.storage.Load(ctx, snapshotKey()); string(again) != string(base) {
		t.Fatal("the base was written again within the hour")
	}
	if st := e.snapStats; st.BaseWrites != 1 || st.DeltaWrites != 2 || st.BaseFailures+st.DeltaFailures != 0 ||
		st.BaseBytes != int64(len(base)) || st.DeltaBytes == 0 || st.LastSuccess.IsZero() {
		t.Fatalf("snapshot stats %+v", st)
	}
	// A storage that fails: counted, and the parts in the good storage stay a pair.
	file := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.baseCut.Store(0) // as after the hour turns: a base is due
	e.saveSnapshot(&certmagic.FileStorage{Path: file})
	if st := e.snapStats; st.BaseFailures != 1 || st.DeltaFailures != 0 || st.DeltaWrites != 2 {
		t.Fatalf("snapshot stats after a failing storage %+v, want one base failure and no delta tried", st)
	}
	e.baseCut.Store(now.Truncate(time.Hour).Unix())

	r := newAt()
	if got := count(r); got != 12 {
		t.Fatalf("restored %d calls, want 12 (5 from the base, 7 from the delta)", got)
	}
	if got := used(r); got != 7 {
		t.Fatalf("restored quota used %d, want 7 (the delta's, newer than the base's)", got)
	}
	if r.baseCut.Load() != now.Truncate(time.Hour).Unix() {
		t.Fatalf("restored base cut %d", r.baseCut.Load())
	}

	// A delta of another base (the gateway stopped between the two writes): base alone.
	other, err := e.encodeSnapshot(detector.SnapshotDelta, now.Add(-time.Hour).Truncate(time.Hour))
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
	if e.baseCut.Load() != 0 {
		t.Fatal("a version 1 snapshot taken for a base")
	}
	e.saveSnapshot(app.storage)
	for _, k := range []string{snapshotKey(), deltaKey(snapshotKey())} {
		if !app.storage.Exists(ctx, k) {
			t.Fatalf("no %s after the first save", k)
		}
	}
}
