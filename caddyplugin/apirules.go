package caddyplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/vigilgw/vigil/detector/rules"
)

// Rules created through the admin API are kept apart from the configuration's rules and
// saved in Caddy storage under apiRulesKey, so that they survive restarts and reloads. A
// rule of the configuration and an API rule cannot share an id: the API refuses to create
// one, and an API rule whose id a later configuration takes is set aside (listed with
// "shadowed": true) while the configuration's rule is in force.
const apiRulesKey = "vigil/rules.json"

// apiRules holds the rules created through the admin API.
type apiRules struct {
	mu      sync.Mutex
	rules   []rules.Rule
	loaded  bool
	storage certmagic.Storage
}

// load reads the saved API rules once (the first time the engine gets storage).
func (a *apiRules) load(storage certmagic.Storage, logf func(msg string, args ...any)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.storage = storage
	if a.loaded || storage == nil {
		return
	}
	a.loaded = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data, err := storage.Load(ctx, apiRulesKey)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		logf("could not read the rules created through the admin API; starting without them", "key", apiRulesKey, "error", err)
		return
	}
	var saved []json.RawMessage
	if err := json.Unmarshal(data, &saved); err != nil {
		logf("the saved API rules are not valid JSON; starting without them", "key", apiRulesKey, "error", err)
		return
	}
	for i, raw := range saved {
		r, err := rules.DecodeRule(raw)
		if err != nil {
			logf("skipping a saved API rule", "index", i, "error", err)
			continue
		}
		a.rules = append(a.rules, r)
	}
}

// list returns a copy of the API rules.
func (a *apiRules) list() []rules.Rule {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]rules.Rule(nil), a.rules...)
}

// update applies change to a copy of the API rules, saves the result, and only then makes
// it current: a failed save changes nothing.
func (a *apiRules) update(change func([]rules.Rule) ([]rules.Rule, error)) ([]rules.Rule, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	next, err := change(append([]rules.Rule(nil), a.rules...))
	if err != nil {
		return nil, err
	}
	if a.storage != nil {
		data, err := json.MarshalIndent(next, "", "  ")
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.storage.Store(ctx, apiRulesKey, data); err != nil {
			return nil, fmt.Errorf("saving the rules to storage: %w", err)
		}
	}
	a.rules = next
	return append([]rules.Rule(nil), next...), nil
}

// ruleView is a rule as the admin API shows it.
type ruleView struct {
	rules.Rule
	// Source is "config" (Caddyfile or JSON config) or "api".
	Source string `json:"source"`
	// Firing is the number of firing instances.
	Firing int `json:"firing"`
	// Shadowed, for an API rule, says a configuration rule with the same id is in force.
	Shadowed bool `json:"shadowed,omitempty"`
	// Problem says why an API rule is not evaluated (it names a channel that no longer
	// exists).
	Problem string `json:"problem,omitempty"`
}

// effectiveRules merges the configuration's rules with the API rules that do not clash
// with them and whose channels exist; it also returns how each rule is shown.
func effectiveRules(cfg []rules.Rule, api []rules.Rule, channels map[string]bool) ([]rules.Rule, []ruleView) {
	out := append([]rules.Rule(nil), cfg...)
	views := make([]ruleView, 0, len(cfg)+len(api))
	ids := map[string]bool{}
	for _, r := range cfg {
		ids[r.ID] = true
		views = append(views, ruleView{Rule: r, Source: "config"})
	}
	for _, r := range api {
		v := ruleView{Rule: r, Source: "api"}
		switch {
		case ids[r.ID]:
			v.Shadowed = true
		default:
			for _, n := range r.Notify {
				if !channels[n] {
					v.Problem = fmt.Sprintf("notify: no channel named %q in the configuration", n)
				}
			}
			if v.Problem == "" {
				out = append(out, r)
			}
		}
		views = append(views, v)
	}
	return out, views
}
