package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// blackHole accepts TCP connections and never answers, until the test ends.
func blackHole(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

const blackholeCaddyfile = `{
	admin {{.Admin}}
	auto_https off
	storage file_system {{.Storage}}
	vigil {
		tick 100ms
		channel hook webhook http://{{.Target}}/hook {
			timeout 500ms
			queue_size 2
		}
		channel chat slack http://{{.Target}}/slack {
			timeout 500ms
			queue_size 2
		}
		channel pager pagerduty 0123456789abcdef0123456789abcdef {
			url http://{{.Target}}/enqueue
			timeout 500ms
			queue_size 2
		}
		channel am alertmanager http://{{.Target}} {
			timeout 500ms
			queue_size 2
		}
		channel text sms {
			url http://{{.Target}}
			account AC123
			token secret-token
			from +15550001111
			to +15550002222
			timeout 500ms
			queue_size 2
		}
		channel mail email {
			smtp {{.SMTP}}
			from alerts@example.com
			to ops@example.com
			tls none
			timeout 500ms
			queue_size 2
		}
		{{.Alert}}
	}
}

http://127.0.0.1:{{.HTTP}} {
	vigil {
		identify user {header.X-User-Id}
	}
	reverse_proxy {{.Upstream}}
}
`

const everyCallAlert = `alert "every caller" {
			metric   count
			window   1s
			above    0
			group_by user
			notify   hook chat pager am text mail
		}`

var goroutineGroup = regexp.MustCompile(`(?m)^(\d+) @`)

// notifierGoroutines counts caddy's goroutines that run the notifier's code (delivery
// workers, retries, keep-alives), from the admin endpoint's goroutine profile.
func notifierGoroutines(t *testing.T, c *Caddy) (int, string) {
	t.Helper()
	resp, err := http.Get(c.AdminURL("/debug/pprof/goroutine?debug=1"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	n := 0
	for _, group := range strings.Split(string(body), "\n\n") {
		m := goroutineGroup.FindStringSubmatch(group)
		if m == nil || !strings.Contains(group, "vigil/notifier.") {
			continue
		}
		k, _ := strconv.Atoi(m[1])
		n += k
	}
	return n, string(body)
}

// load sends requests from 4 clients, each a new user, for d, and returns the rate and
// the failures.
func load(t *testing.T, c *Caddy, d time.Duration, prefix string) (float64, int64) {
	var n, failed atomic.Int64
	var wg sync.WaitGroup
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	stop := time.Now().Add(d)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				req, _ := http.NewRequest("GET", c.URL("/users/1"), nil)
				req.Header.Set("X-User-Id", fmt.Sprintf("%s-%d-%d", prefix, w, i))
				resp, err := cl.Do(req)
				n.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds(), failed.Load()
}

// TestBlackHoledChannelsDoNotSlowTheGateway sends load through the gateway while an alert
// fires for every caller into six channels whose receivers never answer: no request
// fails, the throughput stays near that of a run with healthy receivers, the queues stay
// within their bound, and the delivery goroutines go away when the channels do.
func TestBlackHoledChannelsDoNotSlowTheGateway(t *testing.T) {
	up := StartUpstream(t, nil)
	healthy := httpOK(t)
	hole := blackHole(t)
	smtpHole := blackHole(t)
	vars := map[string]any{"Upstream": up.URL, "Target": healthy, "SMTP": smtpHole, "Alert": everyCallAlert}
	c := StartCaddy(t, blackholeCaddyfile, vars)
	base, _ := notifierGoroutines(t, c)

	const d = 3 * time.Second
	var healthyRate, holeRate []float64
	for round := 0; round < 2; round++ {
		vars["Target"] = healthy
		if err := c.Reload(blackholeCaddyfile); err != nil {
			t.Fatal(err)
		}
		r, failed := load(t, c, d, fmt.Sprintf("h%d", round))
		if failed > 0 {
			t.Fatalf("healthy run: %d failed requests", failed)
		}
		healthyRate = append(healthyRate, r)
		vars["Target"] = hole
		if err := c.Reload(blackholeCaddyfile); err != nil {
			t.Fatal(err)
		}
		r, failed = load(t, c, d, fmt.Sprintf("b%d", round))
		if failed > 0 {
			t.Fatalf("black-holed run: %d failed requests", failed)
		}
		holeRate = append(holeRate, r)
	}
	ratio := (holeRate[0] + holeRate[1]) / (healthyRate[0] + healthyRate[1])
	t.Logf("throughput healthy %.0f, %.0f req/s; black-holed %.0f, %.0f req/s; ratio %.3f (target >= 0.95; noisy machine)",
		healthyRate[0], healthyRate[1], holeRate[0], holeRate[1], ratio)
	if ratio < 0.7 {
		t.Errorf("black-holed channels cut throughput to %.2f of the healthy run", ratio)
	}

	// Queues stay within their bound; what did not fit is counted as dropped.
	_, body := c.Admin(t, "GET", "/vigil/metrics", nil)
	var dropped float64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "vigil_notification_queue_length{") {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if v > 2 {
				t.Errorf("queue beyond its bound of 2: %s", line)
			}
		}
		if strings.HasPrefix(line, "vigil_notifications_total{") && strings.Contains(line, `outcome="dropped"`) {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			dropped += v
		}
	}
	if dropped == 0 {
		t.Errorf("no notification counted as dropped while every channel was black-holed:\n%s", body)
		for _, l := range strings.Split(c.Logs(), "\n") {
			if strings.Contains(l, "vigil") || strings.Contains(l, "rule") {
				t.Log(l)
			}
		}
	}

	// Without channels, the delivery goroutines are gone.
	vars["Alert"] = ""
	noChannels := regexp.MustCompile(`(?s)\t\tchannel .*?\n\t\t\{\{\.Alert\}\}`).ReplaceAllString(blackholeCaddyfile, "\t\t{{.Alert}}")
	if err := c.Reload(noChannels); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, dump := notifierGoroutines(t, c)
		if n <= base {
			t.Logf("notifier goroutines: %d with six channels before the load, %d after they were removed", base, n)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("notifier goroutines: %d at start, still %d after the channels were removed:\n%s", base, n, dump)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// httpOK is a receiver that accepts everything at once.
func httpOK(t *testing.T) string {
	up := StartUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(200)
		io.WriteString(w, "ok")
	})
	return up.URL
}
