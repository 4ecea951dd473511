package caddyplugin

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func TestHandlerCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name, input string
		want        Handler
		err         string // substring of the error; "" means success
	}{
		{
			name: "everything",
			input: `vigil {
				identify user    {http.request.header.X-User-Id}
				identify company {http.request.header.X-Company-Id}
				identify key     {http.request.header.X-Api-Key}
				endpoint /users/{id}/orders /orders/{id}
				endpoint /health
				block user u-123 u-456
				block ip 10.0.0.1 192.168.0.0/16
				rate_limit user 100/s burst 200
				rate_limit ip   1000/m name per-ip
				quota user 100000/month
				quota company 1000/day timezone Europe/Paris name c-day
				upstream partner-x
				scope api
			}`,
			want: Handler{
				Identify:   &Identify{User: "{http.request.header.X-User-Id}", Company: "{http.request.header.X-Company-Id}", Key: "{http.request.header.X-Api-Key}"},
				Endpoints:  []string{"/users/{id}/orders", "/orders/{id}", "/health"},
				Block:      []BlockRule{{"user", "u-123"}, {"user", "u-456"}, {"ip", "10.0.0.1"}, {"cidr", "192.168.0.0/16"}},
				RateLimits: []RateLimit{{Key: "user", Rate: "100/s", Burst: 200}, {Key: "ip", Rate: "1000/m", Name: "per-ip"}},
				Quotas:     []Quota{{Key: "user", Limit: "100000/month"}, {Key: "company", Limit: "1000/day", Timezone: "Europe/Paris", Name: "c-day"}},
				Upstream:   "partner-x",
				Scope:      "api",
			},
		},
		{name: "empty block", input: `vigil`, want: Handler{}},
		{name: "unknown subdirective", input: "vigil {\n\tratelimit user 1/s\n}", err: `unrecognized vigil subdirective "ratelimit", at Testfile:2`},
		{name: "bad identify kind", input: "vigil {\n identify person x\n}", err: `identify: unknown kind "person"`},
		{name: "identify twice", input: "vigil {\n identify user a\n identify user b\n}", err: "identify user given twice, at Testfile:3"},
		{name: "identify without value", input: "vigil {\n identify user\n}", err: "identify user: missing the value"},
		{name: "bad rate", input: "vigil {\n\n rate_limit user 100/fortnight\n}", err: "rate_limit user: "},
		{name: "bad rate line", input: "vigil {\n\n rate_limit user 100/fortnight\n}", err: "Testfile:3"},
		{name: "bad burst", input: "vigil {\n rate_limit user 10/s burst -3\n}", err: `burst: want a positive integer, got "-3"`},
		{name: "burst without value", input: "vigil {\n rate_limit user 10/s burst\n}", err: "burst needs a value"},
		{name: "rate limit kind", input: "vigil {\n rate_limit planet 10/s\n}", err: `unknown kind "planet"`},
		{name: "quota period", input: "vigil {\n quota user 10/week\n}", err: "quota user: "},
		{name: "quota on endpoint", input: "vigil {\n quota endpoint 10/day\n}", err: `quota: unknown kind "endpoint"`},
		{name: "quota timezone", input: "vigil {\n quota user 10/day timezone Mars/Olympus\n}", err: `timezone "Mars/Olympus"`},
		{name: "bad ip", input: "vigil {\n block ip 10.0.0.300\n}", err: "block ip: "},
		{name: "bad block kind", input: "vigil {\n block planet x\n}", err: "block: "},
		{name: "block without values", input: "vigil {\n block user\n}", err: "block user: no values"},
		{name: "bad template", input: "vigil {\n endpoint users/{id}\n}", err: "endpoint: "},
		{name: "upstream twice", input: "vigil {\n upstream a\n upstream b\n}", err: "upstream given twice"},
		{name: "argument on directive", input: "vigil extra", err: "wrong argument count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h, tc.want) {
				got, _ := json.Marshal(h)
				want, _ := json.Marshal(tc.want)
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestGlobalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name, input string
		want        App
		err         string
	}{
		{
			name:  "all options",
			input: "vigil {\n tick 2s\n max_series 500\n max_keys 9000\n recent_calls 100\n snapshot 30s\n test_clock\n}",
			want:  App{Tick: 2e9, MaxSeries: 500, MaxKeys: 9000, RecentCalls: 100, Snapshot: 30e9, TestClock: true},
		},
		{name: "bad tick", input: "vigil {\n tick soon\n}", err: `tick: invalid duration "soon"`},
		{name: "negative series", input: "vigil {\n max_series -1\n}", err: "max_series: want a positive integer"},
		{name: "twice", input: "vigil {\n tick 1s\n tick 2s\n}", err: "tick given twice, at Testfile:3"},
		{name: "unknown", input: "vigil {\n ticks 1s\n}", err: `unrecognized vigil option "ticks"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a App
			err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, tc.want) {
				t.Fatalf("got %+v, want %+v", a, tc.want)
			}
		})
	}
}

// TestAdaptRoundTrip adapts the example Caddyfile and checks that the vigil parts of the
// JSON decode strictly into the modules and encode back to the same JSON.
func TestAdaptRoundTrip(t *testing.T) {
	src, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	out, warnings, err := adapter.Adapt(src, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range warnings {
		t.Logf("warning: %s", w.Message)
	}
	var cfg struct {
		Apps struct {
			Vigil json.RawMessage `json:"vigil"`
			HTTP  struct {
				Servers map[string]struct {
					Routes []json.RawMessage `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Apps.Vigil) == 0 {
		t.Fatal("no apps.vigil in the adapted config")
	}
	roundTrip(t, cfg.Apps.Vigil, new(App))
	var handlers int
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if x["handler"] == "vigil" {
				handlers++
				b, _ := json.Marshal(x)
				roundTrip(t, b, new(Handler))
			}
			for _, y := range x {
				walk(y)
			}
		case []any:
			for _, y := range x {
				walk(y)
			}
		}
	}
	var all any
	_ = json.Unmarshal(out, &all)
	walk(all)
	if handlers != 1 {
		t.Fatalf("found %d vigil handlers in the adapted config, want 1", handlers)
	}
}

