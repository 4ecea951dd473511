package caddyplugin

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
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

	// TestClock lets PUT /vigil/test/clock on the admin endpoint set the engine's clock,
	// so that tests can cross a quota or window boundary without waiting. Never enable it
	// in production.
	TestClock bool `json:"test_clock,omitempty"`

	engine   *engine
	logger   *slog.Logger
	handlers *handlerSet
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
	if err := a.Validate(); err != nil {
		return err
	}
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
	a.engine.start(&liveConfig{app: a, handlers: hs, tick: time.Duration(a.Tick)})
	live.Store(a.engine)
	return nil
}

// Stop does nothing: on a reload the next generation takes over the engine, and at exit
// the engine stops when its last reference is released (Cleanup).
func (a *App) Stop() error { return nil }

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
