package caddyplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/vigilgw/vigil/detector/anomaly"
)

func init() {
	// Tables show times in UTC in these tests.
	displayLoc = time.UTC
}

// runVigil runs "caddy vigil ARGS..." in process, as caddycmd builds it from the
// registration, with stdin; it returns stdout and the error the command returned (non-nil
// means a non-zero exit).
func runVigil(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	def := vigilCommand()
	vigil := &cobra.Command{Use: def.Name + " " + def.Usage, Short: def.Short, Long: def.Long}
	def.CobraFunc(vigil)
	root := &cobra.Command{Use: "caddy", SilenceUsage: true}
	root.AddCommand(vigil)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"vigil"}, args...))
	err := root.Execute()
	return out.String(), err
}

// fakeAPI stands in for Vigil's admin API: it gives one canned answer and records the
// requests.
type fakeAPI struct {
	srv    *httptest.Server
	status int
	body   string

	mu   sync.Mutex
	reqs []apiRequest
}

type apiRequest struct {
	Method, URI, Path, Query, Body, ContentType, Origin string
}

func newFakeAPI(t *testing.T, status int, body string) *fakeAPI {
	f := &fakeAPI{status: status, body: body}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, apiRequest{
			Method: r.Method, URI: r.RequestURI, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(b),
			ContentType: r.Header.Get("Content-Type"), Origin: r.Header.Get("Origin"),
		})
		f.mu.Unlock()
		if f.body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(f.status)
		_, _ = io.WriteString(w, f.body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) addr() string { return f.srv.Listener.Addr().String() }

// only returns the one request the command made.
func (f *fakeAPI) only(t *testing.T) apiRequest {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) != 1 {
		t.Fatalf("the command made %d requests, want 1: %+v", len(f.reqs), f.reqs)
	}
	return f.reqs[0]
}

func checkRequest(t *testing.T, got apiRequest, method, uri string) {
	t.Helper()
	if got.Method != method || got.URI != uri {
		t.Errorf("request %s %s, want %s %s", got.Method, got.URI, method, uri)
	}
}

var cellSep = regexp.MustCompile(`\S( \S|[^ ])*`)

// tableCells splits a table into its cells (separated by two spaces or more), checking
// that every cell starts at the column of its header.
func tableCells(t *testing.T, table string) [][]string {
	t.Helper()
	var rows [][]string
	var starts []int
	for i, line := range strings.Split(strings.TrimRight(table, "\n"), "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("line %d has trailing spaces: %q", i+1, line)
		}
		locs := cellSep.FindAllStringIndex(line, -1)
		row := make([]string, len(locs))
		for j, l := range locs {
			row[j] = line[l[0]:l[1]]
			if i == 0 {
				starts = append(starts, l[0])
			} else if j < len(starts) && l[0] != starts[j] {
				t.Errorf("line %d: cell %q starts at %d, its column at %d:\n%s", i+1, row[j], l[0], starts[j], table)
			}
		}
		rows = append(rows, row)
	}
	return rows
}

func checkTable(t *testing.T, out string, want [][]string) {
	t.Helper()
	got := tableCells(t, out)
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("table:\n%s\ncells %s\nwant  %s", out, gj, wj)
	}
}

// checkJSON checks that out is body, indented.
func checkJSON(t *testing.T, out, body string) {
	t.Helper()
	var want bytes.Buffer
	if err := json.Indent(&want, []byte(body), "", "  "); err != nil {
		t.Fatal(err)
	}
	if out != want.String()+"\n" {
		t.Errorf("--json printed\n%s\nwant\n%s", out, want.String())
	}
}

// checkListCommand runs a listing command against an API answering body: once for its
// table (want), once with --json.
func checkListCommand(t *testing.T, command, uri, body string, want [][]string) {
	t.Helper()
	api := newFakeAPI(t, http.StatusOK, body)
	out, err := runVigil(t, "", command, "--address", api.addr())
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, api.only(t), http.MethodGet, uri)
	checkTable(t, out, want)

	api = newFakeAPI(t, http.StatusOK, body)
	out, err = runVigil(t, "", command, "--json", "--address", api.addr())
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, api.only(t), http.MethodGet, uri)
	checkJSON(t, out, body)
}

