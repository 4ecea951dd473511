package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const restartCaddyfile = `{
	admin {{.Admin}}
	auto_https off
	storage file_system {{.Storage}}
	vigil {
		tick 100ms
		snapshot 500ms
		test_clock
		channel hook webhook {{.Hook}}
		alert "upstream errors" {
			metric count
			status 5xx
			window 10m
			above  2
			notify hook
		}
	}
}

http://127.0.0.1:{{.HTTP}} {
	vigil {
		identify user    {header.X-User-Id}
		identify company {header.X-Company-Id}
		quota company 100/day
	}
	reverse_proxy {{.Upstream}}
}
`

func quotaUsed(t *testing.T, c *Caddy, company string) int64 {
	t.Helper()
	_, body := c.Admin(t, "GET", "/vigil/quotas/company/"+company, nil)
	var q []struct{ Used int64 }
	if err := json.Unmarshal(body, &q); err != nil || len(q) != 1 {
		t.Fatalf("quota: %s", body)
	}
	return q[0].Used
}

func seriesSum(t *testing.T, c *Caddy, query string) float64 {
	t.Helper()
	_, body := c.Admin(t, "GET", "/vigil/series?"+query, nil)
	var s struct {
		Series []struct{ Points [][2]any }
	}
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("series: %s", body)
	}
	var sum float64
	for _, g := range s.Series {
		for _, p := range g.Points {
			if v, ok := p[1].(float64); ok {
				sum += v
			}
		}
	}
	return sum
}

func firingCount(t *testing.T, c *Caddy, rule string) float64 {
	t.Helper()
	_, body := c.Admin(t, "GET", "/vigil/alerts/"+rule, nil)
	var r struct{ Firing float64 }
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("rule: %s", body)
	}
	return r.Firing
}

// TestRestartKeepsState stops caddy cleanly and with kill -9 and checks what comes back
// from the snapshot: history, quota counters, the run-time block list and alert state,
// with nothing notified twice; then a corrupt snapshot, which is set aside.
func TestRestartKeepsState(t *testing.T) {
	up, h := statusUpstream(t), startHook(t)
	c := StartCaddy(t, restartCaddyfile, map[string]any{"Upstream": up.URL, "Hook": h.srv.URL})
	now := time.Now().UTC().Truncate(time.Second)
	c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": now.Format(time.RFC3339)})

	calls(t, c, 3, "/users/1", map[string]string{"X-Company-Id": "c-1", "X-Want-Status": "503"})
	calls(t, c, 4, "/users/1", map[string]string{"X-Company-Id": "c-1"})
	h.wait(t, "firing", 5*time.Second, ruleState("upstream-errors", "firing"))
	if code, body := c.Admin(t, "POST", "/vigil/blocklist", map[string]string{"kind": "user", "value": "u-bad", "reason": "abuse"}); code != 201 {
		t.Fatalf("block: %d %s", code, body)
	}

	// Clean stop and start.
	c.Stop()
	c.start(restartCaddyfile)
	c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": now.Add(5 * time.Second).Format(time.RFC3339)})
	if used := quotaUsed(t, c, "c-1"); used != 7 {
		t.Fatalf("quota after a clean restart: %d used, want 7", used)
	}
	if got := seriesSum(t, c, "metric=count&status=5xx&from=-1h&step=1m"); got != 3 {
		t.Fatalf("history after a clean restart: %v 5xx calls, want 3", got)
	}
	if resp, _ := c.Do(t, "GET", "/users/1", map[string]string{"X-User-Id": "u-bad"}); resp.StatusCode != 403 {
		t.Fatalf("run-time block after a restart: status %d", resp.StatusCode)
	}
	_, body := c.Admin(t, "GET", "/vigil/events?from=-1h&rule=upstream-errors&state=firing", nil)
	if !strings.Contains(string(body), `"total": 1`) {
		t.Fatalf("event history after a restart: %s", body)
	}
	time.Sleep(500 * time.Millisecond)
	if f := firingCount(t, c, "upstream-errors"); f != 1 {
		t.Fatalf("after a restart the rule has %v firing instances, want 1", f)
	}
	if n := h.count(ruleState("upstream-errors", "firing")); n != 1 {
		t.Fatalf("%d firing notifications, want 1: the restart notified again", n)
	}

	// kill -9 after a snapshot: what the snapshot held is back.
	calls(t, c, 2, "/users/1", map[string]string{"X-Company-Id": "c-1"})
	time.Sleep(1500 * time.Millisecond) // at least one snapshot (every 500ms)
	c.Kill()
	c.start(restartCaddyfile)
	c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": now.Add(10 * time.Second).Format(time.RFC3339)})
	if used := quotaUsed(t, c, "c-1"); used != 9 {
		t.Fatalf("quota after kill -9: %d used, want 9", used)
	}
	time.Sleep(300 * time.Millisecond)
	if n := h.count(ruleState("upstream-errors", "firing")); n != 1 {
		t.Fatalf("%d firing notifications after kill -9, want 1", n)
	}
	// The errors are older than the window when the clock moves on: resolved, notified.
	c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": now.Add(11 * time.Minute).Format(time.RFC3339)})
	h.wait(t, "resolved", 5*time.Second, ruleState("upstream-errors", "resolved"))

	// A corrupt snapshot: caddy starts, logs it, keeps the file aside, and starts empty.
	c.Stop()
	var snap string
	_ = filepath.Walk(filepath.Join(c.dir, "storage", "vigil", "snapshot"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && !strings.Contains(p, ".corrupt") && !strings.HasSuffix(p, ".delta") && !strings.Contains(p, ".segments") {
			snap = p // the base: its segments and delta are read only with it
		}
		return nil
	})
	if snap == "" {
		t.Fatal("no snapshot file in storage")
	}
	data, _ := os.ReadFile(snap)
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(snap, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c.start(restartCaddyfile)
	if !strings.Contains(c.Logs(), "snapshot is unreadable") {
		t.Fatalf("no log line about the corrupt snapshot:\n%s", c.Logs())
	}
	matches, _ := filepath.Glob(snap + ".corrupt-*")
	if len(matches) != 1 {
		t.Fatalf("the corrupt snapshot was not kept aside: %v", matches)
	}
	if used := quotaUsed(t, c, "c-1"); used != 0 {
		t.Fatalf("quota after a corrupt snapshot: %d, want an empty start", used)
	}
}
