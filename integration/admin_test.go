package integration

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const adminCaddyfile = `{
	admin {{.Admin}}
	auto_https off
	storage file_system {{.Storage}}
	vigil {
		tick 100ms
		channel hook webhook {{.Hook}}
		alert "config 5xx" {
			metric count
			status 5xx
			window 1m
			above  2
			notify hook
		}
	}
}

http://127.0.0.1:{{.HTTP}} {
	vigil {
		identify user    {header.X-User-Id}
		identify company {header.X-Company-Id}
		endpoint /users/{id}
	}
	reverse_proxy {{.Upstream}}
}
`

type apiErr struct {
	Error string `json:"error"`
	Field string `json:"field"`
}

// expectError checks a JSON error answer: the status and the field it names.
func expectError(t *testing.T, what string, code int, body []byte, wantCode int, wantField string) {
	t.Helper()
	var e apiErr
	if err := json.Unmarshal(body, &e); err != nil || code != wantCode || e.Error == "" || e.Field != wantField {
		t.Errorf("%s: %d %s, want %d naming field %q", what, code, body, wantCode, wantField)
	}
}

func TestAdminRulesAPI(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	vars := map[string]any{"Upstream": up.URL, "Hook": h.srv.URL}
	c := StartCaddy(t, adminCaddyfile, vars)

	list := func(query string) []map[string]any {
		t.Helper()
		code, body := c.Admin(t, "GET", "/vigil/alerts"+query, nil)
		var rs []map[string]any
		if err := json.Unmarshal(body, &rs); code != 200 || err != nil {
			t.Fatalf("GET /vigil/alerts%s: %d %s", query, code, body)
		}
		return rs
	}
	if rs := list(""); len(rs) != 1 || rs[0]["id"] != "config-5xx" || rs[0]["source"] != "config" {
		t.Fatalf("rules %v", rs)
	}

	// Bad requests name the field and change nothing.
	for _, tc := range []struct{ body, field string }{
		{`{"name": "x", "metric": "count", "threshold": "abc"}`, "threshold"},
		{`{"name": "x", "metric": "count"}`, "threshold"},
		{`{"name": "x", "metric": "nope", "threshold": 1}`, "metric"},
		{`{"name": "x", "metric": "count", "threshold": 1, "window": "soon"}`, "window"},
		{`{"name": "x", "metric": "count", "threshold": 1, "colour": "red"}`, "colour"},
		{`{"name": "x", "metric": "count", "threshold": 1, "notify": ["nowhere"]}`, "notify[0]"},
		{`{"name": "x", "metric": "count", "threshold": 1, "filter": {"status": "7xx"}}`, "filter.status"},
		{`{"name": "x", "metric": "count", "threshold": 1,`, "body"},
		{``, "body"},
		{`[1, 2]`, "body"},
	} {
		code, body := c.Admin(t, "POST", "/vigil/alerts", tc.body)
		expectError(t, "POST "+tc.body, code, body, 400, tc.field)
	}
	code, body := c.Admin(t, "POST", "/vigil/alerts", `{"name": "config 5xx", "metric": "count", "threshold": 1}`)
	expectError(t, "POST with a config rule's id", code, body, 409, "id")
	if rs := list(""); len(rs) != 1 {
		t.Fatalf("failed requests changed the rules: %v", rs)
	}

	// Create, read, filter, replace, delete.
	code, body = c.Admin(t, "POST", "/vigil/alerts", map[string]any{
		"name": "API 404s", "metric": "count", "filter": map[string]any{"status": "404"}, "window": "1m",
		"comparator": ">", "threshold": 1, "notify": []string{"hook"}, "enabled": true,
	})
	if code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	code, body = c.Admin(t, "POST", "/vigil/alerts", map[string]any{"name": "API 404s", "metric": "count", "threshold": 1})
	expectError(t, "POST twice", code, body, 409, "id")
	code, body = c.Admin(t, "GET", "/vigil/alerts/api-404s", nil)
	if code != 200 || !strings.Contains(string(body), `"source": "api"`) {
		t.Fatalf("GET one: %d %s", code, body)
	}
	if code, _ := c.Admin(t, "GET", "/vigil/alerts/none", nil); code != 404 {
		t.Fatalf("GET unknown: %d", code)
	}
	if rs := list("?type=static&enabled=true"); len(rs) != 2 {
		t.Fatalf("filtered list: %v", rs)
	}
	if rs := list("?type=anomaly"); len(rs) != 0 {
		t.Fatalf("anomaly list: %v", rs)
	}
	code, body = c.Admin(t, "GET", "/vigil/alerts?type=weird", nil)
	expectError(t, "bad type filter", code, body, 400, "type")
	code, body = c.Admin(t, "GET", "/vigil/alerts?enabled=maybe", nil)
	expectError(t, "bad enabled filter", code, body, 400, "enabled")

	// The API rule is live: two 404s fire it.
	calls(t, c, 2, "/users/1", map[string]string{"X-Want-Status": "404"})
	h.wait(t, "firing", 5*time.Second, ruleState("api-404s", "firing"))

	code, body = c.Admin(t, "PUT", "/vigil/alerts/api-404s", map[string]any{"name": "API 404s", "metric": "count", "filter": map[string]any{"status": "404"}, "threshold": 100})
	if code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	code, body = c.Admin(t, "PUT", "/vigil/alerts/api-404s", map[string]any{"name": "API 404s", "metric": "count", "threshold": "x"})
	expectError(t, "bad PUT", code, body, 400, "threshold")
	code, body = c.Admin(t, "PUT", "/vigil/alerts/config-5xx", map[string]any{"name": "config 5xx", "metric": "count", "threshold": 1})
	expectError(t, "PUT a config rule", code, body, 409, "id")
	code, body = c.Admin(t, "GET", "/vigil/alerts/api-404s", nil)
	if code != 200 || !strings.Contains(string(body), `"threshold": 100`) {
		t.Fatalf("a bad PUT changed the rule: %s", body)
	}
	if code, body := c.Admin(t, "PATCH", "/vigil/alerts/api-404s", "{}"); code != 405 {
		t.Fatalf("PATCH: %d %s", code, body)
	}

	// API rules survive a restart.
	c.Stop()
	c.start(adminCaddyfile)
	if rs := list(""); len(rs) != 2 || rs[1]["id"] != "api-404s" || rs[1]["threshold"] != 100.0 {
		t.Fatalf("after restart: %v", rs)
	}
	if code, body := c.Admin(t, "DELETE", "/vigil/alerts/api-404s", nil); code != 204 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	code, body = c.Admin(t, "DELETE", "/vigil/alerts/config-5xx", nil)
	expectError(t, "DELETE a config rule", code, body, 409, "id")
	if code, _ := c.Admin(t, "DELETE", "/vigil/alerts/api-404s", nil); code != 404 {
		t.Fatalf("DELETE twice: %d", code)
	}
}

