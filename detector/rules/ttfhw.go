package rules

import (
	"errors"
	"math"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
	"github.com/vigilgw/vigil/detector/anomaly"
)

// Metric ttfhw (time to first hello world) is not in the store: who signed up when is in
// the user registry of package cohort, which imports this package. The engine reads it
// through a TTFHWSource instead, set with SetTTFHW.

// TTFHWSource gives the rules engine time to first hello world figures. Package cohort
// implements it over its user registry and the store's caller history; the gateway sets
// it with Engine.SetTTFHW. Its methods are called from Evaluate, with the engine's lock
// held: they must not call the rules engine.
type TTFHWSource interface {
	// UserTTFHW returns a user's time to first hello world at now: from sign-up (or the
	// first call when the sign-up time is unknown) to the first call answered 1xx-3xx,
	// or the time so far without one; false when nothing is known of the user.
	UserTTFHW(user string, now time.Time) (time.Duration, bool)
	// NewUserTTFHW returns, for each time in at (ascending), the median time to first
	// hello world at that time of the users who signed up within signup before it (a
	// success that came later counts as none yet), and how many users that is.
	NewUserTTFHW(at []time.Time, signup time.Duration) []TTFHWMedian
}

// TTFHWMedian is the median time to first hello world of recent sign-ups at one time.
type TTFHWMedian struct {
	// Median is the median (of an even number of users, the mean of the middle two).
	Median time.Duration
	// Users is how many users signed up in the window (an estimate when the source
	// samples); 0 when none did, and Median means nothing.
	Users int
}

// TTFHWSignupWindow is how recent a sign-up must be for the user to count in the anomaly
// series of metric ttfhw: this week's new users.
const TTFHWSignupWindow = 7 * 24 * time.Hour

// TTFHWBackfill is how many past minutes a new anomaly rule of metric ttfhw learns from
// when it starts. The series can be rebuilt for the past (sign-up and first success
// times are known), so the rule is warm at once instead of after its detector's
// warm-up; a day of minutes covers the daily profile.
const TTFHWBackfill = 24 * time.Hour

// SetTTFHW sets where metric ttfhw is read from. Without a source, rules of metric ttfhw
// are refused by SetRules.
func (e *Engine) SetTTFHW(src TTFHWSource) {
	e.mu.Lock()
	e.ttfhw = src
	e.mu.Unlock()
}

// errNoTTFHW is the error for a rule of metric ttfhw in an engine without a source.
var errNoTTFHW = fieldErr("metric", "ttfhw needs the user registry, and this engine has none")

// ttfhwValue is a user's time to first hello world in seconds at now, NaN when unknown.
func (e *Engine) ttfhwValue(user string, now time.Time) float64 {
	if e.ttfhw == nil || user == "" || user == detector.Anonymous {
		return math.NaN()
	}
	d, ok := e.ttfhw.UserTTFHW(user, now)
	if !ok {
		return math.NaN()
	}
	return d.Seconds()
}

// evaluateTTFHWAnomaly feeds the anomaly detector of a rule of metric ttfhw one value per
// minute closed since the last evaluation: the median time to first hello world, at the
// minute's end, of the users who signed up within TTFHWSignupWindow before it. A minute
// with fewer users than min_calls (at least one) is skipped.
func (e *Engine) evaluateTTFHWAnomaly(c *compiled, now time.Time) ([]alert.Event, error) {
	if e.ttfhw == nil {
		return nil, errors.New("metric ttfhw: no user registry")
	}
	st := c.anomaly
	closed := now.Truncate(time.Minute)
	from := st.next
	if from.IsZero() || closed.Sub(from) > TTFHWBackfill {
		from = closed.Add(-TTFHWBackfill)
	}
	if !from.Before(closed) {
		return nil, nil
	}
	ends := make([]time.Time, int(closed.Sub(from)/time.Minute))
	for k := range ends {
		ends[k] = from.Add(time.Duration(k+1) * time.Minute)
	}
	medians := e.ttfhw.NewUserTTFHW(ends, TTFHWSignupWindow)
	st.next = closed
	g := detector.Labels{}
	ag := st.groups[g]
	if ag == nil {
		ag = &anomalyGroup{det: anomaly.New(anomaly.Config{Kind: st.kind, Sensitivity: st.sens}), al: anomaly.NewAlerter(st.sens, st.dir)}
		if inst := c.instances[g]; inst != nil && inst.state == alert.Firing {
			ag.al.Resume() // firing before a restart: no second firing, and it can resolve
		}
		st.groups[g] = ag
	}
	minUsers := max(c.rule.MinCalls, 1)
	var events []alert.Event
	for k, m := range medians {
		if k >= len(ends) || m.Users < minUsers {
			continue // nobody new that minute: nothing to learn
		}
		v := m.Median.Seconds()
		events = append(events, e.observeAnomaly(c, g, ag, ends[k], v, now, nil)...)
	}
	return events, nil
}
