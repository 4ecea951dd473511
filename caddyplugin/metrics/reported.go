package metrics

import (
	"maps"
	"slices"
	"time"
)

// The families in this file are not counted by the registry: the engine reports them
// from its alert state, notifier and store. The recommended way is a hook set with
// [Registry.SetScrapeHook], which [Registry.WritePrometheus] runs just before writing:
// the figures are then as fresh as the scrape, and nothing is read when nobody scrapes.
// The setters may also be called from the engine's tick instead; either way, report
// each figure from one place, so that totals arrive in order.

// reported is what the setters last reported. Registry.reportMu guards it.
type reported struct {
	firing []gaugeSample // by rule, sorted, Other last when used

	channels     map[string]*channelState // by escaped label value
	otherChannel *channelState            // channels beyond the cap

	storeSet      bool // SetStoreStats was called at least once
	store         StoreStats
	storeOverflow monotonic

	snapshotSet bool // SetSnapshotStats was called at least once
	snapshot    SnapshotStats
}

// gaugeSample is one labelled gauge value.
type gaugeSample struct {
	label string // escaped
	value int64
}

// SetScrapeHook sets fn to run at the start of every [Registry.WritePrometheus], with
// the registry, to report what the engine knows through the setters below. It replaces
// the previous hook, so that setting it again on a config reload does not run it twice;
// nil removes it. Scrapes are serialised, so fn never runs concurrently with itself.
func (r *Registry) SetScrapeHook(fn func(*Registry)) {
	if fn == nil {
		r.hook.Store(nil)
		return
	}
	r.hook.Store(&fn)
}

// SetAlertsFiring replaces vigil_alerts_firing with one value per rule: how many of its
// alert instances are firing (0 for a rule that has none). Give every rule, firing or
// not: a rule left out, deleted for example, disappears from the output. Rules beyond
// [Options.MaxLabelValues], in name order, are summed under rule="other", and each call
// counts them in vigil_metrics_label_overflow_total.
func (r *Registry) SetAlertsFiring(firing map[string]int) {
	// Summed by label value: names that are not UTF-8 may make the same one.
	byLabel := make(map[string]int64, len(firing))
	for rule, n := range firing {
		byLabel[labelValue(rule)] += int64(n)
	}
	other, used := byLabel[Other]
	delete(byLabel, Other)
	samples := make([]gaugeSample, 0, min(len(byLabel), r.maxLabels)+1)
	var folded uint64
	for _, label := range slices.Sorted(maps.Keys(byLabel)) {
		if len(samples) == r.maxLabels {
			other, used = other+byLabel[label], true
			folded++
			continue
		}
		samples = append(samples, gaugeSample{label, byLabel[label]})
	}
	if used {
		samples = append(samples, gaugeSample{Other, other})
	}
	r.folded[foldAlertsFiring].Add(folded)
	r.reportMu.Lock()
	r.reported.firing = samples
	r.reportMu.Unlock()
}

// ChannelStats is what a notification channel reports: its queue and the totals of its
// notifications by outcome since the channel was created (notifier.ChannelStats). Totals
// that go down mean the channel was created anew, on a reload for example: the exposed
// counters keep what was counted before and go on from there, so they never go down.
type ChannelStats struct {
	// Channel is the channel's name (the channel label).
	Channel string
	// QueueLength is how many notifications wait, the one in flight included.
	QueueLength int
	// Delivered, Failed and Dropped count notifications by outcome; Retried counts the
	// failed attempts that were tried again.
	Delivered, Failed, Dropped, Retried uint64
}

// outcomes are the outcome label values of vigil_notifications_total, in the order of
// channelState.outcomes.
var outcomes = [...]string{"delivered", "failed", "dropped", "retried"}

// channelState is what the registry keeps of a channel.
type channelState struct {
	label    string // escaped
	outcomes [len(outcomes)]monotonic
	queue    int64
	present  bool // in the last report: its queue length is written
	used     bool // ever reported: its counters are written
}

func (c *channelState) set(queue int64, totals [len(outcomes)]uint64) {
	c.queue, c.present, c.used = queue, true, true
	for i, v := range totals {
		c.outcomes[i].set(v)
	}
}