const alertsJSON = `[
 {"id": "401-storm", "name": "401 storm", "enabled": true, "type": "static", "metric": "count",
  "filter": {"endpoint": "/users/*", "status": "401"}, "group_by": ["user"], "window": "15m",
  "comparator": ">", "threshold": 20, "notify": ["ops-slack"], "source": "config", "firing": 2},
 {"id": "errors", "name": "Error rate", "enabled": false, "type": "static", "metric": "error_rate",
  "window": "5m", "for": "2m", "comparator": ">=", "threshold": 5, "source": "api", "firing": 0},
 {"id": "slow", "name": "Slow", "metric": "latency_p99", "window": 300, "threshold": 1500.5,
  "source": "api", "firing": 0},
 {"id": "traffic-drop", "name": "Traffic drop", "type": "anomaly", "metric": "count",
  "sensitivity": "severe", "direction": "down", "group_by": ["company"], "source": "api", "firing": 1},
 {"id": "partner-silent", "name": "Partner silent", "type": "static", "metric": "absent", "for": 1800,
  "source": "config", "firing": 0},
 {"id": "stuck", "name": "Stuck integrations", "type": "cohort", "entity": "user",
  "behavior": {"metric": "count", "filter": {"status": "400,404,405"}, "window": 604800, "at_least": 1000},
  "source": "config", "firing": 0}
]`

func TestCommandAlerts(t *testing.T) {
	checkListCommand(t, "alerts", "/vigil/alerts", alertsJSON, [][]string{
		{"ID", "NAME", "TYPE", "METRIC", "CONDITION", "FIRING", "SOURCE", "ENABLED"},
		{"401-storm", "401 storm", "static", "count", "> 20 over 15m", "2", "config", "yes"},
		{"errors", "Error rate", "static", "error_rate", ">= 5% over 5m for 2m", "0", "api", "no"},
		{"slow", "Slow", "static", "latency_p99", "> 1500.5ms over 5m", "0", "api", "yes"},
		{"traffic-drop", "Traffic drop", "anomaly", "count", "severe, down", "1", "api", "yes"},
		{"partner-silent", "Partner silent", "static", "absent", "absent for 30m", "0", "config", "yes"},
		{"stuck", "Stuck integrations", "cohort", "count", ">= 1000 over 7d", "0", "config", "yes"},
	})

	// Requests carry the Origin header Caddy's own commands send.
	api := newFakeAPI(t, http.StatusOK, "[]")
	if _, err := runVigil(t, "", "alerts", "--address", api.addr()); err != nil {
		t.Fatal(err)
	}
	if req := api.only(t); req.Origin != "http://"+api.addr() {
		t.Errorf("Origin %q, want http://%s", req.Origin, api.addr())
	}
}

const eventsJSON = `{"events": [
 {"id": "ev_2", "rule_id": "401-storm", "rule_name": "401 storm", "type": "alert", "state": "firing",
  "threshold": "> 20", "group": {"user": "u-42", "company": "acme"}, "value": 31, "expected": 20,
  "started_at": "2026-11-23T10:00:00Z", "resolved_at": null, "time": "2026-11-23T10:00:02Z",
  "summary": "31 x 401 in 15m for user u-42 (> 20)",
  "notifications": [{"channel": "ops-slack", "status": "delivered", "attempts": 1},
                    {"channel": "pd", "status": "retrying", "attempts": 2, "error": "HTTP 503"}],
  "samples": [{"time": "2026-11-23T10:00:02Z", "method": "GET", "path": "/users/42/orders",
               "status": 401, "latency_ms": 12, "user": "u-42", "request_id": "r1"}]},
 {"id": "ev_1", "rule_id": "traffic-drop", "rule_name": "Traffic drop", "type": "anomaly",
  "state": "resolved", "threshold": "severe", "group": {}, "value": 12.3456, "expected": 80,
  "started_at": "2026-11-23T09:00:00Z", "resolved_at": "2026-11-23T09:20:00Z",
  "time": "2026-11-23T09:20:00+00:00", "notifications": [], "samples": []}
], "total": 7, "offset": 0, "limit": 2}`

