package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const gatewayCaddyfile = `{
	admin {{.Admin}}
	auto_https off
	storage file_system {{.Storage}}
	vigil {
		tick 100ms
		test_clock
	}
}

http://127.0.0.1:{{.HTTP}} {
	vigil {
		identify user    {header.X-User-Id}
		identify company {header.X-Company-Id}
		identify key     {header.X-Api-Key}
		endpoint /users/{id}/orders
		block user u-blocked
		block ip 192.0.2.0/24
		block key sk-stolen
		rate_limit user {{.UserRate}} burst {{.UserBurst}}
		quota company {{.Quota}}
	}
	reverse_proxy {{.Upstream}}
}
`

func gatewayVars(up *Upstream) map[string]any {
	return map[string]any{"Upstream": up.URL, "UserRate": "5/m", "UserBurst": 3, "Quota": "4/day"}
}

func TestBlockedCallsNeverReachUpstream(t *testing.T) {
	up := StartUpstream(t, nil)
	c := StartCaddy(t, gatewayCaddyfile, gatewayVars(up))

	for _, tc := range []struct {
		name    string
		headers map[string]string
	}{
		{"user", map[string]string{"X-User-Id": "u-blocked"}},
		{"key", map[string]string{"X-User-Id": "u-ok", "X-Api-Key": "sk-stolen"}},
	} {
		resp, body := c.Do(t, "GET", "/users/1", tc.headers)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s: status %d, want 403 (body %s)", tc.name, resp.StatusCode, body)
		}
		var got struct {
			Error     string `json:"error"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(body, &got); err != nil || got.Error == "" || got.RequestID == "" {
			t.Fatalf("%s: body %s: want {\"error\", \"request_id\"} (%v)", tc.name, body, err)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s: content type %q", tc.name, ct)
		}
	}
	if n, _ := up.Seen("", ""); n != 0 {
		t.Fatalf("the upstream saw %d requests from blocked callers", n)
	}
	// A caller who is not blocked passes.
	if resp, body := c.Do(t, "GET", "/users/1", map[string]string{"X-User-Id": "u-ok"}); resp.StatusCode != 200 {
		t.Fatalf("unblocked caller: status %d: %s", resp.StatusCode, body)
	}
	if n, _ := up.Seen("", ""); n != 1 {
		t.Fatalf("upstream saw %d requests, want 1", n)
	}
}

func TestBlocklistAdminAPI(t *testing.T) {
	up := StartUpstream(t, nil)
	c := StartCaddy(t, gatewayCaddyfile, gatewayVars(up))
	hdr := map[string]string{"X-User-Id": "u-777"}
	if resp, _ := c.Do(t, "GET", "/users/1", hdr); resp.StatusCode != 200 {
		t.Fatalf("before block: status %d", resp.StatusCode)
	}

	// Bad requests are refused with the field named, and change nothing.
	for _, tc := range []struct {
		body, field string
	}{
		{`{"kind": "planet", "value": "x"}`, "kind"},
		{`{"kind": "user"}`, "value"},
		{`{"kind": "ip", "value": "300.1.1.1"}`, "value"},
		{`{"kind": "user", "value": "u-1", "expires": "yesterday"}`, "expires"},
		{`{"kind": "user", "value": "u-1", "colour": "red"}`, "colour"},
		{`{"kind": 7, "value": "u-1"}`, "kind"},
		{`{"kind": "user", "value": "u-1"`, "body"},
	} {
		code, body := c.Admin(t, "POST", "/vigil/blocklist", tc.body)
		var e struct{ Error, Field string }
		_ = json.Unmarshal(body, &e)
		if code != 400 || e.Field != tc.field || e.Error == "" {
			t.Errorf("POST %s: %d %s, want 400 naming field %q", tc.body, code, body, tc.field)
		}
	}
	code, body := c.Admin(t, "GET", "/vigil/blocklist", nil)
	var entries []map[string]any
	if err := json.Unmarshal(body, &entries); code != 200 || err != nil {
		t.Fatalf("GET blocklist: %d %s", code, body)
	}
	for _, e := range entries {
		if e["source"] != "config" {
			t.Fatalf("a bad request added %v", e)
		}
	}
	configEntries := len(entries)

	// Block u-777 at run time: takes effect without a reload.
	code, body = c.Admin(t, "POST", "/vigil/blocklist", map[string]string{"kind": "user", "value": "u-777", "reason": "abuse", "expires": "24h"})
	if code != 201 {
		t.Fatalf("POST blocklist: %d %s", code, body)
	}
	if resp, _ := c.Do(t, "GET", "/users/1", hdr); resp.StatusCode != 403 {
		t.Fatalf("after block: status %d, want 403", resp.StatusCode)
	}
	code, body = c.Admin(t, "GET", "/vigil/blocklist", nil)
	_ = json.Unmarshal(body, &entries)
	if code != 200 || len(entries) != configEntries+1 {
		t.Fatalf("GET blocklist after POST: %d entries, want %d: %s", len(entries), configEntries+1, body)
	}
	// A raw API key is shown only as its key id.
	c.Admin(t, "POST", "/vigil/blocklist", map[string]string{"kind": "key", "value": "sk-live-secret"})
	_, body = c.Admin(t, "GET", "/vigil/blocklist", nil)
	if strings.Contains(string(body), "sk-live-secret") {
		t.Fatalf("the block list shows a raw API key: %s", body)
	}
	if resp, _ := c.Do(t, "GET", "/users/1", map[string]string{"X-User-Id": "u-1", "X-Api-Key": "sk-live-secret"}); resp.StatusCode != 403 {
		t.Fatalf("blocked key: status %d, want 403", resp.StatusCode)
	}

	// Unblock, and wrong methods, unknown entries and Caddyfile entries.
	if code, body := c.Admin(t, "DELETE", "/vigil/blocklist/user/u-777", nil); code != 204 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if resp, _ := c.Do(t, "GET", "/users/1", hdr); resp.StatusCode != 200 {
		t.Fatalf("after unblock: status %d, want 200", resp.StatusCode)
	}
	if code, _ := c.Admin(t, "DELETE", "/vigil/blocklist/user/u-777", nil); code != 404 {
		t.Fatalf("DELETE again: %d, want 404", code)
	}
	if code, body := c.Admin(t, "DELETE", "/vigil/blocklist/user/u-blocked", nil); code != 409 {
		t.Fatalf("DELETE of a Caddyfile entry: %d %s, want 409", code, body)
	}
	req, _ := http.NewRequest("PATCH", c.AdminURL("/vigil/blocklist"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || !strings.Contains(resp.Header.Get("Allow"), "POST") {
		t.Fatalf("PATCH: %d Allow %q, want 405 with Allow", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if code, _ := c.Admin(t, "GET", "/vigil/nothing-here", nil); code != 404 {
		t.Fatalf("unknown path: %d, want 404", code)
	}
	// A CIDR entry covers our loopback client.
	if code, body := c.Admin(t, "POST", "/vigil/blocklist", map[string]string{"kind": "cidr", "value": "127.0.0.0/8"}); code != 201 {
		t.Fatalf("POST cidr: %d %s", code, body)
	}
	if resp, _ := c.Do(t, "GET", "/users/1", map[string]string{"X-User-Id": "u-2"}); resp.StatusCode != 403 {
		t.Fatalf("blocked range: status %d, want 403", resp.StatusCode)
	}
	if code, body := c.Admin(t, "DELETE", "/vigil/blocklist/cidr/127.0.0.0/8", nil); code != 204 {
		t.Fatalf("DELETE cidr: %d %s", code, body)
	}
}

// parseSFList parses an RFC 9651 List of sf-string items with integer parameters,
// independently of the server's code: `"user";q=100;w=1, "ip";q=5`.
func parseSFList(t *testing.T, s string) map[string]map[string]int64 {
	t.Helper()
	out := map[string]map[string]int64{}
	i := 0
	skipSP := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
	}
	for {
		skipSP()
		if i >= len(s) || s[i] != '"' {
			t.Fatalf("sf list %q: want an sf-string at %d", s, i)
		}
		i++
		var name strings.Builder
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' {
				i++
			}
			name.WriteByte(s[i])
		}
		if i >= len(s) {
			t.Fatalf("sf list %q: unterminated string", s)
		}
		i++
		params := map[string]int64{}
		for i < len(s) && s[i] == ';' {
			i++
			j := i
			for i < len(s) && (s[i] >= 'a' && s[i] <= 'z' || s[i] == '-' || s[i] >= '0' && s[i] <= '9') {
				i++
			}
			key := s[j:i]
			if i >= len(s) || s[i] != '=' {
				t.Fatalf("sf list %q: parameter %q without a value", s, key)
			}
			i++
			j = i
			for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '-') {
				i++
			}
			v, err := strconv.ParseInt(s[j:i], 10, 64)
			if err != nil {
				t.Fatalf("sf list %q: parameter %s: %v", s, key, err)
			}
			params[key] = v
		}
		out[name.String()] = params
		skipSP()
		if i >= len(s) {
			return out
		}
		if s[i] != ',' {
			t.Fatalf("sf list %q: want ',' at %d", s, i)
		}
		i++
	}
}

func TestRateLimitHeadersAndRetryAfter(t *testing.T) {
	up := StartUpstream(t, nil)
	vars := gatewayVars(up)
	vars["Quota"] = "1000/day"
	c := StartCaddy(t, gatewayCaddyfile, vars)
	hdr := map[string]string{"X-User-Id": "u-rl", "X-Company-Id": "c-rl"}

	// Burst 3 at 5/m: three calls pass, each with RateLimit fields; the fourth is 429.
	for i := 0; i < 3; i++ {
		resp, body := c.Do(t, "GET", "/users/1/orders", hdr)
		if resp.StatusCode != 200 {
			t.Fatalf("call %d: status %d: %s", i+1, resp.StatusCode, body)
		}
		pol := parseSFList(t, resp.Header.Get("RateLimit-Policy"))
		if p := pol["user"]; p["q"] != 5 || p["w"] != 60 || p["vigil-burst"] != 3 {
			t.Fatalf("call %d: RateLimit-Policy %q", i+1, resp.Header.Get("RateLimit-Policy"))
		}
		if p := pol["company-day"]; p["q"] != 1000 || p["w"] != 86400 {
			t.Fatalf("call %d: RateLimit-Policy quota %q", i+1, resp.Header.Get("RateLimit-Policy"))
		}
		rl := parseSFList(t, resp.Header.Get("RateLimit"))
		if r := rl["user"]["r"]; r != int64(2-i) {
			t.Fatalf("call %d: RateLimit %q: r=%d, want %d", i+1, resp.Header.Get("RateLimit"), r, 2-i)
		}
		if r := rl["company-day"]["r"]; r != int64(999-i) {
			t.Fatalf("call %d: RateLimit quota r=%d, want %d", i+1, r, 999-i)
		}
	}
	resp, body := c.Do(t, "GET", "/users/1/orders", hdr)
	if resp.StatusCode != 429 {
		t.Fatalf("4th call: status %d, want 429", resp.StatusCode)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 12 {
		t.Fatalf("Retry-After %q: want 1..12 seconds (5/m refills a token every 12 s)", resp.Header.Get("Retry-After"))
	}
	rl := parseSFList(t, resp.Header.Get("RateLimit"))
	if rl["user"]["r"] != 0 || rl["user"]["t"] != int64(ra) {
		t.Fatalf("429 RateLimit %q with Retry-After %d", resp.Header.Get("RateLimit"), ra)
	}
	var problem struct {
		Error, RequestID, Type string
		Violated               []string `json:"violated-policies"`
	}
	if err := json.Unmarshal(body, &problem); err != nil || problem.Error == "" || len(problem.Violated) != 1 || problem.Violated[0] != "user" {
		t.Fatalf("429 body %s", body)
	}
	if n, _ := up.Seen("", ""); n != 3 {
		t.Fatalf("the upstream saw %d calls, want 3", n)
	}
	// The limited call did not count against the quota.
	code, qbody := c.Admin(t, "GET", "/vigil/quotas/company/c-rl", nil)
	var quotas []struct {
		Kind, Value, Period    string
		Limit, Used, Remaining int64
		ResetsAt               time.Time `json:"resets_at"`
	}
	if err := json.Unmarshal(qbody, &quotas); code != 200 || err != nil || len(quotas) != 1 {
		t.Fatalf("GET quotas: %d %s", code, qbody)
	}
	if q := quotas[0]; q.Used != 3 || q.Remaining != 997 || q.Limit != 1000 || q.Period != "day" || q.Kind != "company" || q.Value != "c-rl" {
		t.Fatalf("quota usage %+v, want 3 used of 1000", q)
	}
	// Another user is not limited by u-rl's bucket.
	if resp, _ := c.Do(t, "GET", "/users/1/orders", map[string]string{"X-User-Id": "u-other", "X-Company-Id": "c-other"}); resp.StatusCode != 200 {
		t.Fatalf("other user: status %d", resp.StatusCode)
	}
}

func TestQuotaResetsAtDayBoundary(t *testing.T) {
	up := StartUpstream(t, nil)
	c := StartCaddy(t, gatewayCaddyfile, gatewayVars(up))
	setClock := func(ts string) {
		t.Helper()
		if code, body := c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": ts}); code != 200 {
			t.Fatalf("setting the clock: %d %s", code, body)
		}
	}
	setClock("2026-11-24T23:59:50Z")
	// Four calls of the company's 4/day quota, from different users (their buckets are
	// separate); the fifth is refused until midnight UTC.
	for i := 0; i < 4; i++ {
		hdr := map[string]string{"X-User-Id": fmt.Sprintf("q-%d", i), "X-Company-Id": "c-quota"}
		if resp, body := c.Do(t, "GET", "/orders", hdr); resp.StatusCode != 200 {
			t.Fatalf("call %d: %d %s", i+1, resp.StatusCode, body)
		}
	}
	resp, _ := c.Do(t, "GET", "/orders", map[string]string{"X-User-Id": "q-9", "X-Company-Id": "c-quota"})
	if resp.StatusCode != 429 {
		t.Fatalf("5th call: status %d, want 429", resp.StatusCode)
	}
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if ra < 1 || ra > 11 {
		t.Fatalf("Retry-After %q, want the seconds until midnight (<= 10)", resp.Header.Get("Retry-After"))
	}
	_, body := c.Admin(t, "GET", "/vigil/quotas/company/c-quota", nil)
	if !strings.Contains(string(body), `"resets_at": "2026-11-25T00:00:00Z"`) || !strings.Contains(string(body), `"used": 4`) {
		t.Fatalf("quota before midnight: %s", body)
	}
	setClock("2026-11-25T00:00:01Z")
	if resp, body := c.Do(t, "GET", "/orders", map[string]string{"X-User-Id": "q-10", "X-Company-Id": "c-quota"}); resp.StatusCode != 200 {
		t.Fatalf("after midnight: status %d: %s", resp.StatusCode, body)
	}
	_, body = c.Admin(t, "GET", "/vigil/quotas/company/c-quota", nil)
	if !strings.Contains(string(body), `"used": 1`) || !strings.Contains(string(body), `"resets_at": "2026-11-26T00:00:00Z"`) {
		t.Fatalf("quota after midnight: %s", body)
	}
}

// TestReloadUnderLoadKeepsState reloads caddy while clients keep calling: no request
// fails, and the limiter and quota state from before the reload is still there.
func TestReloadUnderLoadKeepsState(t *testing.T) {
	up := StartUpstream(t, nil)
	vars := gatewayVars(up)
	vars["UserRate"], vars["UserBurst"], vars["Quota"] = "1/h", 2, "100000/day"
	c := StartCaddy(t, gatewayCaddyfile, vars)

	// u-limited spends its burst of 2 before the reload.
	for i := 0; i < 2; i++ {
		c.Do(t, "GET", "/orders", map[string]string{"X-User-Id": "u-limited", "X-Company-Id": "c-reload"})
	}
	changed := strings.Replace(gatewayCaddyfile, "endpoint /users/{id}/orders", "endpoint /users/{id}/orders /users/{id}/invoices", 1)
	calls, dropped := runReloadLoad(t, c, changed, gatewayCaddyfile)
	// Limiter state survived: u-limited is still out of tokens.
	if resp, _ := c.Do(t, "GET", "/orders", map[string]string{"X-User-Id": "u-limited", "X-Company-Id": "c-reload"}); resp.StatusCode != 429 {
		t.Fatalf("u-limited after reloads: status %d, want 429 (bucket lost)", resp.StatusCode)
	}
	// Quota state survived: the load's company usage is all there.
	_, body := c.Admin(t, "GET", "/vigil/quotas/company/c-load", nil)
	var q []struct{ Used int64 }
	// A dropped connection may or may not have been read before caddy closed it.
	if err := json.Unmarshal(body, &q); err != nil || len(q) != 1 || q[0].Used < calls-dropped || q[0].Used > calls {
		t.Fatalf("quota after reloads: %s, want used = %d (%d dropped)", body, calls, dropped)
	}
}

// runReloadLoad keeps 4 clients calling the gateway while caddy reloads with each of the
// Caddyfiles in turn, fails the test if any call is answered with an error, and returns
// how many calls were made and how many connections caddy dropped while swapping servers.
func runReloadLoad(t *testing.T, c *Caddy, caddyfiles ...string) (int64, int64) {
	t.Helper()
	var (
		stop     atomic.Bool
		failures atomic.Int64 // answers other than 200
		dropped  atomic.Int64 // connections closed by the server swap of the reload
		calls    atomic.Int64
		wg       sync.WaitGroup
		errs     = make(chan string, 10)
	)
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				req, _ := http.NewRequest("GET", c.URL("/users/"+strconv.Itoa(i)), nil)
				req.Header.Set("X-User-Id", fmt.Sprintf("load-%d-%d", w, i))
				req.Header.Set("X-Company-Id", "c-load")
				resp, err := cl.Do(req)
				calls.Add(1)
				if err != nil {
					if isConnDrop(err) {
						dropped.Add(1)
						continue
					}
					failures.Add(1)
					select {
					case errs <- err.Error():
					default:
					}
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
					select {
					case errs <- fmt.Sprintf("status %d", resp.StatusCode):
					default:
					}
				}
			}
		}(w)
	}
	time.Sleep(300 * time.Millisecond)
	for _, cf := range caddyfiles {
		if err := c.Reload(cf); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	tr.CloseIdleConnections()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d calls failed across the reloads, e.g. %s", failures.Load(), calls.Load(), <-errs)
	}
	t.Logf("%d calls across %d reloads; %d connections dropped by caddy's server swap", calls.Load(), len(caddyfiles), dropped.Load())
	if calls.Load() < 20 {
		t.Fatalf("only %d calls made during the reloads", calls.Load())
	}
	return calls.Load(), dropped.Load()
}

// isConnDrop reports whether a client error is a connection that caddy closed while it
// swapped its HTTP servers during a config reload, before the request was read. Plain
// caddy does this to a few connections accepted at that moment, with or without Vigil
// (TestReloadBaselinePlainCaddy measures it); Go's client retries such requests on
// reused connections by itself.
func isConnDrop(err error) bool {
	msg := err.Error()
	return strings.HasSuffix(msg, ": EOF") || strings.Contains(msg, "connection reset by peer")
}

// TestReloadBaselinePlainCaddy runs the reload load against plain caddy reverse_proxy, so
// that the dropped connections of the Vigil run can be compared with caddy's own.
func TestReloadBaselinePlainCaddy(t *testing.T) {
	plain := `{
	admin {{.Admin}}
	auto_https off
	storage file_system {{.Storage}}
}
http://127.0.0.1:{{.HTTP}} {
	reverse_proxy {{.Upstream}}
}
`
	up := StartUpstream(t, nil)
	c := StartCaddy(t, plain, map[string]any{"Upstream": up.URL})
	runReloadLoad(t, c, strings.Replace(plain, "reverse_proxy", "header X-Reloaded 1\n\treverse_proxy", 1), plain)
}