func roundTrip(t *testing.T, in []byte, v any) {
	t.Helper()
	var m map[string]any
	_ = json.Unmarshal(in, &m)
	delete(m, "handler")
	in, _ = json.Marshal(m)
	dec := json.NewDecoder(strings.NewReader(string(in)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s: %v", in, err)
	}
	out, _ := json.Marshal(v)
	var a, b any
	_ = json.Unmarshal(in, &a)
	_ = json.Unmarshal(out, &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("round trip changed the config:\n in  %s\n out %s", in, out)
	}
}

func TestDirectiveOrder(t *testing.T) {
	// vigil must run after authentication and before handle/route/reverse_proxy.
	src := ":8080 {\n reverse_proxy 127.0.0.1:9\n vigil\n forward_auth 127.0.0.1:8 {\n uri /auth\n }\n}"
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	fa, vg, rp := strings.Index(s, `"/auth"`), strings.Index(s, `"handler":"vigil"`), strings.Index(s, `"dial":"127.0.0.1:9"`)
	if fa < 0 || vg < 0 || rp < 0 || !(fa < vg && vg < rp) {
		t.Fatalf("order forward_auth %d, vigil %d, reverse_proxy %d in %s", fa, vg, rp, s)
	}
	_ = httpcaddyfile.App{}
}

func FuzzHandlerCaddyfile(f *testing.F) {
	f.Add("vigil {\n identify user {http.request.header.X-User}\n rate_limit user 10/s burst 5\n quota ip 3/day\n block cidr 10.0.0.0/8\n endpoint /a/{b}\n}")
	f.Add("vigil {\n rate_limit\n}")
	f.Add("vigil {\n quota user 1/month timezone\n}")
	f.Add("vigil {\n channel m email {\n smtp a:25\n from a@x\n to b@x\n }\n alert \"c\" {\n cohort user\n match {\n created_after -28d\n attributes.se x\n }\n behavior {\n status 400,404\n window 7d\n at_least 3\n }\n email_user m {\n template \"{{.User.Name}}\"\n subject hi\n bcc {user.attributes.se}\n }\n repeat 1d\n }\n}")
	f.Fuzz(func(t *testing.T, input string) {
		var h Handler
		_ = h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		var a App
		_ = a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	})
}

func TestAlertsAndChannelsCaddyfile(t *testing.T) {
	const good = `vigil {
	channel ops-slack slack https://hooks.slack.com/services/T0/B0/XXX
	channel oncall pagerduty {env.PD_ROUTING_KEY} {
		url https://events.eu.pagerduty.com/v2/enqueue
	}
	channel audit webhook https://hooks.example.com/vigil {
		secret {env.WEBHOOK_SECRET}
		timeout 5s
	}
	channel ops-mail email {
		smtp     smtp.example.com:587
		username alerts
		password {env.SMTP_PASSWORD}
		from     alerts@example.com
		to       ops@example.com dev@example.com
	}
	alert "401 storm" {
		metric    count
		status    401
		window    15m
		above     20
		notify    ops-slack audit
		throttle  1h
		playbook  https://wiki.example.com/401
	}
	alert "email API failing" {
		metric     success_rate
		upstream   mail.example.com:443
		window     5m
		below      90
		min_calls  20
		resolve_above 95
		notify     oncall
		severity   critical
	}
}`
	var a App
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(good)); err != nil {
		t.Fatal(err)
	}
	if len(a.Channels) != 4 || a.Channels[1].RoutingKey != "{env.PD_ROUTING_KEY}" || a.Channels[1].URL == "" ||
		a.Channels[2].Secret != "{env.WEBHOOK_SECRET}" || len(a.Channels[3].To) != 2 {
		t.Fatalf("channels %+v", a.Channels)
	}
	r := a.Alerts[0]
	if r.ID != "401-storm" || r.Comparator != ">" || *r.Threshold != 20 || r.Filter.Status != "401" || r.Throttle.Every.String() != "1h0m0s" || len(r.Notify) != 2 {
		t.Fatalf("alert %+v", r)
	}
	r = a.Alerts[1]
	if r.Comparator != "<" || *r.Threshold != 90 || *r.ResolveAbove != 95 || r.MinCalls != 20 || r.Severity != "critical" {
		t.Fatalf("alert %+v", r)
	}

	for _, tc := range []struct{ input, err string }{
		{"vigil {\n alert \"x\" {\n metric count\n above ten\n }\n}", `above: "ten" is not a number, at Testfile:4`},
		{"vigil {\n alert \"x\" {\n metric speed\n above 1\n }\n}", `alert "x": metric: "speed": want count, error_rate, success_rate, latency_avg, latency_p50, latency_p90, latency_p99, unique_users, percent_change, absent or ttfhw, at Testfile:3`},
		{"vigil {\n alert \"x\" {\n metric count\n }\n}", "threshold (above, below, at_least, at_most or equals): required"},
		{"vigil {\n alert \"x\" {\n metric count\n above 1\n notify nowhere\n }\n}", `no channel named "nowhere"`},
		{"vigil {\n alert \"x\" {\n metric count\n above 1\n window 3 days\n }\n}", `window: invalid duration "3"`},
		{"vigil {\n alert \"x\" {\n metric count\n above 1\n status 6xx\n }\n}", "status:"},
		{"vigil {\n alert \"x\" {\n metric count\n above 1\n colour red\n }\n}", `unrecognized option "colour"`},
		{"vigil {\n alert {\n }\n}", "missing the name"},
		{"vigil {\n channel x carrier-pigeon\n}", `type`},
		{"vigil {\n channel x webhook\n}", `url`},
		{"vigil {\n channel x email {\n smtp a:25\n }\n}", `from`},
		{"vigil {\n channel a slack https://x\n channel a slack https://y\n}", `channel "a" defined twice`},
	} {
		var a App
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v, want one containing %q", tc.input, err, tc.err)
		}
	}
}