func TestCommandEvents(t *testing.T) {
	api := newFakeAPI(t, http.StatusOK, eventsJSON)
	out, err := runVigil(t, "", "events", "--address", api.addr(), "--since", "1h", "--state", "firing",
		"--rule", "401-storm", "--type", "alert,anomaly", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	req := api.only(t)
	checkRequest(t, req, http.MethodGet, "/vigil/events?from=-1h&limit=2&rule=401-storm&state=firing&type=alert%2Canomaly")
	table, footer, _ := strings.Cut(out, "\n\n")
	checkTable(t, table, [][]string{
		{"TIME", "STATE", "RULE", "GROUP", "VALUE", "THRESHOLD", "DELIVERY"},
		{"2026-11-23 10:00:02", "firing", "401-storm", "company=acme,user=u-42", "31", "> 20", "ops-slack:delivered pd:retrying"},
		{"2026-11-23 09:20:00", "resolved", "traffic-drop", "-", "12.35 (expected 80)", "severe", "-"},
	})
	if !strings.HasPrefix(footer, "2 of 7 events shown") {
		t.Errorf("footer %q, want it to say 2 of 7 events shown", footer)
	}

	// Defaults: no period (the API's), limit 50; days in --since.
	for _, tc := range []struct {
		args []string
		uri  string
	}{
		{[]string{"events"}, "/vigil/events?limit=50"},
		{[]string{"events", "--since", "7d"}, "/vigil/events?from=-7d&limit=50"},
		{[]string{"events", "--json", "--since", "-90m"}, "/vigil/events?from=-90m&limit=50"},
	} {
		api := newFakeAPI(t, http.StatusOK, eventsJSON)
		out, err := runVigil(t, "", append(tc.args, "--address", api.addr())...)
		if err != nil {
			t.Fatal(err)
		}
		checkRequest(t, api.only(t), http.MethodGet, tc.uri)
		if len(tc.args) > 1 && tc.args[1] == "--json" {
			checkJSON(t, out, eventsJSON)
		}
	}

	// Bad flags are refused before any request.
	for _, args := range [][]string{{"--since", "yesterday"}, {"--since", "0s"}, {"--limit", "0"}} {
		api := newFakeAPI(t, http.StatusOK, eventsJSON)
		_, err := runVigil(t, "", append([]string{"events", "--address", api.addr()}, args...)...)
		if err == nil || !strings.HasPrefix(err.Error(), "vigil: "+args[0]) {
			t.Errorf("events %v: error %v, want one about %s", args, err, args[0])
		}
		if len(api.reqs) != 0 {
			t.Errorf("events %v made a request", args)
		}
	}
}

func TestCommandBlock(t *testing.T) {
	entry := `{"kind": "cidr", "value": "10.0.0.0/8", "reason": "scanner", "expires": "2026-11-24T10:00:00Z",
	           "added": "2026-11-23T10:00:00Z", "source": "api"}`
	api := newFakeAPI(t, http.StatusCreated, entry)
	out, err := runVigil(t, "", "block", "cidr", "10.0.0.0/8", "--reason", "scanner", "--expires", "24h", "--address", api.addr())
	if err != nil {
		t.Fatal(err)
	}
	req := api.only(t)
	checkRequest(t, req, http.MethodPost, "/vigil/blocklist")
	if req.ContentType != "application/json" {
		t.Errorf("Content-Type %q", req.ContentType)
	}
	var body map[string]string
	if err := json.Unmarshal([]byte(req.Body), &body); err != nil {
		t.Fatalf("body %q: %v", req.Body, err)
	}
	if want := map[string]string{"kind": "cidr", "value": "10.0.0.0/8", "reason": "scanner", "expires": "24h"}; !equalMaps(body, want) {
		t.Errorf("body %v, want %v", body, want)
	}
	if want := "blocked cidr 10.0.0.0/8 until 2026-11-24 10:00:00 (scanner)\n"; out != want {
		t.Errorf("printed %q, want %q", out, want)
	}

	// Without options the body has only kind and value; --json prints the stored entry.
	api = newFakeAPI(t, http.StatusCreated, `{"kind": "user", "value": "u-1", "added": "2026-11-23T10:00:00Z", "source": "api"}`)
	out, err = runVigil(t, "", "block", "user", "u-1", "--json", "--address", api.addr())
	if err != nil {
		t.Fatal(err)
	}
	if req := api.only(t); req.Body != `{"kind":"user","value":"u-1"}` {
		t.Errorf("body %s", req.Body)
	}
	checkJSON(t, out, api.body)

	// A bad request: the API's error and field.
	api = newFakeAPI(t, http.StatusBadRequest, `{"error": "expires: \"soon\" is neither a duration (24h, 7d) nor an RFC 3339 time", "field": "expires"}`)
	out, err = runVigil(t, "", "block", "user", "u-1", "--expires", "soon", "--address", api.addr())
	checkError(t, out, err, `vigil: expires: "soon" is neither a duration (24h, 7d) nor an RFC 3339 time (field expires)`)

	if _, err := runVigil(t, "", "block", "user", "--address", api.addr()); err == nil {
		t.Error("block with one argument succeeded")
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// checkError checks that the command failed (a non-zero exit) with that message and
// printed nothing on stdout.
func checkError(t *testing.T, out string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded, printing %q; want error %q", out, want)
	}
	if err.Error() != want {
		t.Errorf("error\n%q\nwant\n%q", err.Error(), want)
	}
	if out != "" {
		t.Errorf("printed %q on stdout with the error", out)
	}
}

func TestCommandUnblock(t *testing.T) {
	// A CIDR value and an IPv6 one are one path segment each.
	for _, tc := range []struct{ kind, value, uri string }{
		{"cidr", "10.0.0.0/8", "/vigil/blocklist/cidr/10.0.0.0%2F8"},
		{"cidr", "2001:db8::/32", "/vigil/blocklist/cidr/2001:db8::%2F32"},
		{"user", "a b?c#d%", "/vigil/blocklist/user/a%20b%3Fc%23d%25"},
	} {
		api := newFakeAPI(t, http.StatusNoContent, "")
		out, err := runVigil(t, "", "unblock", tc.kind, tc.value, "--address", api.addr())
		if err != nil {
			t.Fatal(err)
		}
		req := api.only(t)
		checkRequest(t, req, http.MethodDelete, tc.uri)
		if req.Path != "/vigil/blocklist/"+tc.kind+"/"+tc.value {
			t.Errorf("the server reads the path %q", req.Path)
		}
		if want := "unblocked " + tc.kind + " " + tc.value + "\n"; out != want {
			t.Errorf("printed %q, want %q", out, want)
		}
	}

	api := newFakeAPI(t, http.StatusNoContent, "")
	out, err := runVigil(t, "", "unblock", "user", "u-1", "--json", "--address", api.addr())
	if err != nil || out != "" {
		t.Errorf("unblock --json: %q, %v; want nothing printed", out, err)
	}

	api = newFakeAPI(t, http.StatusConflict, `{"error": "user u-9 is blocked in the Caddyfile (a block line of a vigil directive): remove it there and reload", "field": "value"}`)
	out, err = runVigil(t, "", "unblock", "user", "u-9", "--address", api.addr())
	checkError(t, out, err, "vigil: user u-9 is blocked in the Caddyfile (a block line of a vigil directive): remove it there and reload (field value)")

	api = newFakeAPI(t, http.StatusNotFound, `{"error": "user u-8 is not on the run-time block list"}`)
	out, err = runVigil(t, "", "unblock", "user", "u-8", "--address", api.addr())
	checkError(t, out, err, "vigil: user u-8 is not on the run-time block list")
}

func TestCommandBlocklist(t *testing.T) {
	body := `[{"kind": "cidr", "value": "10.0.0.0/8", "reason": "scanner", "expires": "2026-11-24T10:00:00Z",
	           "added": "2026-11-23T10:00:00Z", "source": "api"},
	          {"kind": "user", "value": "u-777", "reason": "abuse\nagain\t!", "source": "config"}]`
	checkListCommand(t, "blocklist", "/vigil/blocklist", body, [][]string{
		{"KIND", "VALUE", "REASON", "EXPIRES", "ADDED", "SOURCE"},
		{"cidr", "10.0.0.0/8", "scanner", "2026-11-24 10:00:00", "2026-11-23 10:00:00", "api"},
		{"user", "u-777", "abuse again !", "never", "-", "config"},
	})
}

func TestCommandUpstreams(t *testing.T) {
	body := `[
 {"upstream": "api.partner.example:443", "windows": {
   "1m": {"calls": 20, "failures": 10, "failure_rate": 50,
          "by_kind": {"status": 6, "connect": 2, "timeout": 1, "tls": 1, "other": 0},
          "latency_ms": {"p50": 120, "p90": 900, "p99": 2500}},
   "5m": {"calls": 200, "failures": 25, "failure_rate": 12.5,
          "by_kind": {"status": 15, "connect": 5, "timeout": 3, "tls": 2, "other": 0},
          "latency_ms": {"p50": 80.4, "p90": 400, "p99": 1500}},
   "1h": {"calls": 4000, "failures": 40, "failure_rate": 1,
          "by_kind": {"status": 30, "connect": 5, "timeout": 3, "tls": 2, "other": 0},
          "latency_ms": {"p50": 60, "p90": 300, "p99": 900}}},
  "open_alerts": [{"rule_id": "partner-5xx", "rule_name": "Partner 5xx", "started_at": "2026-11-23T10:00:00Z"},
                  {"rule_id": "partner-slow", "rule_name": "", "started_at": "2026-11-23T10:01:00Z"}]},
 {"upstream": "mail-api", "windows": {
   "1m": {"calls": 0, "failures": 0, "failure_rate": 0, "by_kind": {}, "latency_ms": {}},
   "5m": {"calls": 0, "failures": 0, "failure_rate": 0, "by_kind": {}, "latency_ms": {}},
   "1h": {"calls": 3, "failures": 0, "failure_rate": 0, "by_kind": {}, "latency_ms": {"p50": 4.25, "p90": 8, "p99": 9}}},
  "open_alerts": []}
]`
	checkListCommand(t, "upstreams", "/vigil/upstreams", body, [][]string{
		{"UPSTREAM", "CALLS 5m", "FAIL% 1m/5m/1h", "5XX 5m", "CONNECT 5m", "TIMEOUT 5m", "TLS 5m", "P50/P99 5m", "OPEN ALERTS"},
		{"api.partner.example:443", "200", "50.0/12.5/1.0", "15", "5", "3", "2", "80ms/1.50s", "Partner 5xx, partner-slow"},
		{"mail-api", "0", "-/-/0.0", "0", "0", "0", "0", "-", "-"},
	})
}

func TestCommandTestChannel(t *testing.T) {
	ok := `{"channel": "ops slack", "status": "delivered", "attempts": 1, "time": "2026-11-23T10:00:00Z"}`
	api := newFakeAPI(t, http.StatusOK, ok)
	out, err := runVigil(t, "", "test-channel", "ops slack", "--address", api.addr())
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, api.only(t), http.MethodPost, "/vigil/channels/ops%20slack/test")
	if want := "ops slack: delivered (1 attempt)\n"; out != want {
		t.Errorf("printed %q, want %q", out, want)
	}

	api = newFakeAPI(t, http.StatusOK, ok)
	out, err = runVigil(t, "", "test-channel", "ops slack", "--json", "--address", api.addr())
	if err != nil {
		t.Fatal(err)
	}
	checkJSON(t, out, ok)

	// A failed delivery prints the outcome and exits non-zero, whether the API answers it
	// with 200 or with an error status.
	failed := `{"channel": "pd", "status": "failed", "attempts": 3, "error": "HTTP 500 from events.pagerduty.com", "time": "2026-11-23T10:00:00Z"}`
	for _, status := range []int{http.StatusOK, http.StatusBadGateway} {
		api = newFakeAPI(t, status, failed)
		out, err = runVigil(t, "", "test-channel", "pd", "--address", api.addr())
		if want := "pd: failed after 3 attempts: HTTP 500 from events.pagerduty.com\n"; out != want {
			t.Errorf("%d: printed %q, want %q", status, out, want)
		}
		if err == nil || err.Error() != "vigil: the test notification through pd was not delivered (failed)" {
			t.Errorf("%d: error %v", status, err)
		}
	}

	api = newFakeAPI(t, http.StatusNotFound, `{"error": "no channel named nope", "field": "name"}`)
	out, err = runVigil(t, "", "test-channel", "nope", "--address", api.addr())
	checkError(t, out, err, "vigil: no channel named nope (field name)")
}

func TestCommandAPIErrors(t *testing.T) {
	// An answer that is not Vigil's JSON error still names the status.
	api := newFakeAPI(t, http.StatusInternalServerError, "boom")
	out, err := runVigil(t, "", "alerts", "--address", api.addr())
	checkError(t, out, err, "vigil: the admin API answered 500 Internal Server Error: boom")

	api = newFakeAPI(t, http.StatusOK, `{"not": "a list"}`)
	_, err = runVigil(t, "", "alerts", "--address", api.addr())
	if err == nil || !strings.Contains(err.Error(), "answered 200 with a body that is not what was expected") {
		t.Errorf("error %v", err)
	}

	// Nothing listening: Caddy is not running there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	for _, args := range [][]string{{"alerts"}, {"events"}, {"block", "user", "u-1"}, {"unblock", "user", "u-1"},
		{"blocklist"}, {"upstreams"}, {"test-channel", "x"}} {
		out, err := runVigil(t, "", append(args, "--address", addr)...)
		checkError(t, out, err, "vigil: Caddy is not running at "+addr+" (connection refused): start it, or give its admin address with --address or its config with --config")
	}

	if _, err := runVigil(t, "", "alerts", "--address", "nonsense:1-5"); err == nil || !strings.Contains(err.Error(), "invalid admin address") {
		t.Errorf("error %v, want one about the admin address", err)
	}
}

