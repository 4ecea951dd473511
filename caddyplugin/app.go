package caddyplugin

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/cohort"
	"github.com/vigilgw/vigil/detector/rules"
	"github.com/vigilgw/vigil/notifier"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the vigil app (apps.vigil): what all sites share. It holds the process's one
// engine (history, limiter and quota state, alert state), which outlives config reloads,
// and the configuration that applies to it: memory caps, channels and alert rules.
//
// A site's vigil handler works without this block: defaults apply.
type App struct {
	// Tick is how often alert rules are evaluated and housekeeping runs. Default 1s.
	Tick caddy.Duration `json:"tick,omitempty"`

	// MaxSeries caps the series (method, endpoint, status, upstream) kept in the store and
	// the distinct endpoints; beyond it, new ones are folded into "other" and counted.
	// Default 100000. Read when the engine is first created: a change needs a restart.
	MaxSeries int `json:"max_series,omitempty"`

	// MaxKeys caps the callers (users, companies, API keys) whose history is kept, and the
	// keys of the rate limiter and quota counters. Default 1000000. Read when the engine
	// is first created: a change needs a restart.
	MaxKeys int `json:"max_keys,omitempty"`

	// RecentCalls is the size of the ring of most recent calls, which event samples and
	// the calls API read. Default 10000. Read when the engine is first created.
	RecentCalls int `json:"recent_calls,omitempty"`

	// Snapshot is how often the history is saved to Caddy storage (and always on stop).
	// Default 1m.
	Snapshot caddy.Duration `json:"snapshot,omitempty"`

	// Channels are where alert events go: webhook, slack, pagerduty, alertmanager, email,
	// sms. Secrets in them should be {env.NAME} placeholders; they are resolved when the
	// config loads and never shown in logs, events or the admin API.
	Channels []notifier.Config `json:"channels,omitempty"`

	// Alerts are the alert rules (SPEC section 4). Each rule's notify list names channels
	// defined above.
	Alerts []rules.Rule `json:"alerts,omitempty"`

	// Correlate folds alerts about the same upstream (or company...) that fire within a
	// window of each other into one incident: one notification per channel, then updates
	// as members join and resolve; PagerDuty gets one dedup_key. Default: by upstream,
	// within 5m.
	Correlate *Correlate `json:"correlate,omitempty"`

	// CohortInterval is how often cohort membership is evaluated. Default 1m.
	CohortInterval caddy.Duration `json:"cohort_interval,omitempty"`

	// EventHistory is how many alert events are kept for the events API. Default 1000.
	EventHistory int `json:"event_history,omitempty"`

	// Delivery sets the delivery defaults of every channel (queue size, attempt timeout,
	// attempts, age, backoff); a channel's own queue settings override them.
	Delivery *notifier.QueueConfig `json:"delivery,omitempty"`

	// ExternalURL is the base URL of this gateway's admin API as whoever receives an alert
	// should link to it ("http://gw-1.example.com:2019/vigil"); empty: no links back.
	ExternalURL string `json:"external_url,omitempty"`

	// TestClock lets PUT /vigil/test/clock on the admin endpoint set the engine's clock,
	// so that tests can cross a quota or window boundary without waiting. Never enable it
	// in production.
	TestClock bool `json:"test_clock,omitempty"`

	engine   *engine
	logger   *slog.Logger
	handlers *handlerSet
	channels []notifier.Channel
	storage  certmagic.Storage
}

// cohortInterval returns how often cohorts are evaluated.
func (a *App) cohortInterval() time.Duration {
	if a.CohortInterval > 0 {
		return time.Duration(a.CohortInterval)
	}
	return cohort.Interval
}

// channelNames returns the names of the configured channels.
func (a *App) channelNames() map[string]bool {
	m := make(map[string]bool, len(a.Channels))
	for _, c := range a.Channels {
		m[c.Name] = true
	}
	return m
}

// Correlate configures incident correlation.
type Correlate struct {
	// By lists the dimensions the key is taken from, in order (the first that an alert's
	// group or its rule's filter has): upstream, company, user, key or endpoint.
	// Default ["upstream"].
	By []string `json:"by,omitempty"`
	// Window is how long after an incident's last firing a new alert still joins it.
	// Default 5m.
	Window caddy.Duration `json:"window,omitempty"`
	// Off turns correlation off.
	Off bool `json:"off,omitempty"`
}

// correlation returns the rule engine's correlation settings; the error names the field.
func (c *Correlate) correlation() (rules.Correlation, error) {
	if c == nil {
		return rules.DefaultCorrelation, nil
	}
	out := rules.Correlation{Window: time.Duration(c.Window), Off: c.Off}
	for i, name := range c.By {
		d, err := detector.ParseDim(name)
		if err != nil || !(d == detector.DimUpstream || d == detector.DimCompany || d == detector.DimUser || d == detector.DimKey || d == detector.DimEndpoint) {
			return out, fmt.Errorf("correlate.by[%d]: %q: want upstream, company, user, key or endpoint", i, name)
		}
		out.By = append(out.By, d)
	}
	if c.Window < 0 {
		return out, fmt.Errorf("correlate.window: must not be negative")
	}
	return out, nil
}

// checkEmailUser checks that a cohort rule's email_user names an email channel.
func (a *App) checkEmailUser(r *rules.Rule) error {
	if r.EmailUser == nil {
		return nil
	}
	for _, c := range a.Channels {
		if c.Name == r.EmailUser.Channel {
			if c.Type != notifier.TypeEmail {
				return fmt.Errorf("email_user.channel: %q is a %s channel, not email", c.Name, c.Type)
			}
			return nil
		}
	}
	return fmt.Errorf("email_user.channel: no channel named %q", r.EmailUser.Channel)
}

