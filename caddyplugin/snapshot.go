package caddyplugin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/vigilgw/vigil/caddyplugin/blocklist"
	"github.com/vigilgw/vigil/caddyplugin/limit"
	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
	"github.com/vigilgw/vigil/detector/cohort"
	"github.com/vigilgw/vigil/detector/rules"
)

// The engine's state is saved to Caddy storage every App.Snapshot and at exit, and read
// back when the engine is first created, so that a restart (clean or a crash) keeps the
// store's history, the alert state (firing instances, throttle times), the quota and
// rate-limit counters, the run-time block list and the event history.
//
// A snapshot is a header ("VIGILENG" and a format version), the part it is (a byte: full,
// base, delta or segment), its cut (a varint of Unix seconds) and, from version 3, a
// segment's first cut (a varint, 0 for the other parts), five sections each a uvarint
// length and its bytes (the store in the detector's own format, then JSON of the alert
// state, the limiter's counters, the run-time block list and the events), and a SHA-256
// of everything before it. Version 1, without part and cuts, is a full snapshot.
//
// Most of a busy store's history is buckets that no longer change, so it is saved in
// three kinds of values:
//
//   - a base under snapshotKey(instance), with the store's buckets before a cut (a
//     multiple of segmentEvery), written at the first save and then once a day
//     (baseEvery);
//   - segments under the same key with ".segments/<from>-<to>" appended, one each time
//     the cut moves on (every segmentEvery), with the buckets between the last cut and
//     the new one, so that ten minutes cost their own buckets and not the whole history
//     again; a base write deletes them;
//   - a delta under the same key with ".delta" appended, with the buckets from the newest
//     cut on and everything else, written every App.Snapshot and at exit.
//
// A restart reads the base, then the segments that follow it end to end up to the
// delta's cut, then the delta. A delta that overlaps them (the gateway stopped between a
// base write and its delta) or a damaged one is left out, and the newest sections read
// are used: the history since the newest cut and the recent calls are then lost, not the
// rest; a missing or damaged segment ends the chain there (damaged ones are kept aside)
// and only the delta's newer buckets are added after the gap. Caddy's file storage
// writes through a temporary file and a rename, so a crash mid-write leaves the previous
// value; a base that is corrupt or truncated anyway is logged, kept aside under the same
// key with ".corrupt-<unix time>" appended, and Vigil starts empty.

const (
	snapshotMagic   = "VIGILENG"
	snapshotVersion = 3
	snapshotTimeout = 30 * time.Second
	// baseLag is how long after a multiple of segmentEvery the newest cut moves to it,
	// so that no call is still on its way into a bucket before it.
	baseLag = time.Minute
	// segmentEvery is how often the cut moves on, writing a segment: the delta, written
	// every App.Snapshot, holds at most this much of the minute buckets (and the open
	// hour and day buckets).
	segmentEvery = 10 * time.Minute
	// baseEvery is how often the base is written again, replacing the segments.
	baseEvery = 24 * time.Hour
)

// deltaKey is where the delta of the base under key lives.
func deltaKey(key string) string { return key + ".delta" }

// segmentsKey is the folder of the segments of the base under key.
func segmentsKey(key string) string { return key + ".segments" }

// segmentKey is where the segment of the base under key from cut from to cut to lives.
func segmentKey(key string, from, to int64) string {
	return segmentsKey(key) + "/" + strconv.FormatInt(from, 10) + "-" + strconv.FormatInt(to, 10)
}

// snapshotKey is where this instance's snapshot lives in storage.
func snapshotKey() string {
	id := "default"
	if u, err := caddy.InstanceID(); err == nil {
		id = u.String()
	}
	return "vigil/snapshot/" + id
}

// pendingRestore holds the parts of a snapshot that can only be applied once rules are
// set (at the first start).
type pendingRestore struct {
	alerts rules.State
	events []alert.Event
}

