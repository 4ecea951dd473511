package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"text/template"
	"time"
)

// gatewayCaddyfile is the caddy under test: two sites in one process, identical but for
// the vigil directive, so that the difference between them is Vigil's cost. The limits
// are far above what loopback can send (the per-ip limit sees every request from
// 127.0.0.1): they are evaluated on every request but never refuse one, so that both
// sites answer every request with the upstream's 200.
const gatewayCaddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	auto_https off
	persist_config off
	storage file_system {{.Storage}}
	vigil {
		tick 1s
	}
}

http://127.0.0.1:{{.Plain}} {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:{{.Upstream}}
}

http://127.0.0.1:{{.Vigil}} {
	bind 127.0.0.1
{{- if not .Control}}
	vigil {
		identify user    {header.X-User-Id}
		identify company {header.X-Company-Id}
		endpoint /users/{id}/orders
		block user u-blocked-1 u-blocked-2
		block company c-blocked
		block ip 192.0.2.7 198.51.100.0/24
{{- if .Limits}}
		rate_limit user 100000/s burst 200000
		rate_limit ip   100000000/s
		quota user 1000000000/day
{{- end}}
	}
{{- end}}
	reverse_proxy 127.0.0.1:{{.Upstream}}
}
`

// upstreamCaddyfile is the API behind both sites: a caddy of its own answering 200 with
// a small JSON body to every path.
const upstreamCaddyfile = `{
	admin 127.0.0.1:{{.Admin}}
	auto_https off
	persist_config off
	storage file_system {{.Storage}}
}

http://127.0.0.1:{{.Port}} {
	bind 127.0.0.1
	header Content-Type application/json
	respond ` + "`" + `{"orders":[{"id":1,"total":42,"currency":"EUR"}],"next":null}` + "`" + ` 200
}
`

// caddyProc is a caddy process started by this program.
type caddyProc struct {
	name      string
	dir       string
	cmd       *exec.Cmd
	adminPort int
	logs      *syncBuffer
	done      chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 { // bounded: caddy logs only at start and stop here
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func render(tpl string, data map[string]any) (string, error) {
	t, err := template.New("Caddyfile").Option("missingkey=error").Parse(tpl)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// startCaddy writes the Caddyfile into dir and runs bin with it, with storage, XDG
// directories and HOME inside dir. It returns once the admin endpoint answers and every
// port in waitPorts accepts connections. data gets .Admin and .Storage.
func startCaddy(ctx context.Context, name, bin, dir, tpl string, data map[string]any, waitPorts ...int) (*caddyProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	data["Admin"] = admin
	data["Storage"] = filepath.Join(dir, "storage")
	text, err := render(tpl, data)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return nil, err
	}
	p := &caddyProc{name: name, dir: dir, adminPort: admin, logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"HOME="+dir,
	)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = childAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s caddy (%s): %w", name, bin, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()

	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/config/", admin))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s caddy exited at start:\n%s", name, p.logs)
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s caddy did not start in 30s:\n%s", name, p.logs)
		}
	}
	for _, port := range waitPorts {
		if err := waitPort(ctx, port, 10*time.Second); err != nil {
			p.stop()
			return nil, fmt.Errorf("%s caddy: %w", name, err)
		}
	}
	return p, nil
}

func waitPort(ctx context.Context, port int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port %d not listening after %s", port, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pid returns the process id, for CPU accounting.
func (p *caddyProc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *caddyProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop stops caddy gracefully (SIGINT), and kills it when it has not exited after 10 s.
func (p *caddyProc) stop() {
	if p == nil || p.cmd == nil || p.cmd.Process == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// get sends a GET with headers and returns the status, the response headers and an
// error.
func get(ctx context.Context, url string, headers map[string]string) (int, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	_, _ = bytes.NewBuffer(nil).ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header, nil
}

// checkSites makes sure that the two sites do what the comparison assumes: both proxy
// to the upstream, only the vigil site applies Vigil (RateLimit fields on its answers,
// 403 for a blocked user), unless it is the control, which answers as plain does.
func checkSites(ctx context.Context, plainURL, vigilURL string, limits, control bool) error {
	hdr := map[string]string{"X-User-Id": "u-1", "X-Company-Id": "c-1"}
	code, h, err := get(ctx, plainURL+"/users/1/orders", hdr)
	if err != nil {
		return fmt.Errorf("plain site: %w", err)
	}
	if code != http.StatusOK || h.Get("RateLimit") != "" {
		return fmt.Errorf("plain site: got %d with RateLimit %q, want 200 without", code, h.Get("RateLimit"))
	}
	code, h, err = get(ctx, vigilURL+"/users/1/orders", hdr)
	if err != nil {
		return fmt.Errorf("vigil site: %w", err)
	}
	if control {
		if code != http.StatusOK || h.Get("RateLimit") != "" {
			return fmt.Errorf("vigil site (control): got %d with RateLimit %q, want 200 without, as plain", code, h.Get("RateLimit"))
		}
		return nil
	}
	if code != http.StatusOK || (h.Get("RateLimit") != "") != limits {
		return fmt.Errorf("vigil site: got %d with RateLimit %q, want 200 with RateLimit fields when it has limits (%v)", code, h.Get("RateLimit"), limits)
	}
	code, _, err = get(ctx, vigilURL+"/users/1/orders", map[string]string{"X-User-Id": "u-blocked-1"})
	if err != nil {
		return fmt.Errorf("vigil site: %w", err)
	}
	if code != http.StatusForbidden {
		return fmt.Errorf("vigil site: blocked user got %d, want 403", code)
	}
	return nil
}

// quotaUsed asks the admin API how many calls the quota counted for a user: proof that
// the vigil site counted the load.
func quotaUsed(ctx context.Context, adminPort int, user string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/vigil/quotas/user/%s", adminPort, user), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /vigil/quotas/user/%s: %d %s", user, resp.StatusCode, strings.TrimSpace(body.String()))
	}
	return parseUsed(body.Bytes())
}

// fetchProfile saves a CPU profile of seconds from caddy's admin endpoint to path.
func fetchProfile(ctx context.Context, adminPort, seconds int, path string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+30*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", adminPort, seconds)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var errNoUsed = errors.New("no \"used\" in the quota answer")
