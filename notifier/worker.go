package notifier

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// item is a queued batch.
type item struct {
	batch  alert.Batch
	queued time.Time
}

// worker is one channel's queue and the goroutine that empties it, one batch at a time.
// The Queue owns it: the goroutine ends when the queue is drained after Close, or when its
// context is cancelled (channel removed, or Close's deadline passed).
type worker struct {
	q    *Queue
	name string

	mu        sync.Mutex
	ch        Channel
	set       QueueConfig
	items     []item // FIFO; items[0] is in flight while delivering
	draining  bool
	lastKeep  time.Time // last keep-alive (KeepAliver channels)
	dropLast  time.Time // last log line about drops
	dropSince int       // drops since that line

	wake   chan struct{} // a batch was queued, or draining started
	ctx    context.Context
	cancel context.CancelCauseFunc

	delivered, failed, dropped, retries atomic.Uint64
}

// startWorker adds a worker for ch and starts its goroutine. q.mu must be held.
func (q *Queue) startWorker(ch Channel) {
	ctx, cancel := context.WithCancelCause(context.Background())
	w := &worker{
		q: q, name: ch.Name(), ch: ch, set: q.settingsFor(ch),
		lastKeep: time.Now(), wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
	}
	q.workers[w.name] = w
	q.wg.Add(1)
	go w.run()
}

// current returns the channel and settings to use for the next attempt.
func (w *worker) current() (Channel, QueueConfig) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch, w.set
}

// replace swaps the channel (on Update), handing over any state it keeps for its receiver.
func (w *worker) replace(ch Channel, set QueueConfig) {
	old, _ := w.current()
	if a, ok := ch.(interface{ adopt(Channel) }); ok && old != ch {
		a.adopt(old) // before the worker can send through ch
	}
	w.mu.Lock()
	w.ch, w.set = ch, set
	w.mu.Unlock()
	if old != ch {
		closeIdle(old)
	}
	w.signal()
}

// closeIdle closes the idle connections of a channel that is no longer used.
func closeIdle(ch Channel) {
	if c, ok := ch.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func (w *worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// drain makes the worker end once its queue is empty.
func (w *worker) drain() {
	w.mu.Lock()
	w.draining = true
	w.mu.Unlock()
	w.signal()
}

func (w *worker) length() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.items)
}

func (w *worker) stats() ChannelStats {
	w.mu.Lock()
	s := ChannelStats{Name: w.name, Type: w.ch.Type(), QueueLength: len(w.items), QueueCapacity: w.set.Size}
	w.mu.Unlock()
	s.Delivered, s.Failed, s.Dropped, s.Retries = w.delivered.Load(), w.failed.Load(), w.dropped.Load(), w.retries.Load()
	return s
}

// enqueue queues b, or drops it when the queue is full. It never blocks.
func (w *worker) enqueue(b alert.Batch) {
	now := w.q.now()
	w.mu.Lock()
	if len(w.items) >= w.set.Size {
		w.dropped.Add(1)
		// Recorded under mu, as queued below, so that outcomes keep their order.
		w.q.records.add(b.Events, alert.Delivery{Channel: w.name, Status: alert.DeliveryDropped,
			Error: "queue full (" + strconv.Itoa(w.set.Size) + " batches)", Time: now})
		w.dropSince++
		logIt, n, size := now.Sub(w.dropLast) >= dropLogEvery, w.dropSince, w.set.Size
		if logIt {
			w.dropLast, w.dropSince = now, 0
		}
		w.mu.Unlock()
		if logIt {
			w.q.log.Warn("notifier: queue full, batches dropped", "channel", w.name, "dropped", n,
				"dropped_total", w.dropped.Load(), "capacity", size)
		}
		return
	}
	w.items = append(w.items, item{batch: b, queued: now})
	w.q.records.add(b.Events, alert.Delivery{Channel: w.name, Status: alert.DeliveryQueued, Time: now})
	w.mu.Unlock()
	w.signal()
}

// run is the worker's goroutine.
func (w *worker) run() {
	defer w.q.wg.Done()
	for !w.loop() {
	}
	w.giveUpQueued()
	w.mu.Lock()
	ch := w.ch
	w.mu.Unlock()
	closeIdle(ch)
	w.cancel(nil)
}

// loop delivers batches until the worker is done (true), or until a panic (false: run
// logs it and loops again, the batch in flight given up so that it cannot panic again).
func (w *worker) loop() (done bool) {
	var current *item
	defer func() {
		if p := recover(); p != nil {
			w.q.log.Error("notifier: worker panicked; continuing", "channel", w.name, "panic", p, "stack", string(debug.Stack()))
			if current != nil {
				w.giveUp(*current, 0, fmt.Sprintf("notifier bug: worker panicked: %v", p))
				w.pop()
			}
			done = false
		}
	}()
	for {
		it, ok := w.next()
		if !ok {
			return true
		}
		current = &it
		w.deliver(it)
		current = nil
		w.pop()
	}
}

// pop removes the batch in flight from the queue.
func (w *worker) pop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.items[0] = item{}
	w.items = w.items[1:]
}

// next waits for the next batch; false when the worker must end.
func (w *worker) next() (item, bool) {
	for {
		w.mu.Lock()
		if len(w.items) > 0 {
			it := w.items[0]
			w.mu.Unlock()
			return it, true
		}
		draining := w.draining
		w.mu.Unlock()
		if draining || !w.pause(-1) {
			return item{}, false
		}
	}
}