// encodeSnapshot encodes the engine's state, with the store's part of the given cut (a
// segment's buckets are those from from to cut). The store's part, which may be hundreds
// of megabytes, is written once into the buffer that is returned, after room left for
// the header, and not copied again.
func (e *engine) encodeSnapshot(part detector.SnapshotPart, from, cut time.Time) ([]byte, error) {
	const room = len(snapshotMagic) + 4*binary.MaxVarintLen64 + 1 // version, part, cuts, store length
	buf := bytes.NewBuffer(make([]byte, room, room+64<<10))
	var err error
	var fromUnix int64
	if part == detector.SnapshotSegment {
		err = e.store.WriteSnapshotSegment(buf, from, cut)
		fromUnix = from.Unix()
	} else {
		err = e.store.WriteSnapshotPart(buf, part, cut)
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	b := buf.Bytes()
	h := append([]byte(snapshotMagic), binary.AppendUvarint(nil, snapshotVersion)...)
	h = append(h, byte(part))
	h = binary.AppendVarint(h, cut.Unix())
	h = binary.AppendVarint(h, fromUnix)
	h = binary.AppendUvarint(h, uint64(len(b)-room))
	b = b[room-len(h):]
	copy(b, h)
	for _, v := range []any{e.rules.State(), e.limiter.Export(), e.blocks.Entries(e.now()), e.rules.History().All()} {
		js, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		b = binary.AppendUvarint(b, uint64(len(js)))
		b = append(b, js...)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// decodedSnapshot is a checked snapshot, split into its sections.
type decodedSnapshot struct {
	part   detector.SnapshotPart
	cut    int64 // Unix seconds
	from   int64 // a segment's first cut
	store  []byte
	alerts rules.State
	limits []limit.Entry
	blocks []blocklist.Entry
	events []alert.Event
}

func decodeSnapshot(b []byte) (*decodedSnapshot, error) {
	if len(b) < len(snapshotMagic)+1+sha256.Size {
		return nil, fmt.Errorf("%d bytes: too short to be a snapshot", len(b))
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, errors.New("checksum mismatch: the snapshot is corrupt or truncated")
	}
	if string(body[:len(snapshotMagic)]) != snapshotMagic {
		return nil, errors.New("not a Vigil snapshot (bad magic)")
	}
	r := bytes.NewReader(body[len(snapshotMagic):])
	v, err := binary.ReadUvarint(r)
	if err != nil || v < 1 || v > snapshotVersion {
		return nil, fmt.Errorf("format version %d: this Vigil reads versions 1 to %d", v, snapshotVersion)
	}
	part, cut, from := detector.SnapshotFull, int64(0), int64(0)
	if v >= 2 {
		p, err := r.ReadByte()
		if err != nil || detector.SnapshotPart(p) > detector.SnapshotSegment || (v == 2 && detector.SnapshotPart(p) == detector.SnapshotSegment) {
			return nil, fmt.Errorf("part %d: want 0 (full), 1 (base), 2 (delta) or 3 (segment, from version 3)", p)
		}
		if cut, err = binary.ReadVarint(r); err != nil {
			return nil, errors.New("cut: bad varint")
		}
		if v >= 3 {
			if from, err = binary.ReadVarint(r); err != nil {
				return nil, errors.New("first cut: bad varint")
			}
		}
		part = detector.SnapshotPart(p)
	}
	var sections [5][]byte
	names := [5]string{"store", "alert state", "limiter", "block list", "events"}
	for i := range sections {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > uint64(r.Len()) {
			return nil, fmt.Errorf("section %s: bad length", names[i])
		}
		sections[i] = make([]byte, n)
		if _, err := io.ReadFull(r, sections[i]); err != nil {
			return nil, fmt.Errorf("section %s: %w", names[i], err)
		}
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%d bytes after the last section", r.Len())
	}
	d := &decodedSnapshot{part: part, cut: cut, from: from, store: sections[0]}
	for i, dst := range []any{&d.alerts, &d.limits, &d.blocks, &d.events} {
		if err := json.Unmarshal(sections[i+1], dst); err != nil {
			return nil, fmt.Errorf("section %s: %w", names[i+1], err)
		}
	}
	return d, nil
}

// restoreSnapshot reads this instance's snapshot, if any, into a new engine. The store,
// limiter and block list are restored at once (before any handler can record); the
// alert state and events wait for the first start, when the rules are known.
func (e *engine) restoreSnapshot(storage certmagic.Storage) {
	if storage == nil {
		return
	}
	key := snapshotKey()
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	data, err := storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		e.logger.Error("could not read the vigil snapshot; starting with empty state", "key", key, "error", err)
		return
	}
	d, err := e.readStorePart(data, func(d *decodedSnapshot) error {
		if d.part == detector.SnapshotDelta || d.part == detector.SnapshotSegment {
			return errors.New("a snapshot delta or segment where the base belongs")
		}
		return nil
	})
	if err != nil {
		aside := e.keepAside(ctx, storage, key, data)
		e.logger.Error("the vigil snapshot is unreadable; it is kept aside and vigil starts with empty state",
			"key", key, "kept_as", aside, "error", err)
		return
	}
	size, parts := len(data), 1
	if d.part == detector.SnapshotBase {
		e.baseAt.Store(d.cut)
		delta, dn := e.loadDelta(ctx, storage, key)
		end := int64(math.MaxInt64)
		if delta != nil {
			end = delta.cut
		}
		chain := d.cut
		if sd, last, n, k := e.restoreSegments(ctx, storage, key, chain, end); sd != nil {
			d, chain, size, parts = sd, last, size+n, parts+k // the segment's sections are the newer
		}
		e.chainCut.Store(chain)
		switch {
		case delta == nil:
		case delta.cut < chain:
			e.logger.Warn("the vigil snapshot delta goes with an older cut (the gateway stopped between two writes): the history since the newest cut is not restored",
				"key", deltaKey(key), "delta_cut", time.Unix(delta.cut, 0).UTC(), "cut", time.Unix(chain, 0).UTC())
		default:
			if delta.cut > chain {
				e.logger.Warn("vigil snapshot segments are missing: the history between the last segment and the delta is not restored",
					"from", time.Unix(chain, 0).UTC(), "to", time.Unix(delta.cut, 0).UTC())
			}
			if err := e.mergeStore(delta); err != nil {
				// decodeSnapshot checked the checksum, so this is a store format error.
				e.logger.Error("the vigil snapshot delta's store is unreadable; it is left out", "key", deltaKey(key), "error", err)
			} else {
				d, size, parts = delta, size+dn, parts+1 // the delta's sections are the newest
			}
		}
	}
	if err := e.limiter.Import(d.limits); err != nil {
		e.logger.Warn("restoring rate-limit and quota counters", "error", err)
	}
	now := e.now()
	for _, b := range d.blocks {
		if b.Source == blocklist.SourceAPI && !b.Expired(now) {
			if err := e.blocks.Add(b); err != nil {
				e.logger.Warn("restoring a block-list entry", "entry", b.Value, "error", err)
			}
		}
	}
	e.pending = &pendingRestore{alerts: d.alerts, events: d.events}
	e.logger.Info("vigil state restored from snapshot", "key", key, "parts", parts, "bytes", size,
		"limiter_entries", len(d.limits), "blocks", len(d.blocks), "events", len(d.events))
}

// loadDelta reads and checks the delta beside the base under key, without adding it to
// the store, and returns it and its size; nil when there is none or it is damaged (then
// it is kept aside), logged.
func (e *engine) loadDelta(ctx context.Context, storage certmagic.Storage, key string) (*decodedSnapshot, int) {
	dk := deltaKey(key)
	data, err := storage.Load(ctx, dk)
	if errors.Is(err, fs.ErrNotExist) {
		e.logger.Warn("no vigil snapshot delta beside the base: the history since the newest cut is not restored", "key", dk)
		return nil, 0
	}
	if err != nil {
		e.logger.Error("could not read the vigil snapshot delta: the history since the newest cut is not restored", "key", dk, "error", err)
		return nil, 0
	}
	d, err := decodeSnapshot(data)
	if err == nil && d.part != detector.SnapshotDelta {
		err = fmt.Errorf("part %d where the delta belongs", d.part)
	}
	if err != nil {
		aside := e.keepAside(ctx, storage, dk, data)
		e.logger.Error("the vigil snapshot delta is unreadable; it is kept aside and left out",
			"key", dk, "kept_as", aside, "error", err)
		return nil, 0
	}
	return d, len(data)
}

// restoreSegments reads into the store the segments under key that follow the cut from
// end to end, up to the cut end at most, and returns the last one read, its cut, and
// the size and number of those read; nil when none follows from. A missing or damaged
// segment ends the chain (a damaged one is kept aside); segments that do not continue it
// are left for the next base write to delete.
func (e *engine) restoreSegments(ctx context.Context, storage certmagic.Storage, key string, from, end int64) (last *decodedSnapshot, cut int64, size, n int) {
	keys, err := storage.List(ctx, segmentsKey(key), false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.logger.Error("could not list the vigil snapshot segments: the history since the base is not restored", "key", segmentsKey(key), "error", err)
	}
	cut = from
	for _, ref := range segmentChain(keys, from, end) {
		data, err := storage.Load(ctx, ref.key)
		if err != nil {
			e.logger.Error("could not read a vigil snapshot segment: the history from it on is not restored", "key", ref.key, "error", err)
			return last, cut, size, n
		}
		d, err := e.readStorePart(data, func(d *decodedSnapshot) error {
			if d.part != detector.SnapshotSegment || d.from != ref.from || d.cut != ref.to {
				return fmt.Errorf("part %d from %d to %d where the segment from %d to %d belongs", d.part, d.from, d.cut, ref.from, ref.to)
			}
			return nil
		})
		if err != nil {
			aside := e.keepAside(ctx, storage, ref.key, data)
			e.logger.Error("a vigil snapshot segment is unreadable; it is kept aside and the history from it on is not restored",
				"key", ref.key, "kept_as", aside, "error", err)
			return last, cut, size, n
		}
		last, cut, size, n = d, ref.to, size+len(data), n+1
	}
	return last, cut, size, n
}

// segmentChain returns the segments among keys that follow the cut from end to end, up
// to the cut end at most, in order. Of two with the same first cut (one written before a
// stop that lost its delta, then a longer one after the restart), the longer, which is
// the newer, is taken.
func segmentChain(keys []string, from, end int64) []segmentRef {
	next := map[int64]segmentRef{} // by first cut
	for _, k := range keys {
		if ref, ok := parseSegmentKey(k); ok && ref.to <= end && ref.to > next[ref.from].to {
			next[ref.from] = ref
		}
	}
	var chain []segmentRef
	for ref, ok := next[from]; ok; ref, ok = next[ref.to] {
		chain = append(chain, ref)
	}
	return chain
}

// segmentRef is a segment's key and cuts, as its key names them.
type segmentRef struct {
	key      string
	from, to int64
}

// parseSegmentKey reads the cuts from a key made by segmentKey.
func parseSegmentKey(key string) (segmentRef, bool) {
	a, b, ok := strings.Cut(path.Base(key), "-")
	if !ok {
		return segmentRef{}, false
	}
	from, err1 := strconv.ParseInt(a, 10, 64)
	to, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || from >= to {
		return segmentRef{}, false
	}
	return segmentRef{key: key, from: from, to: to}, true
}

// deleteSegments deletes the segments under key (after a base that holds their buckets
// was written), but not damaged ones kept aside; a failure is logged, and the next
// restore skips segments that do not follow the base.
func (e *engine) deleteSegments(ctx context.Context, storage certmagic.Storage, key string) {
	keys, err := storage.List(ctx, segmentsKey(key), false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.logger.Warn("could not list the vigil snapshot segments to delete them", "key", segmentsKey(key), "error", err)
	}
	for _, k := range keys {
		if _, ok := parseSegmentKey(k); !ok {
			continue // a damaged segment kept aside stays, as other damaged parts do
		}
		if err := storage.Delete(ctx, k); err != nil && !errors.Is(err, fs.ErrNotExist) {
			e.logger.Warn("could not delete a vigil snapshot segment", "key", k, "error", err)
		}
	}
}

// readStorePart decodes a snapshot value, checks it with want, and merges its store
// part into the engine's store. The store is left unchanged on any error; d is set once
// the value decodes.
func (e *engine) readStorePart(data []byte, want func(*decodedSnapshot) error) (d *decodedSnapshot, err error) {
	if d, err = decodeSnapshot(data); err != nil {
		return nil, err
	}
	if err = want(d); err != nil {
		return d, err
	}
	return d, e.mergeStore(d)
}

// mergeStore merges the store part of d into the engine's store, which is left
// unchanged on an error.
func (e *engine) mergeStore(d *decodedSnapshot) error {
	_, err := e.store.ReadSnapshot(bufio.NewReader(bytes.NewReader(d.store)))
	return err
}

// keepAside stores a damaged snapshot value under its key with ".corrupt-<unix time>"
// appended, and returns that key.
func (e *engine) keepAside(ctx context.Context, storage certmagic.Storage, key string, data []byte) string {
	aside := key + ".corrupt-" + strconv.FormatInt(time.Now().Unix(), 10)
	if err := storage.Store(ctx, aside, data); err != nil {
		e.logger.Error("could not keep the bad snapshot aside", "key", aside, "error", err)
	}
	return aside
}

// applyPending restores the alert state and events of the snapshot once the rules are
// set: an instance firing before the restart stays firing (no second notification) and
// resolves, notified, if its condition cleared meanwhile.
func (e *engine) applyPending() {
	if st := e.pendingCohorts; st != nil {
		e.pendingCohorts = nil
		e.cohorts.Restore(*st)
	}
	p := e.pending
	if p == nil {
		return
	}
	e.pending = nil
	e.rules.History().Add(p.events)
	if n, d := e.rules.Restore(p.alerts); n > 0 || d > 0 {
		e.logger.Info("alert state restored from snapshot", "instances", n, "anomaly_detectors", d)
	}
}

// saveSnapshot writes the engine's state to storage; at most one write runs at a time.
func (e *engine) saveSnapshot(storage certmagic.Storage) {
	if storage == nil || !e.snapshotBusy.CompareAndSwap(false, true) {
		return
	}
	defer e.snapshotBusy.Store(false)
	start := time.Now()
	key := snapshotKey()
	cut := cutAt(e.now())
	ctx, cancel := context.WithTimeout(context.Background(), 4*snapshotTimeout)
	defer cancel()
	var partBytes int
	if chain := e.chainCut.Load(); chain != cut.Unix() {
		part, from, at := detector.SnapshotSegment, time.Unix(chain, 0), segmentKey(key, chain, cut.Unix())
		if chain == 0 || chain > cut.Unix() || cut.Sub(time.Unix(e.baseAt.Load(), 0)) >= baseEvery {
			part, from, at = detector.SnapshotBase, time.Time{}, key
		}
		data, err := e.encodeSnapshot(part, from, cut)
		if err == nil {
			err = storage.Store(ctx, at, data)
		}
		e.countSnapshot(part, len(data), err)
		if err != nil {
			e.logger.Error("saving the vigil snapshot "+partName(part), "error", err)
			return // what storage holds still goes together
		}
		if part == detector.SnapshotBase {
			e.baseAt.Store(cut.Unix())
			e.deleteSegments(ctx, storage, key)
		}
		e.chainCut.Store(cut.Unix())
		partBytes = len(data)
	}
	data, err := e.encodeSnapshot(detector.SnapshotDelta, time.Time{}, cut)
	if err == nil {
		err = storage.Store(ctx, deltaKey(key), data)
	}
	e.countSnapshot(detector.SnapshotDelta, len(data), err)
	if err != nil {
		e.logger.Error("saving the vigil snapshot delta", "error", err)
		return
	}
	e.saveRegistry(storage)
	e.logger.Debug("vigil snapshot saved", "base_or_segment_bytes", partBytes, "delta_bytes", len(data), "took", time.Since(start))
}

// cutAt is the newest cut at now: the last multiple of segmentEvery at least baseLag
// before it.
func cutAt(now time.Time) time.Time { return now.Add(-baseLag).Truncate(segmentEvery) }

// partName names a snapshot part in logs and metrics.
func partName(p detector.SnapshotPart) string {
	switch p {
	case detector.SnapshotBase:
		return "base"
	case detector.SnapshotDelta:
		return "delta"
	case detector.SnapshotSegment:
		return "segment"
	}
	return "full"
}

// countSnapshot counts a part written (err nil, size bytes) or failed, for the metrics.
func (e *engine) countSnapshot(part detector.SnapshotPart, size int, err error) {
	e.snapMu.Lock()
	defer e.snapMu.Unlock()
	st := &e.snapStats
	p := &st.Delta
	switch part {
	case detector.SnapshotBase:
		p = &st.Base
	case detector.SnapshotSegment:
		p = &st.Segment
	}
	if err != nil {
		p.Failures++
		return
	}
	p.Writes++
	p.Bytes = int64(size)
	if p == &st.Delta {
		st.LastSuccess = time.Now()
	}
}

// The user registry and the cohorts' memory (members, whom they e-mailed, the opt-out
// list) live under keys of their own, written with each snapshot (the registry only when
// it changed) and read when the engine is created.
const (
	usersKey   = "vigil/users.json"
	cohortsKey = "vigil/cohorts.json"
)

// loadRegistry reads the saved user registry, and keeps the cohorts' state for the first
// start.
func (e *engine) loadRegistry(storage certmagic.Storage) {
	if storage == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	if data, err := storage.Load(ctx, usersKey); err == nil {
		if err := e.registry.Load(data); err != nil {
			e.logger.Error("the saved user registry is unreadable; starting without it", "key", usersKey, "error", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		e.logger.Error("could not read the user registry", "key", usersKey, "error", err)
	}
	if data, err := storage.Load(ctx, cohortsKey); err == nil {
		var st cohort.State
		if err := json.Unmarshal(data, &st); err != nil {
			e.logger.Error("the saved cohort state is unreadable; starting without it", "key", cohortsKey, "error", err)
		} else {
			e.pendingCohorts = &st
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		e.logger.Error("could not read the cohort state", "key", cohortsKey, "error", err)
	}
}

// saveRegistry writes the registry (when it changed) and the cohorts' state.
func (e *engine) saveRegistry(storage certmagic.Storage) {
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	if e.registry.TakeDirty() {
		data, err := e.registry.MarshalJSON()
		if err == nil {
			err = storage.Store(ctx, usersKey, data)
		}
		if err != nil {
			e.registry.MarkDirty() // try again next time
			e.logger.Error("saving the user registry", "error", err)
		}
	}
	data, err := json.Marshal(e.cohorts.State())
	if err == nil {
		err = storage.Store(ctx, cohortsKey, data)
	}
	if err != nil {
		e.logger.Error("saving the cohort state", "error", err)
	}
}
