package caddyplugin

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/vigilgw/vigil/caddyplugin/blocklist"
	"github.com/vigilgw/vigil/caddyplugin/endpoint"
	"github.com/vigilgw/vigil/caddyplugin/intern"
	"github.com/vigilgw/vigil/caddyplugin/limit"
	"github.com/vigilgw/vigil/caddyplugin/metrics"
	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/cohort"
	"github.com/vigilgw/vigil/detector/rules"
	"github.com/vigilgw/vigil/notifier"
)

// engines holds the one engine of the process. It is reference-counted by app
// generations: a config reload provisions the new app (a second reference) before the old
// one is cleaned up, so the engine, and with it the history, limiter, quota and alert
// state, survives reloads and is destroyed only at exit.
var engines = caddy.NewUsagePool()

const engineKey = "vigil"

// live points at the engine of the running config, for the admin API, which Caddy
// builds anew on every load and never cleans up: it must look the engine up per request.
var live atomic.Pointer[engine]

// engine is Vigil's per-process state. Everything in it survives config reloads.
type engine struct {
	store     *detector.Store
	limiter   *limit.Memory
	blocks    *blocklist.List // entries added at run time through the admin API
	endpoints *intern.Table
	keys      *intern.Table // API key ids, see keyID
	rules     *rules.Engine
	registry  *cohort.Registry
	cohorts   *cohort.Engine
	api       apiRules   // rules created through the admin API
	applyMu   sync.Mutex // serialises rule-set changes (config starts, API edits)
	metrics   *metrics.Registry
	logger    *slog.Logger

	// queue delivers alert events; created with the first configuration that starts,
	// updated on every reload, closed at exit.
	queueMu sync.Mutex
	queue   *notifier.Queue

	// clockOffset is added to the wall clock; only the test clock (App.TestClock) sets it.
	clockOffset atomic.Int64

	// cfg is the configuration of the running app generation, swapped in by App.Start;
	// prev the one before, to return to when a reload fails after vigil started.
	cfg  atomic.Pointer[liveConfig]
	prev atomic.Pointer[liveConfig]

	// pending is what a snapshot restores at the first start; snapshotBusy guards against
	// overlapping writes.
	pending        *pendingRestore
	pendingCohorts *cohort.State
	snapshotBusy   atomic.Bool
	// chainCut is the cut (Unix seconds) of the newest snapshot base or segment in
	// storage, which the deltas written now go with; 0 until a base is written or
	// restored. baseAt is the base's own cut.
	chainCut atomic.Int64
	baseAt   atomic.Int64
	// snapStats is what saveSnapshot did, for the metrics; snapMu guards it (saves write
	// it, scrapes read it).
	snapMu    sync.Mutex
	snapStats metrics.SnapshotStats

	loopMu  sync.Mutex
	stop    chan struct{} // closed to stop the loop
	done    chan struct{} // closed when the loop has stopped
	started bool
}

// liveConfig is what the running app generation contributes to the engine.
type liveConfig struct {
	app      *App
	handlers []*Handler
	tick     time.Duration
}

func newEngine(app *App, logger *slog.Logger) *engine {
	e := &engine{
		store: detector.New(detector.Config{
			MaxSeries:   app.MaxSeries,
			MaxKeys:     app.MaxKeys,
			RecentCalls: app.RecentCalls,
		}),
		limiter:   limit.NewMemory(app.MaxKeys),
		blocks:    new(blocklist.List),
		endpoints: intern.NewTable(app.MaxSeries),
		keys:      intern.NewTable(maxKeyIDs),
		logger:    logger,
	}
	e.rules = rules.NewEngine(e.store, rules.Options{History: app.EventHistory, Logger: logger})
	e.registry = cohort.NewRegistry(app.MaxKeys)
	e.cohorts = cohort.NewEngine(e.store, e.registry, e.rules.History(), logger)
	e.rules.SetTTFHW(cohort.NewTTFHWSource(e.store, e.registry)) // metric ttfhw
	e.loadRegistry(app.storage)
	e.metrics = metrics.New(metrics.Options{MaxEndpoints: min(app.MaxSeries, 500)})
	e.metrics.SetScrapeHook(e.reportMetrics)
	// Requests are counted as the store applies them, in batches off the request path,
	// where the counters of busy endpoints stay in one core's cache.
	e.store.Observe(func(c detector.Call) {
		e.metrics.ObserveRequest(c.Endpoint, c.Method, c.Status, c.Latency)
	})
	e.restoreSnapshot(app.storage)
	return e
}

