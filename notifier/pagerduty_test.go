package notifier

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/vigilgw/vigil/detector/alert"
)

const testRoutingKey = "0123456789abcdef0123456789abcdef"

// checkPagerDutyEvent checks a request body against the Events API v2 schema and returns it.
func checkPagerDutyEvent(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	if e["routing_key"] != testRoutingKey {
		t.Errorf("routing_key = %v", e["routing_key"])
	}
	action, _ := e["event_action"].(string)
	if !slices.Contains([]string{"trigger", "acknowledge", "resolve"}, action) {
		t.Errorf("event_action = %q", action)
	}
	if action == "acknowledge" {
		t.Error("Vigil must never acknowledge")
	}
	key, _ := e["dedup_key"].(string)
	if key == "" || len(key) > 255 {
		t.Errorf("dedup_key = %q: want 1 to 255 characters", key)
	}
	for k := range e {
		if !slices.Contains([]string{"routing_key", "event_action", "dedup_key", "client", "client_url", "payload", "links", "images"}, k) {
			t.Errorf("unknown top-level field %q", k)
		}
	}
	if action != "trigger" {
		return e
	}
	p, ok := e["payload"].(map[string]any)
	if !ok {
		t.Fatal("trigger without payload")
	}
	if s, _ := p["summary"].(string); s == "" || utf8.RuneCountInString(s) > 1024 {
		t.Errorf("payload.summary = %q: want 1 to 1024 characters", s)
	}
	if s, _ := p["source"].(string); s == "" {
		t.Error("payload.source is required")
	}
	if s, _ := p["severity"].(string); !slices.Contains([]string{"critical", "error", "warning", "info"}, s) {
		t.Errorf("payload.severity = %q", s)
	}
	if ts, ok := p["timestamp"].(string); ok {
		if _, err := time.Parse(time.RFC3339, ts); err != nil {
			t.Errorf("payload.timestamp %q: %v", ts, err)
		}
	}
	if cd, ok := p["custom_details"]; ok {
		if _, isObj := cd.(map[string]any); !isObj {
			t.Errorf("custom_details is %T, want an object", cd)
		}
	}
	if links, ok := e["links"].([]any); ok {
		for _, l := range links {
			if href, _ := l.(map[string]any)["href"].(string); href == "" {
				t.Errorf("link without href: %v", l)
			}
		}
	}
	return e
}

