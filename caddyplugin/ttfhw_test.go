package caddyplugin

import (
	"log/slog"
	"testing"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/cohort"
	"github.com/vigilgw/vigil/detector/rules"
)

// TestTTFHWRulesWired checks that the gateway's engine gives the rules engine the
// registry's TTFHW: rules of metric ttfhw from the JSON config are accepted, and the
// static one fires for the slow user registered in the registry.
func TestTTFHWRulesWired(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	app := &App{}
	for _, js := range []string{
		`{"name": "slow start", "metric": "ttfhw", "filter": {"status": "400"}, "group_by": ["user"], "min_calls": 6, "comparator": ">", "threshold": 300}`,
		`{"name": "slow week", "type": "anomaly", "metric": "ttfhw", "direction": "up"}`,
	} {
		r, err := rules.DecodeRule([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		app.Alerts = append(app.Alerts, r)
	}
	e := newEngine(app, slog.New(slog.DiscardHandler))
	if err := e.setRules(app); err != nil {
		t.Fatal(err)
	}
	if err := e.registry.Upsert([]cohort.User{{ID: "slow", CreatedAt: now.Add(-time.Hour)}, {ID: "quick", CreatedAt: now.Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	e.store.Record(&detector.Call{Time: now.Add(-59 * time.Minute), Method: "GET", Endpoint: "/v1/orders", Status: 200, User: "quick"})
	for _, u := range []string{"slow", "quick"} {
		for i := 0; i < 6; i++ {
			e.store.Record(&detector.Call{Time: now.Add(-time.Minute), Method: "GET", Endpoint: "/v1/orders", Status: 400, User: u})
		}
	}
	e.store.Flush()
	e.rules.Evaluate(now)
	got := e.rules.Instances()
	if len(got) != 1 || got[0].RuleID != "slow-start" || got[0].Group["user"] != "slow" || got[0].Value != 3600 {
		t.Fatalf("instances %+v, want slow-start firing for user slow at 3600 s", got)
	}
}