// reportMetrics fills the metrics that are read from the engine's parts at scrape time.
func (e *engine) reportMetrics(r *metrics.Registry) {
	// Stats applies the buffered calls first, so that the requests families count every
	// call completed before the scrape.
	st := e.store.Stats()
	r.SetStoreStats(metrics.StoreStats{Series: st.Series + st.DetailSeries, Users: st.Users, Companies: st.Companies, Keys: st.Keys, Overflow: st.Overflow})
	r.SetAlertsFiring(e.rules.Firing())
	e.snapMu.Lock()
	r.SetSnapshotStats(e.snapStats)
	e.snapMu.Unlock()
	e.queueMu.Lock()
	q := e.queue
	e.queueMu.Unlock()
	if q != nil {
		qs := q.Stats()
		cs := make([]metrics.ChannelStats, len(qs))
		for i, c := range qs {
			cs[i] = metrics.ChannelStats{Channel: c.Name, QueueLength: c.QueueLength, Delivered: c.Delivered, Failed: c.Failed, Dropped: c.Dropped, Retried: c.Retries}
		}
		r.SetNotificationStats(cs)
	}
}

// apply hands a starting configuration's channels and rules to the engine: the delivery
// queue gets the new channels (batches queued for kept channels stay queued), and the
// rule engine the new rules (unchanged rules keep their state).
func (e *engine) apply(a *App, channels []notifier.Channel) error {
	e.queueMu.Lock()
	if e.queue == nil {
		var defaults notifier.QueueConfig
		if a.Delivery != nil {
			defaults = *a.Delivery
		}
		q, err := notifier.NewQueue(notifier.QueueOptions{Defaults: defaults, Recorder: e.rules.History(), Logger: e.logger}, channels...)
		if err != nil {
			e.queueMu.Unlock()
			return fmt.Errorf("starting alert delivery: %w", err)
		}
		e.queue = q
		e.rules.SetNotifier(q)
		e.cohorts.SetNotifier(q)
	} else if err := e.queue.Update(channels); err != nil {
		e.queueMu.Unlock()
		return fmt.Errorf("updating alert channels: %w", err)
	}
	e.queueMu.Unlock()
	e.api.load(a.storage, e.logger.Warn)
	corr, _ := a.Correlate.correlation() // checked in Validate
	e.rules.SetCorrelation(corr)
	if err := e.setRules(a); err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	e.applyPending()
	return nil
}

// setRules hands the rule engine the configuration's rules and the API rules.
func (e *engine) setRules(a *App) error {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	return e.applyRules(a, e.api.list())
}

// applyRules hands the rule and cohort engines the configuration's rules and the given
// API rules; applyMu held.
func (e *engine) applyRules(a *App, api []rules.Rule) error {
	eff, _ := effectiveRules(a.Alerts, api, a.channelNames())
	if err := e.rules.SetRules(eff, e.now()); err != nil {
		return err
	}
	return e.cohorts.SetRules(eff)
}

// now is the engine's clock: the wall clock, shifted when a test has set the clock.
func (e *engine) now() time.Time { return e.at(time.Now()) }

// at turns a wall-clock reading into the engine's time (the same unless a test set the
// clock), so that the request path reads the clock once per end of the call.
func (e *engine) at(t time.Time) time.Time {
	if off := e.clockOffset.Load(); off != 0 {
		t = t.Add(time.Duration(off))
	}
	return t
}

// setClock makes now() return t from this moment on (the test clock).
func (e *engine) setClock(t time.Time) {
	e.clockOffset.Store(int64(time.Until(t)))
}

