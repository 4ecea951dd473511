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
	"github.com/vigilgw/vigil/detector/alert"
	"github.com/vigilgw/vigil/detector/cohort"
	"github.com/vigilgw/vigil/detector/rules"
)

// The engine's state is saved to Caddy storage every App.Snapshot and at exit, and read
// back when the engine is first created, so that a restart (clean or a crash) keeps the
// store's history, the alert state (firing instances, throttle times), the quota and
// rate-limit counters, the run-time block list and the event history.
//
// A snapshot is one value under snapshotKey(instance): a header ("VIGILENG" and a format
// version), five sections each a uvarint length and its bytes (the store in the
// detector's own format, then JSON of the alert state, the limiter's counters, the
// run-time block list and the events), and a SHA-256 of everything before it. Caddy's
// file storage writes through a temporary file and a rename, so a crash mid-write leaves
// the previous snapshot; a snapshot that is corrupt or truncated anyway is logged, kept
// aside under the same key with ".corrupt-<unix time>" appended, and Vigil starts empty.

const (
	snapshotMagic   = "VIGILENG"
	snapshotVersion = 1
	snapshotTimeout = 30 * time.Second
)

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

// writeSnapshot encodes the engine's state.
func (e *engine) encodeSnapshot() ([]byte, error) {
	var store bytes.Buffer
	if err := e.store.WriteSnapshot(&store); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	sections := [][]byte{store.Bytes()}
	for _, v := range []any{e.rules.State(), e.limiter.Export(), e.blocks.Entries(e.now()), e.rules.History().All()} {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		sections = append(sections, b)
	}
	var out bytes.Buffer
	out.WriteString(snapshotMagic)
	out.Write(binary.AppendUvarint(nil, snapshotVersion))
	for _, s := range sections {
		out.Write(binary.AppendUvarint(nil, uint64(len(s))))
		out.Write(s)
	}
	sum := sha256.Sum256(out.Bytes())
	out.Write(sum[:])
	return out.Bytes(), nil
}

// decodedSnapshot is a checked snapshot, split into its sections.
type decodedSnapshot struct {
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
	if err != nil || v != snapshotVersion {
		return nil, fmt.Errorf("format version %d: this Vigil reads version %d", v, snapshotVersion)
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
	d := &decodedSnapshot{store: sections[0]}
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
	d, err := decodeSnapshot(data)
	if err == nil {
		_, err = e.store.ReadSnapshot(bufio.NewReader(bytes.NewReader(d.store)))
	}
	if err != nil {
		aside := key + ".corrupt-" + strconv.FormatInt(time.Now().Unix(), 10)
		if serr := storage.Store(ctx, aside, data); serr != nil {
			e.logger.Error("could not keep the bad snapshot aside", "key", aside, "error", serr)
		}
		e.logger.Error("the vigil snapshot is unreadable; it is kept aside and vigil starts with empty state",
			"key", key, "kept_as", aside, "error", err)
		return
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
	e.logger.Info("vigil state restored from snapshot", "key", key, "bytes", len(data),
		"limiter_entries", len(d.limits), "blocks", len(d.blocks), "events", len(d.events))
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
	data, err := e.encodeSnapshot()
	if err != nil {
		e.logger.Error("encoding the vigil snapshot", "error", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	if err := storage.Store(ctx, snapshotKey(), data); err != nil {
		e.logger.Error("saving the vigil snapshot", "error", err)
		return
	}
	e.saveRegistry(storage)
	e.logger.Debug("vigil snapshot saved", "bytes", len(data), "took", time.Since(start))
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