func TestAdminEventsSeriesCallsUpstreams(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := StartCaddy(t, adminCaddyfile, map[string]any{"Upstream": up.URL, "Hook": h.srv.URL})
	calls(t, c, 5, "/users/1", map[string]string{"X-User-Id": "u-42", "X-Want-Status": "503"})
	calls(t, c, 7, "/users/2", map[string]string{"X-User-Id": "u-7"})
	h.wait(t, "firing", 5*time.Second, ruleState("config-5xx", "firing"))

	// Events: newest first, filters, pagination, and errors.
	var page struct {
		Events []struct {
			ID, RuleID, State string
			Notifications     []struct{ Channel, Status string }
		} `json:"events"`
		Total, Offset, Limit int
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := c.Admin(t, "GET", "/vigil/events?from=-1h&to=now&type=alert&state=firing&rule=config-5xx", nil)
		if err := json.Unmarshal(body, &page); code != 200 || err != nil {
			t.Fatalf("events: %d %s", code, body)
		}
		if page.Total == 1 && len(page.Events[0].Notifications) == 1 && page.Events[0].Notifications[0].Status == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := c.Admin(t, "GET", "/vigil/events/"+page.Events[0].ID, nil); code != 200 || !strings.Contains(string(body), page.Events[0].ID) {
		t.Fatalf("event by id: %d %s", code, body)
	}
	for q, field := range map[string]string{"from=yesterday": "from", "to=-1x": "to", "state=sleeping": "state", "limit=-1": "limit",
		"limit=100000": "limit", "type=cohort,weird": "type", "colour=red": "colour", "from=now&to=-1h": "from"} {
		code, body := c.Admin(t, "GET", "/vigil/events?"+q, nil)
		expectError(t, "events?"+q, code, body, 400, field)
	}
	code, body := c.Admin(t, "GET", "/vigil/events?from=2020-01-01T00:00:00Z&limit=0", nil)
	if code != 200 {
		t.Fatalf("RFC 3339 from: %d %s", code, body)
	}

	// Series: counts per minute, grouped.
	var series struct {
		Metric string
		Series []struct {
			Group  map[string]string
			Points [][2]any
		}
	}
	code, body = c.Admin(t, "GET", "/vigil/series?metric=count&status=5xx&group_by=endpoint&from=-10m&step=1m", nil)
	if err := json.Unmarshal(body, &series); code != 200 || err != nil || len(series.Series) != 1 || series.Series[0].Group["endpoint"] != "/users/{id}" {
		t.Fatalf("series: %d %s", code, body)
	}
	var sum float64
	for _, p := range series.Series[0].Points {
		if v, ok := p[1].(float64); ok {
			sum += v
		}
	}
	if sum != 5 {
		t.Fatalf("series sums to %v, want 5: %s", sum, body)
	}
	for q, field := range map[string]string{"metric=speed": "metric", "step=0": "step", "group_by=planet": "group_by", "status=9xx": "status",
		"blocked=maybe": "blocked", "from=-1h&step=1s": "step"} {
		code, body := c.Admin(t, "GET", "/vigil/series?"+q, nil)
		expectError(t, "series?"+q, code, body, 400, field)
	}

	// Calls: the most recent, filtered.
	code, body = c.Admin(t, "GET", "/vigil/calls?user=u-42&status=5xx&limit=3", nil)
	var cl []map[string]any
	if err := json.Unmarshal(body, &cl); code != 200 || err != nil || len(cl) != 3 || cl[0]["status"] != 503.0 || cl[0]["path"] != "/users/1" {
		t.Fatalf("calls: %d %s", code, body)
	}

	// Upstreams: health with the open alert.
	code, body = c.Admin(t, "GET", "/vigil/upstreams", nil)
	var ups []struct {
		Upstream string
		Windows  map[string]struct {
			Calls, Failures uint64
			FailureRate     float64 `json:"failure_rate"`
		}
	}
	if err := json.Unmarshal(body, &ups); code != 200 || err != nil || len(ups) != 1 || ups[0].Upstream != up.URL {
		t.Fatalf("upstreams: %d %s", code, body)
	}
	if w := ups[0].Windows["5m"]; w.Calls != 12 || w.Failures != 5 {
		t.Fatalf("upstream 5m window %+v, want 12 calls, 5 failures", w)
	}

	// Test a channel.
	code, body = c.Admin(t, "POST", "/vigil/channels/hook/test", nil)
	if code != 200 || !strings.Contains(string(body), `"delivered"`) {
		t.Fatalf("test-channel: %d %s", code, body)
	}
	code, body = c.Admin(t, "POST", "/vigil/channels/none/test", nil)
	expectError(t, "test unknown channel", code, body, 404, "")
	h.wait(t, "test", 5*time.Second, func(ev *hookEvent) bool { return ev.RuleID == "vigil-test" || strings.Contains(ev.RuleID, "test") })
}

// TestCommandLine runs the caddy vigil commands against a running gateway.
func TestCommandLine(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := StartCaddy(t, adminCaddyfile, map[string]any{"Upstream": up.URL, "Hook": h.srv.URL})
	calls(t, c, 3, "/users/1", map[string]string{"X-Want-Status": "502"})
	h.wait(t, "firing", 5*time.Second, ruleState("config-5xx", "firing"))
	addr := fmt.Sprintf("127.0.0.1:%d", c.AdminPort)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(caddyBin, append(append([]string{"vigil"}, args...), "--address", addr)...)
		cmd.Env = c.env()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("caddy vigil %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := run("alerts"); !strings.Contains(out, "config-5xx") || !strings.Contains(out, "> 2 over 1m") {
		t.Fatalf("alerts:\n%s", out)
	}
	if out := run("events", "--since", "1h", "--state", "firing"); !strings.Contains(out, "config-5xx") {
		t.Fatalf("events:\n%s", out)
	}
	run("block", "user", "u-cli", "--reason", "test", "--expires", "1h")
	if resp, _ := c.Do(t, "GET", "/users/1", map[string]string{"X-User-Id": "u-cli"}); resp.StatusCode != 403 {
		t.Fatalf("blocked by the CLI: status %d", resp.StatusCode)
	}
	if out := run("blocklist", "--json"); !strings.Contains(out, "u-cli") {
		t.Fatalf("blocklist:\n%s", out)
	}
	run("unblock", "user", "u-cli")
	if out := run("upstreams"); !strings.Contains(out, up.URL) {
		t.Fatalf("upstreams:\n%s", out)
	}
	if out := run("test-channel", "hook"); !strings.Contains(out, "delivered") {
		t.Fatalf("test-channel:\n%s", out)
	}
	cmd := exec.Command(caddyBin, "vigil", "alerts", "--address", "127.0.0.1:1")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not running") {
		t.Fatalf("no caddy: err %v, output %s", err, out)
	}
}
