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
	"strconv"
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
// base or delta) and its cut (a varint of Unix seconds), five sections each a uvarint
// length and its bytes (the store in the detector's own format, then JSON of the alert
// state, the limiter's counters, the run-time block list and the events), and a SHA-256
// of everything before it. Version 1, without part and cut, is a full snapshot.
//
// Most of a busy store's history is buckets that no longer change, so it is saved in two
// values: a base under snapshotKey(instance), with the store's buckets before the last
// whole hour (the cut), written when the hour turns; and a delta under the same key with
// ".delta" appended, with the rest of the store and everything else, written every
// App.Snapshot and at exit. A restart reads the base and then its delta (same cut); a
// delta of another base (the gateway stopped between the two writes) or a damaged one is
// left out, and the base's own sections are used: the history of the last hour and the
// recent calls are then lost, not the rest. Caddy's file storage writes through a
// temporary file and a rename, so a crash mid-write leaves the previous value; a base
// that is corrupt or truncated anyway is logged, kept aside under the same key with
// ".corrupt-<unix time>" appended, and Vigil starts empty (a damaged delta is kept aside
// the same way).

const (
	snapshotMagic   = "VIGILENG"
	snapshotVersion = 2
	snapshotTimeout = 30 * time.Second
	// baseLag is how long after the hour the base moves to it, so that no call is still
	// on its way into a bucket of the hour before.
	baseLag = time.Minute
)

// deltaKey is where the delta of the base under key lives.
func deltaKey(key string) string { return key + ".delta" }

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

// encodeSnapshot encodes the engine's state, with the store's part of the given cut. The
// store's part, which may be hundreds of megabytes, is written once into the buffer that
// is returned, after room left for the header, and not copied again.
func (e *engine) encodeSnapshot(part detector.SnapshotPart, cut time.Time) ([]byte, error) {
	const room = len(snapshotMagic) + 3*binary.MaxVarintLen64 + 1 // version, part, cut, store length
	buf := bytes.NewBuffer(make([]byte, room, room+64<<10))
	if err := e.store.WriteSnapshotPart(buf, part, cut); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	b := buf.Bytes()
	h := append([]byte(snapshotMagic), binary.AppendUvarint(nil, snapshotVersion)...)
	h = append(h, byte(part))
	h = binary.AppendVarint(h, cut.Unix())
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
	part, cut := detector.SnapshotFull, int64(0)
	if v >= 2 {
		p, err := r.ReadByte()
		if err != nil || detector.SnapshotPart(p) > detector.SnapshotDelta {
			return nil, fmt.Errorf("part %d: want 0 (full), 1 (base) or 2 (delta)", p)
		}
		if cut, err = binary.ReadVarint(r); err != nil {
			return nil, errors.New("cut: bad varint")
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
	d := &decodedSnapshot{part: part, cut: cut, store: sections[0]}
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
		if d.part == detector.SnapshotDelta {
			return errors.New("a snapshot delta where the base belongs")
		}
		return nil
	})
	if err != nil {
		aside := e.keepAside(ctx, storage, key, data)
		e.logger.Error("the vigil snapshot is unreadable; it is kept aside and vigil starts with empty state",
			"key", key, "kept_as", aside, "error", err)
		return
	}
	size := len(data)
	if d.part == detector.SnapshotBase {
		e.baseCut.Store(d.cut)
		if dd, n := e.restoreDelta(ctx, storage, key, d.cut); dd != nil {
			d, size = dd, size+n // the delta's sections are the newer
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
	e.logger.Info("vigil state restored from snapshot", "key", key, "bytes", size,
		"limiter_entries", len(d.limits), "blocks", len(d.blocks), "events", len(d.events))
}

// restoreDelta reads the delta of the base of the given cut into the store, and returns
// it and its size; nil when there is none, it goes with another base, or it is damaged
// (then it is kept aside), all logged: the base alone is restored.
func (e *engine) restoreDelta(ctx context.Context, storage certmagic.Storage, key string, cut int64) (*decodedSnapshot, int) {
	dk := deltaKey(key)
	data, err := storage.Load(ctx, dk)
	if errors.Is(err, fs.ErrNotExist) {
		e.logger.Warn("no vigil snapshot delta beside the base: the last hour of history is not restored", "key", dk)
		return nil, 0
	}
	if err != nil {
		e.logger.Error("could not read the vigil snapshot delta: the last hour of history is not restored", "key", dk, "error", err)
		return nil, 0
	}
	errOtherBase := errors.New("another base")
	d, err := e.readStorePart(data, func(d *decodedSnapshot) error {
		if d.part != detector.SnapshotDelta || d.cut != cut {
			return errOtherBase
		}
		return nil
	})
	if errors.Is(err, errOtherBase) {
		e.logger.Warn("the vigil snapshot delta goes with another base (the gateway stopped between the two writes): the last hour of history is not restored",
			"key", dk, "delta_cut", time.Unix(d.cut, 0).UTC(), "base_cut", time.Unix(cut, 0).UTC())
		return nil, 0
	}
	if err != nil {
		aside := e.keepAside(ctx, storage, dk, data)
		e.logger.Error("the vigil snapshot delta is unreadable; it is kept aside and only the base is restored",
			"key", dk, "kept_as", aside, "error", err)
		return nil, 0
	}
	return d, len(data)
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
	_, err = e.store.ReadSnapshot(bufio.NewReader(bytes.NewReader(d.store)))
	return d, err
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
	cut := e.now().Add(-baseLag).Truncate(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 4*snapshotTimeout)
	defer cancel()
	var baseBytes int
	if e.baseCut.Load() != cut.Unix() {
		data, err := e.encodeSnapshot(detector.SnapshotBase, cut)
		if err == nil {
			err = storage.Store(ctx, key, data)
		}
		e.countSnapshot(detector.SnapshotBase, len(data), err)
		if err != nil {
			e.logger.Error("saving the vigil snapshot base", "error", err)
			return // the base and delta in storage still go together
		}
		e.baseCut.Store(cut.Unix())
		baseBytes = len(data)
	}
	data, err := e.encodeSnapshot(detector.SnapshotDelta, cut)
	if err == nil {
		err = storage.Store(ctx, deltaKey(key), data)
	}
	e.countSnapshot(detector.SnapshotDelta, len(data), err)
	if err != nil {
		e.logger.Error("saving the vigil snapshot delta", "error", err)
		return
	}
	e.saveRegistry(storage)
	e.logger.Debug("vigil snapshot saved", "base_bytes", baseBytes, "delta_bytes", len(data), "took", time.Since(start))
}

// countSnapshot counts a part written (err nil, size bytes) or failed, for the metrics.
func (e *engine) countSnapshot(part detector.SnapshotPart, size int, err error) {
	e.snapMu.Lock()
	defer e.snapMu.Unlock()
	st := &e.snapStats
	switch {
	case part == detector.SnapshotBase && err != nil:
		st.BaseFailures++
	case part == detector.SnapshotBase:
		st.BaseWrites++
		st.BaseBytes = int64(size)
	case err != nil:
		st.DeltaFailures++
	default:
		st.DeltaWrites++
		st.DeltaBytes = int64(size)
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