func TestCommandAdminAddress(t *testing.T) {
	// The address comes from the admin block of --config when --address is not given.
	api := newFakeAPI(t, http.StatusOK, "[]")
	cfg := t.TempDir() + "/caddy.json"
	if err := os.WriteFile(cfg, []byte(`{"admin": {"listen": "`+api.addr()+`"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runVigil(t, "", "blocklist", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, api.only(t), http.MethodGet, "/vigil/blocklist")
	if want := "KIND  VALUE  REASON  EXPIRES  ADDED  SOURCE\n"; out != want {
		t.Errorf("printed %q, want %q", out, want)
	}

	// A unix socket, as Caddy writes it (with permission bits).
	sock := t.TempDir() + "/admin.sock"
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	api = newFakeAPI(t, http.StatusOK, "[]")
	srv := &http.Server{Handler: api.srv.Config.Handler}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	if _, err := runVigil(t, "", "upstreams", "--address", "unix/"+sock+"|0220"); err != nil {
		t.Fatal(err)
	}
	if req := api.only(t); req.URI != "/vigil/upstreams" || req.Origin != "" {
		t.Errorf("over the socket: %+v", req)
	}
	_, err = runVigil(t, "", "upstreams", "--address", "unix/"+sock+".gone")
	if err == nil || !strings.Contains(err.Error(), "Caddy is not running at unix/"+sock+".gone (no such socket)") {
		t.Errorf("error %v", err)
	}
}

func TestCommandUnknown(t *testing.T) {
	if _, err := runVigil(t, "", "frobnicate"); err == nil || !strings.Contains(err.Error(), `unknown command "frobnicate"`) {
		t.Errorf("error %v", err)
	}
	if out, err := runVigil(t, ""); err != nil || !strings.Contains(out, "test-channel") {
		t.Errorf("caddy vigil: %v, printed %q; want the help", err, out)
	}
}

const replayCSV = `timestamp,value
2014-04-01 00:00:00,10
2014-04-01 00:05:00,11
2014-04-01T00:10:00Z,9.5
`

func TestCommandReplay(t *testing.T) {
	out, err := runVigil(t, replayCSV, "replay")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 || lines[0] != "timestamp,value,anomaly_score,alert" {
		t.Fatalf("output:\n%s", out)
	}
	in := strings.Split(strings.TrimRight(replayCSV, "\n"), "\n")
	for i, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) != 4 || f[0]+","+f[1] != in[i+1] {
			t.Fatalf("row %d %q does not carry the input row %q", i+1, l, in[i+1])
		}
		if s, err := strconv.ParseFloat(f[2], 64); err != nil || s < 0 || s > 1 || (f[3] != "0" && f[3] != "1") {
			t.Errorf("row %d %q: score or alert out of range", i+1, l)
		}
	}

	// The defaults are latency (continuous values), moderate and both directions: the
	// zero ReplayOptions.
	var want bytes.Buffer
	if err := anomaly.Replay(strings.NewReader(replayCSV), &want, anomaly.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	explicit, err := runVigil(t, replayCSV, "replay", "--metric", "latency", "--sensitivity", "moderate", "--direction", "both")
	if err != nil || out != want.String() || explicit != out {
		t.Errorf("defaults differ from latency, moderate, both: %v", err)
	}
	if _, err := runVigil(t, replayCSV, "replay", "--metric", "count", "--sensitivity", "severe", "--direction", "down"); err != nil {
		t.Error(err)
	}

	// A bad row: the rows before it are written, the error names its line and column.
	bad := replayCSV + "2014-04-01 00:15:00,abc\n"
	out, err = runVigil(t, bad, "replay")
	if err == nil || err.Error() != `vigil: replay: line 5, column value: "abc" is not a number` {
		t.Errorf("error %v", err)
	}
	if got := strings.Count(out, "\n"); got != 4 {
		t.Errorf("wrote %d lines before the bad row, want 4:\n%s", got, out)
	}
	_, err = runVigil(t, "timestamp,value\nyesterday,1\n", "replay")
	if err == nil || !strings.Contains(err.Error(), "line 2, column timestamp") {
		t.Errorf("error %v", err)
	}

	for _, flag := range []string{"--metric", "--sensitivity", "--direction"} {
		out, err := runVigil(t, replayCSV, "replay", flag, "wrong")
		if err == nil || !strings.HasPrefix(err.Error(), "vigil: "+flag+": ") || out != "" {
			t.Errorf("replay %s wrong: %q, %v", flag, out, err)
		}
	}
}

// TestCommandExitCode runs the real caddycmd.Main in a child process (this test binary)
// and checks the exit status and stderr: a failure exits 1 with the message, success 0.
func TestCommandExitCode(t *testing.T) {
	bad := newFakeAPI(t, http.StatusNotFound, `{"error": "user u-8 is not on the run-time block list"}`)
	good := newFakeAPI(t, http.StatusOK, "[]")
	for _, tc := range []struct {
		args     string
		code     int
		stderr   string
		stdinCSV string
	}{
		{"vigil unblock user u-8 --address " + bad.addr(), 1, "vigil: user u-8 is not on the run-time block list", ""},
		{"vigil blocklist --address " + good.addr(), 0, "", ""},
		{"vigil replay", 1, "vigil: replay: line 2, column value", "timestamp,value\n2014-04-01 00:00:00,x\n"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCaddyMainHelper$")
		cmd.Env = append(os.Environ(), "VIGIL_CADDY_MAIN="+tc.args)
		cmd.Stdin = strings.NewReader(tc.stdinCSV)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("caddy %s: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}

// TestCaddyMainHelper is the child process of TestCommandExitCode.
func TestCaddyMainHelper(t *testing.T) {
	args := os.Getenv("VIGIL_CADDY_MAIN")
	if args == "" {
		t.Skip("the child process of TestCommandExitCode")
	}
	os.Args = append([]string{"caddy"}, strings.Fields(args)...)
	caddycmd.Main()
	os.Exit(0)
}
