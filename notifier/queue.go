package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// Why batches still queued are given up.
var (
	errChannelRemoved = errors.New("channel removed")
	errStopped        = errors.New("notifier stopped before delivery")
)

// dropLogEvery is the least time between two log lines about a full queue or an unknown
// channel (each line says how many batches it stands for).
const dropLogEvery = 10 * time.Second

// QueueOptions are the settings of a Queue.
type QueueOptions struct {
	// Defaults are the delivery settings of every channel, unless its Config.Queue overrides
	// them; zero fields take the package defaults (DefaultQueueConfig).
	Defaults QueueConfig
	// Recorder receives the outcome of every delivery step of every event (queued,
	// retrying, delivered, failed, dropped), in order, from a goroutine of the Queue's own;
	// nil: outcomes are only counted and logged.
	Recorder alert.DeliveryRecorder
	// Logger receives the Queue's log lines; nil: discarded.
	Logger *slog.Logger
	// Now returns the current time; nil: time.Now.
	Now func() time.Time
}

// Queue delivers batches through channels. It is the notifier's pipeline: Notify queues
// (a bounded queue per channel; never blocks), one worker per channel sends in order (a
// resolve never overtakes its firing), each attempt bounded by a timeout, failures retried
// with exponential backoff and full jitter (at least the receiver's Retry-After, capped by
// backoff_max) until max_attempts or max_age, and every step recorded on the events through
// the DeliveryRecorder. Update swaps channels on a configuration reload; Close stops it.
// A Queue is safe for concurrent use.
type Queue struct {
	defaults QueueConfig
	log      *slog.Logger
	now      func() time.Time
	records  *recordStage

	mu      sync.RWMutex // guards workers and closed; Notify holds it for reading while queueing
	workers map[string]*worker
	closed  bool

	wg          sync.WaitGroup // one per worker goroutine, removed ones included
	abandoned   atomic.Int64   // batches given up because Close's deadline passed
	unknownLogs atomic.Int64   // Unix nanoseconds of the last "unknown channel" log line
	unknownSkip atomic.Int64   // batches for unknown channels since that line
}

// NewQueue starts a Queue delivering through channels, whose names must be unique.
func NewQueue(opts QueueOptions, channels ...Channel) (*Queue, error) {
	if err := opts.Defaults.Validate(); err != nil {
		return nil, err
	}
	q := &Queue{
		defaults: opts.Defaults.over(DefaultQueueConfig()),
		log:      opts.Logger,
		now:      opts.Now,
		workers:  map[string]*worker{},
	}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	if q.now == nil {
		q.now = time.Now
	}
	if err := checkChannels(channels); err != nil {
		return nil, err
	}
	q.records = newRecordStage(opts.Recorder, q.log)
	for _, ch := range channels {
		q.startWorker(ch)
	}
	return q, nil
}

// checkChannels checks that channels are not nil and their names unique.
func checkChannels(channels []Channel) error {
	seen := map[string]bool{}
	for i, ch := range channels {
		if ch == nil {
			return fmt.Errorf("notifier: channel %d is nil", i)
		}
		if seen[ch.Name()] {
			return fmt.Errorf("notifier: two channels are named %q", ch.Name())
		}
		seen[ch.Name()] = true
	}
	return nil
}

// settingsFor returns the delivery settings of ch.
func (q *Queue) settingsFor(ch Channel) QueueConfig {
	if t, ok := ch.(interface{ queueOverrides() QueueConfig }); ok {
		return t.queueOverrides().over(q.defaults)
	}
	return q.defaults
}

// Notify queues b for its channel and returns at once. When the channel's queue is full the
// batch is dropped: counted, logged, and recorded as dropped on its events. A batch for an
// unknown channel is recorded as failed. After Close, batches are only logged.
func (q *Queue) Notify(b alert.Batch) {
	if len(b.Events) == 0 {
		return
	}
	b.Events = slices.Clone(b.Events) // the caller may reuse its slice
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		q.log.Warn("notifier: batch not delivered: the notifier is stopped", "channel", b.Channel, "events", len(b.Events))
		return
	}
	w := q.workers[b.Channel]
	if w == nil {
		q.records.add(b.Events, alert.Delivery{Channel: b.Channel, Status: alert.DeliveryFailed,
			Error: fmt.Sprintf("no channel named %q", b.Channel), Time: q.now()})
		q.logUnknown(b.Channel)
		return
	}
	w.enqueue(b)
}

// logUnknown logs a batch for an unknown channel, at most once per dropLogEvery.
func (q *Queue) logUnknown(name string) {
	n := q.unknownSkip.Add(1)
	now := q.now().UnixNano()
	last := q.unknownLogs.Load()
	if now-last < int64(dropLogEvery) || !q.unknownLogs.CompareAndSwap(last, now) {
		return
	}
	q.unknownSkip.Add(-n)
	q.log.Warn("notifier: batch for an unknown channel recorded as failed", "channel", name, "batches", n)
}