// SetNotificationStats reports every notification channel, as notifier.Queue.Stats
// gives them. A channel left out keeps its counters but loses its queue length. Channels
// beyond [Options.MaxLabelValues], taken in name order as they first appear, are summed
// under channel="other", and each call counts them in vigil_metrics_label_overflow_total.
func (r *Registry) SetNotificationStats(channels []ChannelStats) {
	// Summed by label value first: names that are not UTF-8 may make the same one, and
	// one series must get one total.
	type sum struct {
		queue  int64
		totals [len(outcomes)]uint64
	}
	byLabel := make(map[string]*sum, len(channels))
	for _, cs := range channels {
		label := labelValue(cs.Channel)
		s := byLabel[label]
		if s == nil {
			s = new(sum)
			byLabel[label] = s
		}
		s.queue += int64(cs.QueueLength)
		for i, v := range [...]uint64{cs.Delivered, cs.Failed, cs.Dropped, cs.Retried} {
			s.totals[i] += v
		}
	}

	r.reportMu.Lock()
	defer r.reportMu.Unlock()
	rep := &r.reported
	for _, c := range rep.channels {
		c.present = false
	}
	other, otherUsed := byLabel[Other]
	if !otherUsed {
		other = new(sum)
	}
	delete(byLabel, Other)
	var folded uint64
	for _, label := range slices.Sorted(maps.Keys(byLabel)) {
		s := byLabel[label]
		c := rep.channels[label]
		if c == nil && len(rep.channels) < r.maxLabels {
			c = &channelState{label: label}
			rep.channels[label] = c
		}
		if c == nil {
			other.queue += s.queue
			for i, v := range s.totals {
				other.totals[i] += v
			}
			otherUsed = true
			folded++
			continue
		}
		c.set(s.queue, s.totals)
	}
	rep.otherChannel.present = false
	if otherUsed {
		rep.otherChannel.set(other.queue, other.totals)
	}
	r.folded[foldNotifications].Add(folded)
}

// StoreStats is what the detector store reports (detector.Store.Stats).
type StoreStats struct {
	// Series is how many time series the store holds, detail views included.
	Series int64
	// Users, Companies and Keys are how many callers of each kind it tracks.
	Users, Companies, Keys int64
	// Overflow is the store's total of calls folded into an "other" series because a
	// view was full. A total that goes down means a new store: the exposed counter keeps
	// what was counted before.
	Overflow uint64
}

// SetStoreStats reports the store: vigil_tracked_series, vigil_tracked_callers and
// vigil_store_overflow_total, which are written only once it has been called.
func (r *Registry) SetStoreStats(s StoreStats) {
	r.reportMu.Lock()
	defer r.reportMu.Unlock()
	r.reported.storeSet = true
	r.reported.store = s
	r.reported.storeOverflow.set(s.Overflow)
}

// SnapshotStats is what the engine reports of the snapshots it saves to Caddy storage:
// a base (the store's settled buckets, once a day), segments (the buckets settled since,
// one every 10 minutes) and a delta (the rest, every snapshot interval).
type SnapshotStats struct {
	// Base, Segment and Delta count the writes of each part.
	Base, Segment, Delta SnapshotPartStats
	// LastSuccess is when the last delta was written, which completes a snapshot: what a
	// restart would get back. Zero until then.
	LastSuccess time.Time
}

// SnapshotPartStats counts the writes of one part of the snapshots.
type SnapshotPartStats struct {
	// Writes counts the parts written, Failures the writes that failed (encoding or
	// storage), since the engine started.
	Writes, Failures uint64
	// Bytes is the size of the last part written.
	Bytes int64
}

// namedPart is a part's stats and its label value.
type namedPart struct {
	name string
	SnapshotPartStats
}

// parts returns the parts in the order they are exposed.
func (s *SnapshotStats) parts() [3]namedPart {
	return [3]namedPart{{"base", s.Base}, {"delta", s.Delta}, {"segment", s.Segment}}
}

// SetSnapshotStats reports the snapshots: vigil_snapshot_writes_total,
// vigil_snapshot_bytes and vigil_snapshot_last_success_timestamp_seconds, which are
// written only once it has been called.
func (r *Registry) SetSnapshotStats(s SnapshotStats) {
	r.reportMu.Lock()
	defer r.reportMu.Unlock()
	r.reported.snapshotSet = true
	r.reported.snapshot = s
}

// monotonic turns totals reported by a source that may start again from zero into a
// counter that never goes down: when a total is below the previous one, the source is
// taken to have restarted, and what it had counted is kept.
type monotonic struct {
	base, last uint64
}

func (m *monotonic) set(total uint64) {
	if total < m.last {
		m.base += m.last
	}
	m.last = total
}

func (m *monotonic) value() uint64 { return m.base + m.last }
