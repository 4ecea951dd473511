package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
)

// Correlation folds alerts about the same thing into one incident: when several rules
// fire for the same upstream (or company, or whatever By names) within Window of each
// other, channels get one notification for the incident, then updates as members join
// and resolve, instead of one alert each; PagerDuty gets one dedup_key for it.
type Correlation struct {
	// By lists the dimensions an alert's correlation key is taken from, in order: the
	// first one the alert's group or its rule's filter has a value for. Default: upstream.
	By []detector.Dim
	// Window is how long after an incident's last firing a new alert with its key still
	// joins it. Default 5 minutes.
	Window time.Duration
	// Off turns correlation off: every alert is notified on its own (still batched per
	// channel and tick).
	Off bool
}

// DefaultCorrelation correlates by upstream within 5 minutes.
var DefaultCorrelation = Correlation{By: []detector.Dim{detector.DimUpstream}, Window: 5 * time.Minute}

// incident is a group of correlated alert instances.
type incident struct {
	id        string
	key       string
	firing    map[string]bool // member (rule id + group) -> firing
	lastFired time.Time
}

func (inc *incident) open() int {
	n := 0
	for _, f := range inc.firing {
		if f {
			n++
		}
	}
	return n
}

// SetCorrelation sets how alerts are folded into incidents.
func (e *Engine) SetCorrelation(c Correlation) {
	if len(c.By) == 0 {
		c.By = DefaultCorrelation.By
	}
	if c.Window <= 0 {
		c.Window = DefaultCorrelation.Window
	}
	e.mu.Lock()
	e.correlation = c
	e.mu.Unlock()
}

// correlationKey returns the key an event correlates on ("upstream=mail.example.com:443"),
// or "" when it has none.
func (e *Engine) correlationKey(ev *alert.Event, filters map[string]*detector.Filter) string {
	for _, d := range e.correlation.By {
		name := d.String()
		if v := ev.Group[name]; v != "" && v != detector.Anonymous {
			return name + "=" + v
		}
		if f := filters[ev.RuleID]; f != nil {
			var v string
			switch d {
			case detector.DimUpstream:
				v = f.Upstream
			case detector.DimCompany:
				v = f.Company
			case detector.DimUser:
				v = f.User
			case detector.DimEndpoint:
				v = f.Endpoint
			case detector.DimKey:
				v = f.Key
			}
			if v != "" {
				return name + "=" + v
			}
		}
	}
	return ""
}

// correlate assigns firing and resolved events to incidents (setting Event.Incident) and
// returns, per incident id, how many members are firing after these events. Called with
// e.mu held.
func (e *Engine) correlate(events []alert.Event, now time.Time) map[string]int {
	if e.correlation.Off || len(events) == 0 {
		return nil
	}
	filters := map[string]*detector.Filter{}
	for _, c := range e.rules {
		filters[c.rule.ID] = &c.rule.Filter
	}
	if e.incidents == nil {
		e.incidents = map[string]*incident{}
	}
	touched := map[string]*incident{}
	for i := range events {
		ev := &events[i]
		if ev.State != alert.Firing && ev.State != alert.Resolved {
			continue
		}
		key := e.correlationKey(ev, filters)
		if key == "" {
			continue
		}
		member := ev.RuleID + "|" + groupText(ev.Group)
		inc := e.incidents[key]
		switch ev.State {
		case alert.Firing:
			if inc == nil || (inc.open() == 0 && now.Sub(inc.lastFired) > e.correlation.Window) {
				inc = &incident{id: incidentID(key, now), key: key, firing: map[string]bool{}}
				e.incidents[key] = inc
			}
			inc.firing[member] = true
			inc.lastFired = now
		case alert.Resolved:
			if inc == nil || !inc.firing[member] {
				continue // fired before the incident existed (or was forgotten)
			}
			inc.firing[member] = false
		}
		ev.Incident = inc.id
		touched[inc.id] = inc
	}
	open := make(map[string]int, len(touched))
	for id, inc := range touched {
		open[id] = inc.open()
	}
	// Forget incidents that are over and can no longer be joined.
	for key, inc := range e.incidents {
		if inc.open() == 0 && now.Sub(inc.lastFired) > e.correlation.Window {
			delete(e.incidents, key)
		}
	}
	return open
}

// Incident ids are readable and unique: the key and the time the incident opened,
// "upstream=mail.example.com:443@1795510779", shortened with a hash when long.
func incidentID(key string, now time.Time) string {
	id := key + "@" + strconv.FormatInt(now.Unix(), 10)
	if len(id) > 120 {
		sum := sha256.Sum256([]byte(id))
		id = key[:80] + "~" + hex.EncodeToString(sum[:8])
	}
	return id
}

func groupText(g map[string]string) string {
	if len(g) == 0 {
		return ""
	}
	keys := make([]string, 0, len(g))
	for k := range g {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + g[k] + ",")
	}
	return b.String()
}