// handlerSet collects the vigil handlers of one config generation as they are
// provisioned.
type handlerSet struct {
	mu   sync.Mutex
	list []*Handler
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "vigil",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets defaults and acquires the process's engine.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Slogger()
	a.handlers = new(handlerSet)
	a.storage = ctx.Storage()
	if a.Tick == 0 {
		a.Tick = caddy.Duration(time.Second)
	}
	if a.MaxSeries == 0 {
		a.MaxSeries = 100000
	}
	if a.MaxKeys == 0 {
		a.MaxKeys = 1000000
	}
	if a.RecentCalls == 0 {
		a.RecentCalls = 10000
	}
	if a.Snapshot == 0 {
		a.Snapshot = caddy.Duration(time.Minute)
	}
	if a.EventHistory == 0 {
		a.EventHistory = rules.DefaultHistory
	}
	if err := a.Validate(); err != nil {
		return err
	}
	// Channels are built (and their secrets resolved) now, so that a bad one fails the
	// config load, but they start delivering only when this config starts.
	repl := caddy.NewReplacer()
	chs, err := notifier.NewAll(a.Channels, notifier.Options{
		Resolve:     func(s string) (string, error) { return repl.ReplaceOrErr(s, true, true) },
		ExternalURL: a.ExternalURL,
	})
	if err != nil {
		var ce *notifier.ConfigError
		if errors.As(err, &ce) {
			return fmt.Errorf("channels: %w", err)
		}
		return fmt.Errorf("channels: %w", err)
	}
	a.channels = chs
	v, _, err := engines.LoadOrNew(engineKey, func() (caddy.Destructor, error) {
		return newEngine(a, a.logger), nil
	})
	if err != nil {
		return fmt.Errorf("creating vigil engine: %w", err)
	}
	a.engine = v.(*engine)
	return nil
}

// Validate checks the configuration.
func (a *App) Validate() error {
	switch {
	case a.Tick < 0 || (a.Tick > 0 && time.Duration(a.Tick) < 10*time.Millisecond):
		return fmt.Errorf("tick: %s is too short (at least 10ms)", time.Duration(a.Tick))
	case a.MaxSeries < 0:
		return fmt.Errorf("max_series: must not be negative")
	case a.MaxKeys < 0:
		return fmt.Errorf("max_keys: must not be negative")
	case a.RecentCalls < 0:
		return fmt.Errorf("recent_calls: must not be negative")
	case a.Snapshot < 0:
		return fmt.Errorf("snapshot: must not be negative")
	case a.CohortInterval < 0:
		return fmt.Errorf("cohort_interval: must not be negative")
	case a.EventHistory < 0:
		return fmt.Errorf("event_history: must not be negative")
	}
	if _, err := a.Correlate.correlation(); err != nil {
		return err
	}
	if a.Delivery != nil {
		if err := a.Delivery.Validate(); err != nil {
			return fmt.Errorf("delivery: %w", err)
		}
	}
	channels := map[string]bool{}
	for i := range a.Channels {
		if err := a.Channels[i].Validate(); err != nil {
			return fmt.Errorf("channels[%d]: %w", i, err)
		}
		channels[a.Channels[i].Name] = true
	}
	ids := map[string]int{}
	for i := range a.Alerts {
		r := &a.Alerts[i]
		r.Normalize()
		if err := r.Validate(); err != nil {
			return fmt.Errorf("alerts[%d] (%q): %w", i, r.Name, err)
		}
		if j, dup := ids[r.ID]; dup {
			return fmt.Errorf("alerts[%d].id: %q is also the id of alerts[%d]", i, r.ID, j)
		}
		ids[r.ID] = i
		for j, n := range r.Notify {
			if !channels[n] {
				return fmt.Errorf("alerts[%d].notify[%d]: no channel named %q", i, j, n)
			}
		}
		if err := a.checkEmailUser(r); err != nil {
			return fmt.Errorf("alerts[%d].%w", i, err)
		}
	}
	return nil
}

// register is called by each vigil handler of this config when it is provisioned.
func (a *App) register(h *Handler) {
	a.handlers.mu.Lock()
	a.handlers.list = append(a.handlers.list, h)
	a.handlers.mu.Unlock()
}

// Start hands this generation's configuration to the engine.
func (a *App) Start() error {
	a.handlers.mu.Lock()
	hs := append([]*Handler(nil), a.handlers.list...)
	a.handlers.mu.Unlock()
	if err := a.engine.apply(a, a.channels); err != nil {
		return err
	}
	a.engine.start(&liveConfig{app: a, handlers: hs, tick: time.Duration(a.Tick)})
	live.Store(a.engine)
	return nil
}

// Stop does nothing on a successful reload (the next generation has taken over the
// engine) or at exit (the engine stops when its last reference is released, Cleanup).
// When a reload fails after this app started, Caddy stops the new apps: the engine then
// returns to the previous generation's rules and channels.
func (a *App) Stop() error {
	if !caddy.Exiting() && a.engine != nil {
		a.engine.rollback(a)
	}
	return nil
}

// Cleanup releases this generation's reference to the engine.
func (a *App) Cleanup() error {
	if a.engine != nil {
		_, err := engines.Delete(engineKey)
		a.engine = nil
		return err
	}
	return nil
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
