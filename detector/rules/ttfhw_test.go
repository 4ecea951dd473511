package rules

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
)

// fakeTTFHW is a TTFHW source with sign-up and first-success times set by the test, and
// the anomaly series given as a function of time.
type fakeTTFHW struct {
	signup   map[string]time.Time
	first2xx map[string]time.Time
	series   func(t time.Time) TTFHWMedian
	asked    int // times NewUserTTFHW was asked for
}

func (f *fakeTTFHW) UserTTFHW(user string, now time.Time) (time.Duration, bool) {
	s, ok := f.signup[user]
	if !ok {
		return 0, false
	}
	end := now
	if t, ok := f.first2xx[user]; ok && !t.After(now) {
		end = t
	}
	return max(end.Sub(s), 0), true
}

func (f *fakeTTFHW) NewUserTTFHW(at []time.Time, _ time.Duration) []TTFHWMedian {
	out := make([]TTFHWMedian, len(at))
	for i, t := range at {
		out[i] = f.series(t)
		f.asked++
	}
	return out
}

func newTTFHWHarness(t *testing.T, src *fakeTTFHW, rs ...Rule) *harness {
	t.Helper()
	h := &harness{t: t, store: detector.New(detector.Config{}), rec: &recorder{}}
	h.eng = NewEngine(h.store, Options{Notifier: h.rec})
	h.eng.SetTTFHW(src)
	if err := h.eng.SetRules(rs, t0); err != nil {
		t.Fatal(err)
	}
	return h
}

// slowStart is the customer-success example: a new user with more than 5 400s and a
// time to first hello world over 5 minutes.
func slowStart(cmp string) Rule {
	return Rule{Name: "slow start", Metric: MetricTTFHW, Filter: detector.Filter{Status: "400"}, GroupBy: []string{"user"},
		MinCalls: 6, Comparator: cmp, Threshold: f64(300), Notify: []string{"cs"}}
}

func TestTTFHWStaticFiresForTheRightUser(t *testing.T) {
	src := &fakeTTFHW{
		signup: map[string]time.Time{
			"slow":  t0.Add(-10 * time.Minute), // no success yet: 600 s so far
			"quick": t0.Add(-10 * time.Minute), // success after 60 s
			"few":   t0.Add(-10 * time.Minute), // slow, but only 5 400s
			"edge":  t0.Add(-10 * time.Minute), // success after exactly 300 s
			"fine":  t0.Add(-time.Hour),        // slow, but its calls are 200s
			// "stranger" is known nowhere: no time to first hello world, never judged.
		},
		first2xx: map[string]time.Time{
			"quick": t0.Add(-9 * time.Minute),
			"edge":  t0.Add(-5 * time.Minute),
		},
	}
	h := newTTFHWHarness(t, src, slowStart(">"))
	for _, u := range []string{"slow", "quick", "edge", "stranger"} {
		h.calls(t0, 6, detector.Call{Status: 400, User: u})
	}
	h.calls(t0, 5, detector.Call{Status: 400, User: "few"})
	h.calls(t0, 5, detector.Call{Status: 200, User: "few"}) // min_calls counts the 400s only
	h.calls(t0, 20, detector.Call{Status: 200, User: "fine"})
	h.eng.Evaluate(t0.Add(time.Millisecond))
	b := h.rec.take()
	if len(b) != 1 || len(b[0].Events) != 1 {
		t.Fatalf("batches %+v, want one event", b)
	}
	ev := b[0].Events[0]
	if ev.State != alert.Firing || ev.Group["user"] != "slow" || math.Abs(ev.Value-600) > 0.01 || ev.Metric != "ttfhw" ||
		ev.Threshold != "> 300" || !strings.Contains(ev.Summary, "ttfhw 600") || !strings.Contains(ev.Summary, " s in 5m") {
		t.Fatalf("event %+v", ev)
	}
	// A sixth 400 for "few" makes it judged, and it is slow: it fires too.
	h.calls(t0.Add(time.Second), 1, detector.Call{Status: 400, User: "few"})
	h.step(t0.Add(time.Second), "cs:slow-start:firing(user=few)")
	// The 400s leave the 5-minute window: both resolve.
	h.step(t0.Add(5*time.Minute+2*time.Second), "cs:slow-start:resolved(user=few) cs:slow-start:resolved(user=slow)")

	// At exactly 300 s, > does not hold and >= does.
	h2 := newTTFHWHarness(t, src, slowStart(">="))
	h2.calls(t0, 6, detector.Call{Status: 400, User: "edge"})
	h2.calls(t0, 6, detector.Call{Status: 400, User: "quick"})
	h2.step(t0, "cs:slow-start:firing(user=edge)")
}

func TestTTFHWStaticLifecycle(t *testing.T) {
	// "for" and hysteresis apply: the user's time so far grows until the first success.
	src := &fakeTTFHW{signup: map[string]time.Time{"u": t0.Add(-250 * time.Second)}, first2xx: map[string]time.Time{}}
	r := slowStart(">")
	r.MinCalls, r.For, r.Window = 1, Duration(30*time.Second), Duration(time.Hour)
	r.ResolveBelow = f64(200)
	h := newTTFHWHarness(t, src, r)
	h.calls(t0, 1, detector.Call{Status: 400, User: "u"})
	h.step(t0, "")                     // 250 s
	h.step(t0.Add(60*time.Second), "") // 310 s: pending
	h.step(t0.Add(90*time.Second), "cs:slow-start:firing(user=u)")
	src.first2xx["u"] = t0.Add(100 * time.Second) // hello world at 350 s: stays above 200
	h.step(t0.Add(120*time.Second), "")
	if got := h.eng.Instances(); len(got) != 1 || got[0].Value != 350 {
		t.Fatalf("instances %+v, want u firing at 350 s", got)
	}
}