// Update replaces the channels on a configuration reload. A channel whose name remains
// keeps its queue, its counters and its worker, and sends through the new Channel (with its
// new settings) from the next attempt on; a smaller queue size applies to new batches, none
// already queued is dropped. A new name gets a new queue. The batches queued for a name
// that is gone are recorded as failed ("channel removed"), and its attempt in flight is
// cancelled.
func (q *Queue) Update(channels []Channel) error {
	if err := checkChannels(channels); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return errors.New("notifier: Update after Close")
	}
	keep := map[string]bool{}
	for _, ch := range channels {
		keep[ch.Name()] = true
		if w := q.workers[ch.Name()]; w != nil {
			w.replace(ch, q.settingsFor(ch))
			continue
		}
		q.startWorker(ch)
		q.log.Info("notifier: channel added", "channel", ch.Name(), "type", ch.Type())
	}
	removed := false
	for name, w := range q.workers {
		if !keep[name] {
			delete(q.workers, name)
			w.cancel(errChannelRemoved)
			removed = true
			q.log.Info("notifier: channel removed; its queued batches are recorded as failed", "channel", name, "queued", w.length())
		}
	}
	if removed {
		// Connections kept alive to receivers that are gone would linger until they time
		// out; the kept channels reconnect as they need.
		sharedTransport.CloseIdleConnections()
	}
	return nil
}

// Close stops accepting batches, delivers what is queued until ctx ends, then cancels the
// attempts in flight and records what is left as failed ("notifier stopped before
// delivery"). It returns when every goroutine of the Queue has ended and every outcome has
// been handed to the recorder; the error says whether anything was left undelivered.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	workers := slices.Collect(maps.Values(q.workers))
	q.mu.Unlock()

	for _, w := range workers {
		w.drain()
	}
	done := make(chan struct{})
	go func() { // ends once every worker has, which cancel below makes prompt
		q.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		for _, w := range workers {
			w.cancel(errStopped)
		}
		<-done
	}
	q.records.close()
	if n := q.abandoned.Load(); n > 0 {
		return fmt.Errorf("notifier: %d batches left undelivered when stopping: %w", n, context.Cause(ctx))
	}
	return nil
}

// ChannelStats are a channel's delivery counters since it was added, in batches (one
// notification each), for the metrics vigil_notifications_total{channel,outcome} and
// vigil_notification_queue_length.
type ChannelStats struct {
	// Name and Type identify the channel.
	Name string `json:"name"`
	Type string `json:"type"`
	// QueueLength is how many batches wait, the one in flight included; QueueCapacity is
	// the bound.
	QueueLength   int `json:"queue_length"`
	QueueCapacity int `json:"queue_capacity"`
	// Delivered, Failed and Dropped count batches by outcome; Retries counts the attempts
	// that failed and were retried.
	Delivered uint64 `json:"delivered"`
	Failed    uint64 `json:"failed"`
	Dropped   uint64 `json:"dropped"`
	Retries   uint64 `json:"retries"`
}

// Stats returns the counters of every channel, sorted by name.
func (q *Queue) Stats() []ChannelStats {
	q.mu.RLock()
	workers := slices.Collect(maps.Values(q.workers))
	q.mu.RUnlock()
	out := make([]ChannelStats, 0, len(workers))
	for _, w := range workers {
		out = append(out, w.stats())
	}
	slices.SortFunc(out, func(a, b ChannelStats) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// SendNow makes one attempt of b through the channel named name, now, bypassing its queue
// (for "caddy vigil test-channel NAME"), bounded by ctx and the channel's timeout. It
// records nothing and counts nothing; the returned Delivery says what happened, and the
// error is the attempt's (nil when delivered).
func (q *Queue) SendNow(ctx context.Context, name string, b alert.Batch) (alert.Delivery, error) {
	d := alert.Delivery{Channel: name, Status: alert.DeliveryFailed, Time: q.now()}
	q.mu.RLock()
	w, closed := q.workers[name], q.closed
	q.mu.RUnlock()
	switch {
	case closed:
		d.Error = "the notifier is stopped"
	case w == nil:
		d.Error = fmt.Sprintf("no channel named %q", name)
	case len(b.Events) == 0:
		d.Error = "empty batch"
	}
	if d.Error != "" {
		return d, errors.New("notifier: " + d.Error)
	}
	b.Channel = name
	ch, set := w.current()
	err := sendOnce(ctx, ch, time.Duration(set.Timeout), b, q.log)
	d.Attempts, d.Time = 1, q.now()
	if err != nil {
		d.Error = err.Error()
		return d, err
	}
	d.Status = alert.DeliveryDelivered
	return d, nil
}

// sendOnce makes one attempt bounded by timeout, turning a panic of the channel into a
// permanent error.
func sendOnce(ctx context.Context, ch Channel, timeout time.Duration, b alert.Batch, log *slog.Logger) (err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			log.Error("notifier: channel panicked", "channel", ch.Name(), "panic", p, "stack", string(debug.Stack()))
			err = Permanent(fmt.Errorf("channel %q panicked: %v", ch.Name(), p))
		}
	}()
	return ch.Send(ctx, b)
}

var _ alert.Notifier = (*Queue)(nil)
