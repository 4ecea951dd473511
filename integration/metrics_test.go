package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const metricsCaddyfile = `{
	admin {{.Admin}}
	auto_https off
	storage file_system {{.Storage}}
	vigil {
		tick 100ms
	}
}

http://127.0.0.1:{{.HTTP}} {
	vigil {
		identify user {header.X-User-Id}
		endpoint /users/{id}
		block user u-blocked
		rate_limit user 1000/s
	}
	reverse_proxy {{.Upstream}}
}

http://127.0.0.1:{{.Scrape}} {
	vigil_metrics
}
`

// needTool returns the path of a Debian tool, skipping the test when it is missing
// locally and failing it in CI, where .ci/run installs it.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI must have it: see .ci/run)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

func TestMetricsPassPromtoolAndPrometheus(t *testing.T) {
	promtool := needTool(t, "promtool")
	prometheus := needTool(t, "prometheus")
	up := StartUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Duration(len(r.URL.Path)%5) * time.Millisecond)
		if strings.HasSuffix(r.URL.Path, "/7") {
			w.WriteHeader(500)
		}
	})
	scrape := freePort(t)
	c := StartCaddy(t, metricsCaddyfile, map[string]any{"Upstream": up.URL, "Scrape": scrape})
	waitPort(t, scrape, 10*time.Second)

	const n = 60
	for i := 0; i < n; i++ {
		c.Do(t, "GET", fmt.Sprintf("/users/%d", i%10), map[string]string{"X-User-Id": "u-1"})
	}
	c.Do(t, "GET", "/users/1", map[string]string{"X-User-Id": "u-blocked"})

	// Both endpoints pass promtool.
	for name, u := range map[string]string{"admin": c.AdminURL("/vigil/metrics"), "vigil_metrics": fmt.Sprintf("http://127.0.0.1:%d/metrics", scrape)} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "# HELP vigil_requests_total") {
			t.Fatalf("%s: %d %s", name, resp.StatusCode, body)
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool check metrics on %s: %v\n%s", name, err, out)
		}
		for _, fam := range []string{"vigil_requests_total", "vigil_request_duration_seconds_bucket", "vigil_blocked_total", "vigil_rate_limited_total",
			"vigil_quota_exceeded_total", "vigil_alerts_firing", "vigil_notifications_total", "vigil_notification_queue_length",
			"vigil_tracked_series", "vigil_tracked_callers", "vigil_store_overflow_total"} {
			if !strings.Contains(string(body), "# TYPE "+fam) && !strings.Contains(string(body), "# TYPE "+strings.TrimSuffix(fam, "_bucket")) {
				t.Errorf("%s: no family %s", name, fam)
			}
		}
	}

	// A real Prometheus scrapes the vigil_metrics handler.
	dir := t.TempDir()
	promPort := freePort(t)
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n", scrape)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, prometheus, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort))
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	query := func(q string) (float64, bool) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s", promPort, url.QueryEscape(q)))
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || len(r.Data.Result) == 0 {
			return 0, false
		}
		s, _ := r.Data.Result[0].Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		return v, err == nil
	}
	deadline := time.Now().Add(40 * time.Second)
	var total float64
	for {
		v, ok := query(`sum(vigil_requests_total)`)
		if ok && v == n+1 {
			total = v
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sum(vigil_requests_total) = %v (ok %v), want %d\nprometheus:\n%s", v, ok, n+1, logs.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if v, ok := query(`sum(vigil_requests_total{class="5xx"})`); !ok || v != 6 {
		t.Errorf("5xx requests %v, want 6", v)
	}
	p99, ok := query(`histogram_quantile(0.99, sum by (le) (vigil_request_duration_seconds_bucket))`)
	if !ok || !(p99 > 0 && p99 < 0.5) {
		t.Fatalf("histogram_quantile(0.99) = %v (ok %v), want a latency between 0 and 0.5 s", p99, ok)
	}
	t.Logf("prometheus: sum(vigil_requests_total) = %v, p99 = %.4fs", total, p99)
}
