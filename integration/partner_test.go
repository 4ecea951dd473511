package integration

import (
	"encoding/json"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

const partnerCaddyfile = `{
	admin {{.Admin}}
	auto_https off
	storage file_system {{.Storage}}
	vigil {
		tick 500ms
		test_clock
		channel hook webhook {{.Hook}}
		alert "email API success rate" {
			metric    success_rate
			upstream  email-api
			window    5m
			below     90
			min_calls 10
			notify    hook
		}
		alert "email API errors" {
			metric    count
			upstream  email-api
			status    5xx
			window    5m
			above     5
			notify    hook
		}
	}
}

http://127.0.0.1:{{.HTTP}} {
	vigil {
		upstream email-api
	}
	reverse_proxy {{.Partner}} {
		transport http {
			dial_timeout 300ms
			response_header_timeout 300ms
		}
	}
}
`

// TestPartnerOutage: a partner API that answers 500s, then hangs, then refuses
// connections, then recovers. The alerts fire as one incident, /vigil/upstreams tells the
// failure kinds apart, and the resolve follows the recovery.
func TestPartnerOutage(t *testing.T) {
	h := startHook(t)
	var mode atomic.Int32 // 0 ok, 1 error, 2 hang
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	partnerAddr := l.Addr().String()
	serve := func(l net.Listener) *http.Server {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch mode.Load() {
			case 1:
				w.WriteHeader(500)
			case 2:
				time.Sleep(time.Second)
			}
		})}
		go srv.Serve(l)
		return srv
	}
	srv := serve(l)
	t.Cleanup(func() { srv.Close() })
	c := StartCaddy(t, partnerCaddyfile, map[string]any{"Hook": h.srv.URL, "Partner": partnerAddr})
	now := time.Now().UTC().Truncate(time.Second)
	c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": now.Format(time.RFC3339)})

	calls(t, c, 40, "/send", nil) // healthy
	mode.Store(1)
	calls(t, c, 4, "/send", nil) // 500s
	mode.Store(2)
	calls(t, c, 2, "/send", nil) // hangs: 504 after the header timeout
	srv.Close()                  // down: connection refused
	calls(t, c, 3, "/send", nil)
	crossed := time.Now()
	fired := h.wait(t, "firing", 5*time.Second, ruleState("email-api-success-rate", "firing"))
	h.wait(t, "firing", 5*time.Second, ruleState("email-api-errors", "firing"))
	if d := fired.received.Sub(crossed); d > 1500*time.Millisecond {
		t.Errorf("fired %s after the failure rate crossed the threshold (tick 500ms: want within 2 ticks)", d)
	}
	var incident string
	batches := map[int]bool{}
	for _, ev := range h.all() {
		if ev.State != "firing" {
			continue
		}
		if ev.Incident == "" || (incident != "" && ev.Incident != incident) {
			t.Fatalf("firing events not folded into one incident: %+v", h.all())
		}
		incident = ev.Incident
		batches[ev.batch] = true
	}
	if len(batches) > 2 {
		t.Errorf("the incident took %d notifications, want 1 (or 2 if the rules crossed on different ticks)", len(batches))
	}

	// Failure kinds, told apart.
	_, body := c.Admin(t, "GET", "/vigil/upstreams", nil)
	var ups []struct {
		Upstream string
		Windows  map[string]struct {
			Calls, Failures uint64
			ByKind          map[string]uint64 `json:"by_kind"`
		}
		OpenAlerts []struct{ RuleID string } `json:"open_alerts"`
	}
	if err := json.Unmarshal(body, &ups); err != nil || len(ups) != 1 || ups[0].Upstream != "email-api" {
		t.Fatalf("upstreams: %s", body)
	}
	w := ups[0].Windows["5m"]
	if w.Calls != 49 || w.Failures != 9 || w.ByKind["status"] != 4 || w.ByKind["timeout"] != 2 || w.ByKind["connect"] != 3 || len(ups[0].OpenAlerts) != 2 {
		t.Fatalf("upstream health %s", body)
	}

	// Recovery: the partner is back; six minutes later only good calls are in the window.
	l2, err := net.Listen("tcp", partnerAddr)
	if err != nil {
		t.Fatal(err)
	}
	mode.Store(0)
	srv2 := serve(l2)
	t.Cleanup(func() { srv2.Close() })
	c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": now.Add(6 * time.Minute).Format(time.RFC3339)})
	calls(t, c, 20, "/send", nil)
	res := h.wait(t, "resolved", 5*time.Second, ruleState("email-api-success-rate", "resolved"))
	if res.Incident != incident {
		t.Fatalf("resolve in incident %q, want %q", res.Incident, incident)
	}
	h.wait(t, "resolved", 5*time.Second, ruleState("email-api-errors", "resolved"))
}
