package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// hookEvent is an event as the webhook channel delivers it.
type hookEvent struct {
	ID        string            `json:"id"`
	RuleID    string            `json:"rule_id"`
	State     string            `json:"state"`
	Repeat    bool              `json:"repeat"`
	Group     map[string]string `json:"group"`
	Value     float64           `json:"value"`
	Expected  *float64          `json:"expected"`
	Threshold string            `json:"threshold"`
	Incident  string            `json:"incident"`
	Samples   []struct {
		Path      string `json:"path"`
		Status    int    `json:"status"`
		User      string `json:"user"`
		RequestID string `json:"request_id"`
	} `json:"samples"`
	received time.Time
	batch    int // which POST carried it
}

// hook is a webhook receiver standing in for an alert channel.
type hook struct {
	srv     *httptest.Server
	mu      sync.Mutex
	events  []hookEvent
	batches int
}

func startHook(t *testing.T) *hook {
	h := &hook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p struct {
			Type   string      `json:"type"`
			Count  int         `json:"count"`
			Events []hookEvent `json:"events"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		now := time.Now()
		h.mu.Lock()
		h.batches++
		for _, ev := range p.Events {
			ev.received, ev.batch = now, h.batches
			h.events = append(h.events, ev)
		}
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// wait returns the first event the predicate accepts, failing after timeout.
func (h *hook) wait(t *testing.T, what string, timeout time.Duration, pred func(*hookEvent) bool) hookEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h.mu.Lock()
		for i := range h.events {
			if pred(&h.events[i]) {
				ev := h.events[i]
				h.mu.Unlock()
				return ev
			}
		}
		n := len(h.events)
		h.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no %s event within %s (%d events received: %+v)", what, timeout, n, h.all())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *hook) all() []hookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookEvent(nil), h.events...)
}

func (h *hook) count(pred func(*hookEvent) bool) int {
	n := 0
	for _, ev := range h.all() {
		if pred(&ev) {
			n++
		}
	}
	return n
}

func ruleState(rule, state string) func(*hookEvent) bool {
	return func(ev *hookEvent) bool { return ev.RuleID == rule && ev.State == state && !ev.Repeat }
}

const alertsCaddyfile = `{
	admin {{.Admin}}
	auto_https off
	storage file_system {{.Storage}}
	vigil {
		tick {{.Tick}}
		test_clock
		channel hook webhook {{.Hook}}
{{.Alerts}}
	}
}

http://127.0.0.1:{{.HTTP}} {
	vigil {
		identify user    {header.X-User-Id}
		identify company {header.X-Company-Id}
		endpoint /users/{id}/orders
		block user u-blocked
	}
	reverse_proxy {{.Upstream}}
}
`

// statusUpstream answers with the status in the X-Want-Status request header (200 when
// absent).
func statusUpstream(t *testing.T) *Upstream {
	return StartUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		code := 200
		fmt.Sscanf(r.Header.Get("X-Want-Status"), "%d", &code)
		w.WriteHeader(code)
	})
}

func startAlerting(t *testing.T, up *Upstream, h *hook, tick, alerts string) *Caddy {
	return StartCaddy(t, alertsCaddyfile, map[string]any{"Upstream": up.URL, "Hook": h.srv.URL, "Tick": tick, "Alerts": alerts})
}

func calls(t *testing.T, c *Caddy, n int, path string, hdr map[string]string) {
	t.Helper()
	for i := 0; i < n; i++ {
		c.Do(t, "GET", path, hdr)
	}
}

func TestAlert401Storm(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := startAlerting(t, up, h, "100ms", `
		alert "401 storm" {
			metric count
			status 401
			window 15m
			above  20
			notify hook
			playbook https://wiki.example.com/401
		}`)
	calls(t, c, 20, "/users/1", map[string]string{"X-Want-Status": "401", "X-User-Id": "u-42"})
	calls(t, c, 30, "/users/1", map[string]string{"X-User-Id": "u-42"}) // 200s do not count
	time.Sleep(300 * time.Millisecond)
	if n := len(h.all()); n != 0 {
		t.Fatalf("20 401s (not more than 20) raised %d events", n)
	}
	calls(t, c, 1, "/users/1", map[string]string{"X-Want-Status": "401", "X-User-Id": "u-42"})
	ev := h.wait(t, "firing", 5*time.Second, ruleState("401-storm", "firing"))
	if ev.Value != 21 || ev.Expected == nil || *ev.Expected != 20 || ev.Threshold != "> 20" {
		t.Fatalf("event %+v, want value 21 over > 20", ev)
	}
	if len(ev.Samples) == 0 || ev.Samples[0].Status != 401 || ev.Samples[0].Path != "/users/1" || ev.Samples[0].RequestID == "" {
		t.Fatalf("samples %+v, want the 401 calls with request ids", ev.Samples)
	}
	time.Sleep(500 * time.Millisecond)
	if n := h.count(ruleState("401-storm", "firing")); n != 1 {
		t.Fatalf("%d firing events, want exactly 1 (no throttle: no repeats)", n)
	}
}

func TestAlert404sGroupedByEndpoint(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := startAlerting(t, up, h, "100ms", `
		alert "404s after deploy" {
			metric   count
			status   404
			window   5m
			above    10
			group_by endpoint
			notify   hook
		}`)
	for i := 0; i < 11; i++ { // 11 404s on one known endpoint, whatever the id
		c.Do(t, "GET", fmt.Sprintf("/users/%d/orders", 100+i), map[string]string{"X-Want-Status": "404"})
	}
	calls(t, c, 5, "/other/thing", map[string]string{"X-Want-Status": "404"})
	ev := h.wait(t, "firing", 5*time.Second, ruleState("404s-after-deploy", "firing"))
	if ev.Group["endpoint"] != "/users/{id}/orders" || ev.Value != 11 {
		t.Fatalf("event %+v, want endpoint /users/{id}/orders with 11", ev)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(h.all()); n != 1 {
		t.Fatalf("%d events, want 1 (the other endpoint had only 5)", n)
	}
}

func TestAlertBlockedUserKeepsTrying(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := startAlerting(t, up, h, "100ms", `
		alert "blocked user knocking" {
			metric   count
			blocked
			window   1m
			above    0
			group_by user
			notify   hook
		}`)
	calls(t, c, 3, "/users/1", map[string]string{"X-User-Id": "u-blocked"})
	calls(t, c, 3, "/users/1", map[string]string{"X-User-Id": "u-fine"})
	ev := h.wait(t, "firing", 5*time.Second, ruleState("blocked-user-knocking", "firing"))
	if ev.Group["user"] != "u-blocked" || ev.Value != 3 {
		t.Fatalf("event %+v, want user u-blocked with 3 blocked calls", ev)
	}
	if n, _ := up.Seen("", ""); n != 3 {
		t.Fatalf("upstream saw %d calls, want only u-fine's 3", n)
	}
}

func TestAlertBigUser(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := startAlerting(t, up, h, "100ms", `
		alert "new big customer" {
			metric   count
			window   1h
			above    25
			group_by user
			throttle once
			notify   hook
		}`)
	calls(t, c, 26, "/users/1", map[string]string{"X-User-Id": "u-big"})
	calls(t, c, 10, "/users/1", map[string]string{"X-User-Id": "u-small"})
	ev := h.wait(t, "firing", 5*time.Second, ruleState("new-big-customer", "firing"))
	if ev.Group["user"] != "u-big" || ev.Value != 26 {
		t.Fatalf("event %+v", ev)
	}
}

func TestAlertCompanyUsageUpWeekOverWeek(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := startAlerting(t, up, h, "100ms", `
		alert "usage up 20% week over week" {
			metric   percent_change
			window   1h
			compare  7d
			above    20
			group_by company
			notify   hook
		}`)
	now := time.Now().UTC().Truncate(time.Second)
	setClock := func(at time.Time) {
		t.Helper()
		if code, body := c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": at.Format(time.RFC3339)}); code != 200 {
			t.Fatalf("clock: %d %s", code, body)
		}
	}
	// A week ago: both companies call 10 times.
	setClock(now.Add(-7 * 24 * time.Hour))
	calls(t, c, 10, "/users/1", map[string]string{"X-Company-Id": "acme"})
	calls(t, c, 10, "/users/1", map[string]string{"X-Company-Id": "globex"})
	// Now: acme 13 (+30%), globex 11 (+10%).
	setClock(now)
	calls(t, c, 13, "/users/1", map[string]string{"X-Company-Id": "acme"})
	calls(t, c, 11, "/users/1", map[string]string{"X-Company-Id": "globex"})
	ev := h.wait(t, "firing", 5*time.Second, ruleState("usage-up-20-week-over-week", "firing"))
	if ev.Group["company"] != "acme" || ev.Value != 30 {
		t.Fatalf("event %+v, want acme +30%%", ev)
	}
	time.Sleep(300 * time.Millisecond)
	for _, e := range h.all() {
		if e.Group["company"] == "globex" {
			t.Fatalf("globex (+10%%) fired: %+v", e)
		}
	}
}

func TestAlertUpstreamErrorRateFiresAndResolves(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := startAlerting(t, up, h, "100ms", fmt.Sprintf(`
		alert "upstream 5xx" {
			metric    error_rate
			upstream  %s
			window    5m
			above     5
			min_calls 100
			notify    hook
		}`, up.URL))
	now := time.Now().UTC().Truncate(time.Second)
	if code, body := c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": now.Format(time.RFC3339)}); code != 200 {
		t.Fatalf("clock: %d %s", code, body)
	}
	// 6 failures in 99 calls: over 5%, but fewer than 100 calls.
	calls(t, c, 93, "/users/1", nil)
	calls(t, c, 6, "/users/1", map[string]string{"X-Want-Status": "503"})
	time.Sleep(300 * time.Millisecond)
	if n := len(h.all()); n != 0 {
		t.Fatalf("fired on %d events with fewer than min_calls", n)
	}
	calls(t, c, 1, "/users/1", nil) // the 100th call
	h.wait(t, "firing", 5*time.Second, ruleState("upstream-5xx", "firing"))
	// Recovery: six minutes later only good calls are in the window.
	if code, body := c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": now.Add(6 * time.Minute).Format(time.RFC3339)}); code != 200 {
		t.Fatalf("clock: %d %s", code, body)
	}
	calls(t, c, 120, "/users/1", nil)
	res := h.wait(t, "resolved", 5*time.Second, ruleState("upstream-5xx", "resolved"))
	fired := h.wait(t, "firing", time.Second, ruleState("upstream-5xx", "firing"))
	if !(fired.batch < res.batch) {
		t.Fatalf("resolved arrived before firing: %+v", h.all())
	}
	if res.Value != 0 {
		t.Fatalf("resolved value %v, want 0%% errors", res.Value)
	}
}

// TestAlertLatencyWithinATick measures the time from the call that crosses a threshold
// to the event reaching the channel, with the default 1 s tick.
func TestAlertLatencyWithinATick(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := startAlerting(t, up, h, "1s", `
		alert "first error" {
			metric count
			status 5xx
			window 1m
			above  0
			notify hook
		}`)
	var worst time.Duration
	for i := 0; i < 3; i++ {
		if i > 0 {
			// Let the previous instance resolve: move the clock past the window.
			now := time.Now().UTC().Add(time.Duration(i) * 2 * time.Minute)
			c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": now.Format(time.RFC3339Nano)})
			deadline := time.Now().Add(5 * time.Second)
			for h.count(ruleState("first-error", "resolved")) < i {
				if time.Now().After(deadline) {
					t.Fatalf("instance %d did not resolve: %+v", i, h.all())
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		sent := time.Now()
		c.Do(t, "GET", "/users/1", map[string]string{"X-Want-Status": "500"})
		deadline := time.Now().Add(5 * time.Second)
		for h.count(ruleState("first-error", "firing")) < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("no firing event %d: %+v", i+1, h.all())
			}
			time.Sleep(5 * time.Millisecond)
		}
		var last hookEvent
		for _, e := range h.all() {
			if e.State == "firing" {
				last = e
			}
		}
		d := last.received.Sub(sent)
		t.Logf("call to event: %s", d)
		worst = max(worst, d)
	}
	t.Logf("worst time from the crossing call to the event at the webhook: %s (tick 1s; target < 1.1s)", worst)
	if worst > 3*time.Second {
		t.Fatalf("event took %s", worst)
	}
}

// TestAnomalyAlertOnErrorBurst records four hours of per-minute traffic through the
// gateway (the test clock stepping a minute at a time), then a burst of 5xx: the anomaly
// rule raises an event with direction up and the expected band.
func TestAnomalyAlertOnErrorBurst(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := startAlerting(t, up, h, "50ms", `
		alert "5xx anomaly" {
			anomaly moderate
			metric  count
			status  5xx
			notify  hook
		}`)
	start := time.Now().UTC().Truncate(time.Minute).Add(-4 * time.Hour)
	setClock := func(at time.Time) {
		t.Helper()
		if code, body := c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": at.Format(time.RFC3339)}); code != 200 {
			t.Fatalf("clock: %d %s", code, body)
		}
	}
	for m := 0; m < 4*60; m++ {
		setClock(start.Add(time.Duration(m)*time.Minute + 10*time.Second))
		calls(t, c, 2, "/users/1", nil)
		if m%5 == 0 {
			calls(t, c, 1, "/users/1", map[string]string{"X-Want-Status": "500"})
		}
	}
	burst := start.Add(4 * time.Hour)
	for m := 0; m < 3; m++ {
		setClock(burst.Add(time.Duration(m)*time.Minute + 10*time.Second))
		calls(t, c, 30, "/users/1", map[string]string{"X-Want-Status": "503"})
	}
	setClock(burst.Add(3*time.Minute + 10*time.Second))
	ev := h.wait(t, "anomaly", 10*time.Second, ruleState("5xx-anomaly", "firing"))
	var full struct {
		Events []struct {
			Type, Direction, Threshold string
			Band                       *[2]float64
			Expected                   *float64
			Value                      float64
		}
	}
	_, body := c.Admin(t, "GET", "/vigil/events?type=anomaly&state=firing&from="+start.Add(-time.Hour).Format(time.RFC3339), nil)
	if err := json.Unmarshal(body, &full); err != nil || len(full.Events) != 1 {
		t.Fatalf("anomaly events: %s", body)
	}
	e := full.Events[0]
	if e.Type != "anomaly" || e.Direction != "up" || e.Threshold != "moderate" || e.Band == nil || e.Expected == nil ||
		!(e.Value > e.Band[1]) || !(*e.Expected < 5) {
		t.Fatalf("anomaly event %s (webhook %+v)", body, ev)
	}
	t.Logf("anomaly: value %v, expected %v, band %v", e.Value, *e.Expected, *e.Band)
}