func TestTTFHWNeedsASource(t *testing.T) {
	e := NewEngine(detector.New(detector.Config{}), Options{})
	err := e.SetRules([]Rule{slowStart(">")}, t0)
	var fe *FieldError
	if err == nil || !asFieldError(err, &fe) || fe.Field != "metric" {
		t.Fatalf("error %v, want one naming metric", err)
	}
}

func TestTTFHWValidation(t *testing.T) {
	for _, tc := range []struct {
		json, field string
	}{
		{`{"name": "x", "metric": "ttfhw", "threshold": 300}`, "group_by"},
		{`{"name": "x", "metric": "ttfhw", "threshold": 300, "group_by": ["company"]}`, "group_by"},
		{`{"name": "x", "metric": "ttfhw", "threshold": 300, "group_by": ["user", "endpoint"]}`, "group_by"},
		{`{"name": "x", "metric": "ttfhw", "group_by": ["user"]}`, "threshold"},
		{`{"name": "x", "metric": "ttfhw", "threshold": 300, "group_by": ["user"], "min_calls": -1}`, "min_calls"},
		{`{"name": "x", "metric": "ttfhw", "threshold": 300, "group_by": ["user"], "compare": "7d"}`, "compare"},
		{`{"name": "x", "type": "anomaly", "metric": "ttfhw", "filter": {"status": "400"}}`, "filter"},
		{`{"name": "x", "type": "anomaly", "metric": "ttfhw", "group_by": ["user"]}`, "group_by"},
		{`{"name": "x", "type": "anomaly", "metric": "ttfhw", "threshold": 300}`, "threshold"},
		{`{"name": "x", "type": "anomaly", "metric": "ttfhw", "min_calls": -2}`, "min_calls"},
		{`{"name": "x", "type": "anomaly", "metric": "ttfhw", "window": "7d"}`, "window"},
	} {
		_, err := DecodeRule([]byte(tc.json))
		var fe *FieldError
		if err == nil || !asFieldError(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: error %v, want one naming %q", tc.json, err, tc.field)
		}
	}
	for _, ok := range []string{
		`{"name": "slow start", "metric": "ttfhw", "filter": {"status": "400"}, "group_by": ["user"], "min_calls": 6, "comparator": ">", "threshold": 300}`,
		`{"name": "slow week", "type": "anomaly", "metric": "ttfhw", "direction": "up"}`,
	} {
		if _, err := DecodeRule([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestTTFHWAnomalyFiresUpOnAJump(t *testing.T) {
	// The median of this week's new users hovers around two minutes with a daily swing,
	// then jumps to fifteen.
	rng := uint64(7)
	jump := t0.Add(time.Minute)
	src := &fakeTTFHW{series: func(at time.Time) TTFHWMedian {
		rng = rng*6364136223846793005 + 1442695040888963407
		noise := float64(rng>>40)/float64(1<<24)*20 - 10
		v := 120 + 15*math.Sin(float64(at.Hour())/24*2*math.Pi) + noise
		if at.After(jump) {
			v = 900
		}
		return TTFHWMedian{Median: time.Duration(v * float64(time.Second)), Users: 40}
	}}
	h := newTTFHWHarness(t, src, Rule{Name: "slow week", Type: TypeAnomaly, Metric: MetricTTFHW, Direction: "up", Notify: []string{"cs"}})
	// The first evaluation learns the last TTFHWBackfill of minutes, quietly.
	h.step(t0, "")
	if want := int(TTFHWBackfill / time.Minute); src.asked != want {
		t.Fatalf("backfill asked for %d minutes, want %d", src.asked, want)
	}
	var fired *alert.Event
	for m := 1; m <= 5 && fired == nil; m++ {
		h.eng.Evaluate(t0.Add(time.Duration(m)*time.Minute + time.Second))
		for _, b := range h.rec.take() {
			for i := range b.Events {
				fired = &b.Events[i]
			}
		}
	}
	if fired == nil {
		t.Fatal("no event within 5 minutes of the jump")
	}
	if fired.Type != alert.TypeAnomaly || fired.State != alert.Firing || fired.Direction != "up" || fired.Metric != "ttfhw" ||
		fired.Value != 900 || fired.Expected == nil || *fired.Expected > 200 || !strings.Contains(fired.Summary, "median ttfhw") {
		t.Fatalf("event %+v", fired)
	}
}

func TestTTFHWAnomalySkipsMinutesWithoutNewUsers(t *testing.T) {
	// Too few new users (min_calls) is no data: a jump then is not learned or alerted.
	src := &fakeTTFHW{series: func(at time.Time) TTFHWMedian {
		if at.After(t0) {
			return TTFHWMedian{Median: time.Hour, Users: 2}
		}
		return TTFHWMedian{Median: 2 * time.Minute, Users: 30}
	}}
	h := newTTFHWHarness(t, src, Rule{Name: "slow week", Type: TypeAnomaly, Metric: MetricTTFHW, Direction: "up", MinCalls: 3, Notify: []string{"cs"}})
	for m := 0; m <= 10; m++ {
		h.step(t0.Add(time.Duration(m)*time.Minute+time.Second), "")
	}
}
