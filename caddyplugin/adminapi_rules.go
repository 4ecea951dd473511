package caddyplugin

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/rules"
)

func init() {
	handleAdmin("/vigil/alerts", adminRoute{
		http.MethodGet:  listRules,
		http.MethodPost: createRule,
	})
	handleAdmin("/vigil/alerts/{id}", adminRoute{
		http.MethodGet:    getRule,
		http.MethodPut:    replaceRule,
		http.MethodDelete: deleteRule,
	})
}

// ruleViews returns every rule as the API shows it, with its firing count.
func (e *engine) ruleViews() []ruleView {
	cfg := e.cfg.Load()
	var views []ruleView
	if cfg != nil {
		_, views = effectiveRules(cfg.app.Alerts, e.api.list(), cfg.app.channelNames())
	} else {
		_, views = effectiveRules(nil, e.api.list(), nil)
	}
	firing := e.rules.Firing()
	for i := range views {
		if views[i].Problem == "" && !views[i].Shadowed {
			views[i].Firing = firing[views[i].ID]
		}
	}
	return views
}

func listRules(e *engine, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var enabled *bool
	if v := q.Get("enabled"); v != "" {
		switch v {
		case "true":
			t := true
			enabled = &t
		case "false":
			f := false
			enabled = &f
		default:
			return badRequest("enabled", "enabled: want true or false, got %q", v)
		}
	}
	types, err := listParam(q.Get("type"), "type", []string{rules.TypeStatic, rules.TypeAnomaly, rules.TypeCohort})
	if err != nil {
		return err
	}
	out := []ruleView{}
	for _, v := range e.ruleViews() {
		if enabled != nil && v.IsEnabled() != *enabled {
			continue
		}
		if len(types) > 0 && !contains(types, v.Type) {
			continue
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// listParam splits a comma-separated query value and checks each item against allowed
// (nil: anything).
func listParam(v, field string, allowed []string) ([]string, error) {
	if v == "" {
		return nil, nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if allowed != nil && !contains(allowed, s) {
			return nil, badRequest(field, "%s: %q is not one of %s", field, s, strings.Join(allowed, ", "))
		}
		out = append(out, s)
	}
	return out, nil
}

func contains(set []string, v string) bool {
	for _, s := range set {
		if s == v {
			return true
		}
	}
	return false
}

func getRule(e *engine, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	for _, v := range e.ruleViews() {
		if v.ID == id && !v.Shadowed {
			writeJSON(w, http.StatusOK, v)
			return nil
		}
	}
	return notFound("no rule with id %q", id)
}

// decodeRule reads a rule from a request body, strictly, naming the bad field.
func decodeRule(w http.ResponseWriter, r *http.Request) (rules.Rule, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		return rules.Rule{}, jsonError(err)
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return rules.Rule{}, badRequest("body", "body: empty, want a rule as JSON")
	}
	rule, err := rules.DecodeRule(data)
	if err != nil {
		var fe *detector.FieldError
		if errors.As(err, &fe) {
			return rules.Rule{}, badRequest(fe.Field, "%v", err)
		}
		return rules.Rule{}, badRequest("body", "%v", err)
	}
	return rule, nil
}

// checkChannels refuses a rule that notifies a channel the configuration lacks.
func checkChannels(e *engine, rule rules.Rule) error {
	cfg := e.cfg.Load()
	names := map[string]bool{}
	if cfg != nil {
		names = cfg.app.channelNames()
	}
	for i, n := range rule.Notify {
		if !names[n] {
			return badRequest(fmt.Sprintf("notify[%d]", i), "notify[%d]: no channel named %q in the configuration", i, n)
		}
	}
	if cfg != nil {
		if err := cfg.app.checkEmailUser(&rule); err != nil {
			return badRequest("email_user.channel", "%v", err)
		}
	}
	return nil
}

func configRule(e *engine, id string) bool {
	if cfg := e.cfg.Load(); cfg != nil {
		for _, r := range cfg.app.Alerts {
			if r.ID == id {
				return true
			}
		}
	}
	return false
}

func conflict(field, format string, args ...any) error {
	return apiError{status: http.StatusConflict, field: field, msg: fmt.Sprintf(format, args...)}
}

func createRule(e *engine, w http.ResponseWriter, r *http.Request) error {
	rule, err := decodeRule(w, r)
	if err != nil {
		return err
	}
	if err := checkChannels(e, rule); err != nil {
		return err
	}
	if configRule(e, rule.ID) {
		return conflict("id", "id: %q is the id of a rule in the configuration", rule.ID)
	}
	_, err = e.changeAPIRules(func(rs []rules.Rule) ([]rules.Rule, error) {
		for _, o := range rs {
			if o.ID == rule.ID {
				return nil, conflict("id", "id: a rule with id %q exists (PUT /vigil/alerts/%s replaces it)", rule.ID, rule.ID)
			}
		}
		return append(rs, rule), nil
	})
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/vigil/alerts/"+rule.ID)
	writeJSON(w, http.StatusCreated, ruleView{Rule: rule, Source: "api"})
	return nil
}

func replaceRule(e *engine, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	rule, err := decodeRule(w, r)
	if err != nil {
		return err
	}
	if rule.ID != id {
		if rule.ID != rules.DeriveID(rule.Name) {
			return badRequest("id", "id: %q in the body differs from %q in the path", rule.ID, id)
		}
		rule.ID = id // derived from the name: take the path's
	}
	if configRule(e, id) {
		return conflict("id", "rule %q is defined in the configuration: change it there and reload", id)
	}
	if err := checkChannels(e, rule); err != nil {
		return err
	}
	_, err = e.changeAPIRules(func(rs []rules.Rule) ([]rules.Rule, error) {
		for i := range rs {
			if rs[i].ID == id {
				rs[i] = rule
				return rs, nil
			}
		}
		return nil, notFound("no rule with id %q", id)
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ruleView{Rule: rule, Source: "api"})
	return nil
}

func deleteRule(e *engine, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if configRule(e, id) {
		return conflict("id", "rule %q is defined in the configuration: remove it there and reload", id)
	}
	_, err := e.changeAPIRules(func(rs []rules.Rule) ([]rules.Rule, error) {
		for i := range rs {
			if rs[i].ID == id {
				return append(rs[:i], rs[i+1:]...), nil
			}
		}
		return nil, notFound("no rule with id %q", id)
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// changeAPIRules changes the API rules (saved first) and hands the new rule set to the
// rule engine. The new set is validated before anything is saved.
func (e *engine) changeAPIRules(change func([]rules.Rule) ([]rules.Rule, error)) ([]rules.Rule, error) {
	cfg := e.cfg.Load()
	if cfg == nil {
		return nil, apiError{status: http.StatusServiceUnavailable, msg: "vigil is not running"}
	}
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	next, err := e.api.update(change)
	if err != nil {
		return nil, err
	}
	if err := e.applyRules(cfg.app, next); err != nil {
		return nil, fmt.Errorf("the rules were saved but not applied: %w", err)
	}
	return next, nil
}