// start swaps in a new app generation's configuration and starts the background loop
// the first time.
func (e *engine) start(cfg *liveConfig) {
	e.prev.Store(e.cfg.Swap(cfg))
	e.loopMu.Lock()
	defer e.loopMu.Unlock()
	if e.started {
		return
	}
	e.started = true
	e.stop, e.done = make(chan struct{}), make(chan struct{})
	storeDone := make(chan struct{})
	go func() {
		defer close(storeDone)
		e.store.Run(e.stop)
	}()
	go func() {
		e.loop()
		<-storeDone
		close(e.done)
	}()
}

// rollback returns to the previous configuration when the generation being stopped is
// the running one: a reload failed after this app had started (on a successful reload
// the old generation is stopped after the new one took over, and nothing happens).
func (e *engine) rollback(a *App) {
	cur, prev := e.cfg.Load(), e.prev.Load()
	if cur == nil || cur.app != a || prev == nil {
		return
	}
	if err := e.apply(prev.app, prev.app.channels); err != nil {
		e.logger.Error("restoring the previous vigil configuration after a failed reload", "error", err)
	}
	e.cfg.Store(prev)
	e.prev.Store(nil)
}

// loop runs every tick: it sweeps expired series and block-list entries. Alert
// evaluation hooks in here.
func (e *engine) loop() {
	tick := time.Second
	if c := e.cfg.Load(); c != nil && c.tick > 0 {
		tick = c.tick
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var lastSweep, lastCohorts time.Time
	lastSnapshot := time.Now()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		}
		if c := e.cfg.Load(); c != nil && c.tick > 0 && c.tick != tick {
			tick = c.tick
			t.Reset(tick)
		}
		now := e.now()
		e.safely("evaluating alert rules", func() { e.rules.Evaluate(now) })
		if c := e.cfg.Load(); c != nil && now.Sub(lastCohorts) >= c.app.cohortInterval() {
			lastCohorts = now
			e.safely("evaluating cohorts", func() { e.cohorts.Evaluate(now) })
		}
		if c := e.cfg.Load(); c != nil && c.app.Snapshot > 0 && time.Since(lastSnapshot) >= time.Duration(c.app.Snapshot) {
			lastSnapshot = time.Now()
			storage := c.app.storage
			go e.safely("saving a snapshot", func() { e.saveSnapshot(storage) })
		}
		e.safely("housekeeping", func() {
			if now.Sub(lastSweep) >= time.Minute {
				lastSweep = now
				e.store.Sweep(now)
				e.blocks.Prune(now)
			}
		})
	}
}

// safely runs fn, logging instead of crashing when it panics: a bug in evaluation must
// not take the gateway down.
func (e *engine) safely(what string, fn func()) {
	defer func() {
		if r := recover(); r != nil {
			e.logger.Error("panic in vigil engine", "where", what, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	fn()
}

// Destruct stops the engine when the last app generation lets go of it (process exit,
// or a config without vigil).
func (e *engine) Destruct() error {
	e.loopMu.Lock()
	started := e.started
	e.started = false
	e.loopMu.Unlock()
	if started {
		close(e.stop)
		<-e.done
	}
	live.CompareAndSwap(e, nil)
	e.queueMu.Lock()
	q := e.queue
	e.queueMu.Unlock()
	if q != nil {
		// Deliver what is queued, for a while: alerts must not be lost at exit.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Close(ctx); err != nil {
			e.logger.Warn("alert delivery did not finish before exit", "error", err)
		}
	}
	// The final snapshot, with the deliveries' outcomes, only for an engine that ran:
	// "caddy validate" must not overwrite a good snapshot with an empty one.
	if c := e.cfg.Load(); started && c != nil {
		for e.snapshotBusy.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		e.saveSnapshot(c.app.storage)
	}
	return nil
}

var _ caddy.Destructor = (*engine)(nil)

// endpoint returns the interned endpoint equal to b, or [endpoint.Other] once max_series
// distinct endpoints are kept.
func (e *engine) endpoint(b []byte) string {
	if s, ok := e.endpoints.Intern(b); ok {
		return s
	}
	return endpoint.Other
}