func TestPagerDutyEvents(t *testing.T) {
	noSeverity := firingEvent("ev_ns")
	noSeverity.Severity = ""
	other := firingEvent("ev_o")
	other.Group = map[string]string{"user": "u-43"}
	critical := firingEvent("ev_c")
	critical.Severity = alert.SeverityCritical
	incident := batchOf("pd", firingEvent("ev_1"), critical, resolvedEvent("ev_r"))
	incident.Incident = "inc-9"
	incidentOver := batchOf("pd", resolvedEvent("ev_1"), resolvedEvent("ev_2"))
	incidentOver.Incident = "inc-9"
	tests := []struct {
		name         string
		batch        alert.Batch
		wantActions  []string
		wantSeverity string // of the first trigger
		wantKeys     []string
	}{
		{name: "trigger", batch: batchOf("pd", firingEvent("ev_1")), wantActions: []string{"trigger"}, wantSeverity: "error",
			wantKeys: []string{pdDedupKey("401-storm", map[string]string{"user": "u-42"})}},
		{name: "resolve keeps the key", batch: batchOf("pd", resolvedEvent("ev_1")), wantActions: []string{"resolve"},
			wantKeys: []string{pdDedupKey("401-storm", map[string]string{"user": "u-42"})}},
		{name: "default severity", batch: batchOf("pd", noSeverity), wantActions: []string{"trigger"}, wantSeverity: "warning"},
		{name: "one request per member", batch: batchOf("pd", firingEvent("ev_1"), other, resolvedEvent("ev_2")),
			wantActions: []string{"trigger", "trigger", "resolve"}, wantSeverity: "error"},
		{name: "incident is one request", batch: incident, wantActions: []string{"trigger"}, wantSeverity: "critical",
			wantKeys: []string{"vigil/incident/inc-9"}},
		{name: "incident resolved", batch: incidentOver, wantActions: []string{"resolve"}, wantKeys: []string{"vigil/incident/inc-9"}},
		{name: "test notification", batch: TestBatch("pd", t0), wantActions: []string{"trigger"}, wantSeverity: "info",
			wantKeys: []string{"vigil/vigil-test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, status(http.StatusAccepted, `{"status":"success","message":"Event processed","dedup_key":"x"}`))
			got := sendThrough(t, rc, Config{Name: "pd", Type: TypePagerDuty, RoutingKey: testRoutingKey, URL: rc.URL + "/v2/enqueue"},
				Options{Source: "gw-1.example.com", ExternalURL: "http://gw-1:2019/vigil"}, tt.batch, len(tt.wantActions))
			for i, req := range got {
				if req.Path != "/v2/enqueue" || req.Header.Get("Content-Type") != "application/json" {
					t.Errorf("request %d: %s %s", i, req.Path, req.Header.Get("Content-Type"))
				}
				e := checkPagerDutyEvent(t, req.Body)
				if e["event_action"] != tt.wantActions[i] {
					t.Errorf("request %d: event_action %v, want %s", i, e["event_action"], tt.wantActions[i])
				}
				if i < len(tt.wantKeys) && e["dedup_key"] != tt.wantKeys[i] {
					t.Errorf("request %d: dedup_key %v, want %s", i, e["dedup_key"], tt.wantKeys[i])
				}
				if e["event_action"] == "trigger" && i == 0 {
					p := e["payload"].(map[string]any)
					if p["severity"] != tt.wantSeverity {
						t.Errorf("severity %v, want %s", p["severity"], tt.wantSeverity)
					}
					if p["source"] != "gw-1.example.com" {
						t.Errorf("source %v", p["source"])
					}
					if e["client"] != "Vigil" || !strings.HasPrefix(fmt.Sprint(e["client_url"]), "http://gw-1:2019/vigil/") {
						t.Errorf("client %v client_url %v", e["client"], e["client_url"])
					}
				}
			}
		})
	}
}

func TestPagerDutyDedupKey(t *testing.T) {
	g := map[string]string{"user": "u-42", "company": "acme"}
	same := map[string]string{"company": "acme", "user": "u-42"}
	tests := []struct {
		name     string
		a, b     string // keys compared
		wantSame bool
	}{
		{name: "stable across calls and map order", a: pdDedupKey("r", g), b: pdDedupKey("r", same), wantSame: true},
		{name: "group matters", a: pdDedupKey("r", g), b: pdDedupKey("r", map[string]string{"user": "u-43", "company": "acme"})},
		{name: "rule matters", a: pdDedupKey("r", g), b: pdDedupKey("s", g)},
		{name: "no separator ambiguity", a: pdDedupKey("r", map[string]string{"a": "b=c"}), b: pdDedupKey("r", map[string]string{"a=b": "c"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if (tt.a == tt.b) != tt.wantSame {
				t.Errorf("%q vs %q: same = %v, want %v", tt.a, tt.b, tt.a == tt.b, tt.wantSame)
			}
		})
	}
	if k := pdDedupKey(strings.Repeat("x", 400), g); len(k) > 255 {
		t.Errorf("a long rule id gives a %d-character key", len(k))
	}
	if k := pdIncidentKey(strings.Repeat("x", 400)); len(k) > 255 {
		t.Errorf("a long incident gives a %d-character key", len(k))
	}
}

func TestPagerDutyDefaultURL(t *testing.T) {
	ch := newTestChannel(t, Config{Name: "pd", Type: TypePagerDuty, RoutingKey: testRoutingKey}, Options{})
	if got := ch.(*PagerDuty).url.String(); got != DefaultPagerDutyURL {
		t.Errorf("url = %s, want %s", got, DefaultPagerDutyURL)
	}
}