// pause waits d, or when d < 0 until a batch is queued, running keep-alives when they are
// due; false when the worker's context ended.
func (w *worker) pause(d time.Duration) bool {
	var end <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		end = t.C
	}
	wake := w.wake
	if d >= 0 {
		wake = nil
	}
	for {
		ka, timer := w.keepAliveDue()
		var kaC <-chan time.Time
		if timer != nil {
			kaC = timer.C
		}
		select {
		case <-w.ctx.Done():
		case <-end:
		case <-wake:
		case <-kaC:
			w.keepAlive(ka)
			continue
		}
		if timer != nil {
			timer.Stop()
		}
		return w.ctx.Err() == nil
	}
}

// keepAliveDue returns the channel's KeepAliver and a timer for its next keep-alive, or
// nils when it has none or the Queue is closing.
func (w *worker) keepAliveDue() (KeepAliver, *time.Timer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ka, ok := w.ch.(KeepAliver)
	if !ok || w.draining || ka.KeepAliveInterval() <= 0 {
		return nil, nil
	}
	return ka, time.NewTimer(max(0, time.Until(w.lastKeep.Add(ka.KeepAliveInterval()))))
}

// keepAlive runs one keep-alive; failures (panics included) are logged, the next one
// tries again.
func (w *worker) keepAlive(ka KeepAliver) {
	defer func() {
		if p := recover(); p != nil {
			w.q.log.Error("notifier: keep-alive panicked", "channel", w.name, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	w.mu.Lock()
	w.lastKeep = time.Now()
	timeout := time.Duration(w.set.Timeout)
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(w.ctx, timeout)
	defer cancel()
	if err := ka.KeepAlive(ctx); err != nil && w.ctx.Err() == nil {
		w.q.log.Warn("notifier: keep-alive failed; retrying at the next interval", "channel", w.name, "error", err.Error())
	}
}

// deliver attempts it until it is delivered or given up, recording each step.
func (w *worker) deliver(it item) {
	attempts := 0
	for {
		ch, set := w.current()
		now := w.q.now()
		if age := now.Sub(it.queued); age > time.Duration(set.MaxAge) {
			w.giveUp(it, attempts, fmt.Sprintf("expired: queued %s ago, max_age %s", age.Round(time.Second), set.MaxAge))
			return
		}
		if w.ctx.Err() != nil {
			w.giveUp(it, attempts, context.Cause(w.ctx).Error())
			return
		}
		err := sendOnce(w.ctx, ch, time.Duration(set.Timeout), it.batch, w.q.log)
		attempts++
		if err == nil {
			w.delivered.Add(1)
			w.q.records.add(it.batch.Events, alert.Delivery{Channel: w.name, Status: alert.DeliveryDelivered, Attempts: attempts, Time: w.q.now()})
			w.q.log.Debug("notifier: delivered", "channel", w.name, "events", len(it.batch.Events), "attempts", attempts)
			return
		}
		if w.ctx.Err() != nil {
			w.giveUp(it, attempts, context.Cause(w.ctx).Error()+" (last attempt: "+err.Error()+")")
			return
		}
		retry, after := Classify(err)
		switch {
		case !retry:
			w.giveUp(it, attempts, "not retryable: "+err.Error())
			return
		case attempts >= set.MaxAttempts:
			w.giveUp(it, attempts, fmt.Sprintf("gave up after %d attempts: %v", attempts, err))
			return
		}
		wait := backoff(set, attempts, after)
		now = w.q.now()
		if now.Add(wait).Sub(it.queued) > time.Duration(set.MaxAge) {
			w.giveUp(it, attempts, fmt.Sprintf("gave up: the next attempt would be after max_age %s: %v", set.MaxAge, err))
			return
		}
		w.retries.Add(1)
		reason := fmt.Sprintf("attempt %d failed, next in %s: %v", attempts, wait.Round(time.Millisecond), err)
		w.q.records.add(it.batch.Events, alert.Delivery{Channel: w.name, Status: alert.DeliveryRetrying, Attempts: attempts, Error: reason, Time: now})
		w.q.log.Warn("notifier: attempt failed, retrying", "channel", w.name, "events", len(it.batch.Events),
			"attempt", attempts, "wait", wait, "error", err.Error())
		if !w.pause(wait) {
			w.giveUp(it, attempts, context.Cause(w.ctx).Error()+" (last attempt: "+err.Error()+")")
			return
		}
	}
}

// giveUp records it as failed.
func (w *worker) giveUp(it item, attempts int, reason string) {
	w.failed.Add(1)
	if w.ctx.Err() != nil && context.Cause(w.ctx) == errStopped {
		w.q.abandoned.Add(1)
	}
	w.q.records.add(it.batch.Events, alert.Delivery{Channel: w.name, Status: alert.DeliveryFailed, Attempts: attempts, Error: reason, Time: w.q.now()})
	w.q.log.Error("notifier: delivery failed", "channel", w.name, "events", len(it.batch.Events), "attempts", attempts, "error", reason)
}

// giveUpQueued records the batches left in the queue as failed when the worker ends
// before it could send them.
func (w *worker) giveUpQueued() {
	w.mu.Lock()
	left := w.items
	w.items = nil
	w.mu.Unlock()
	cause := errStopped
	if c := context.Cause(w.ctx); c != nil {
		cause = c
	}
	for _, it := range left {
		w.giveUp(it, 0, cause.Error())
	}
}

// backoff returns the wait before the attempt after attempt number n: drawn at random up
// to BackoffBase·2^(n-1) (full jitter), at least the receiver's Retry-After, at most
// BackoffMax.
func backoff(set QueueConfig, n int, retryAfter time.Duration) time.Duration {
	ceiling, limit := time.Duration(set.BackoffBase), time.Duration(set.BackoffMax)
	for i := 1; i < n && ceiling < limit; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, limit)
	wait := time.Duration(0)
	if ceiling > 0 {
		wait = time.Duration(rand.Int64N(int64(ceiling) + 1))
	}
	return min(max(wait, retryAfter), limit)
}
