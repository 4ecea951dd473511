// Package integration runs Vigil end to end: it builds the real caddy binary with Vigil
// (through xcaddy.mk), starts it on loopback with a Caddyfile in front of upstreams that
// the tests start, and talks HTTP to it.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"
)

// caddyBin is the binary under test: $VIGIL_CADDY (set by xcaddy.mk), or ./caddy at the
// repository root, built by TestMain when missing or older than the sources.
var caddyBin string

func TestMain(m *testing.M) {
	caddyBin = os.Getenv("VIGIL_CADDY")
	if caddyBin == "" {
		root, err := filepath.Abs("..")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		cmd := exec.Command("make", "-f", "xcaddy.mk", "build")
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building caddy with vigil:", err)
			os.Exit(2)
		}
		caddyBin = filepath.Join(root, "caddy")
	}
	os.Exit(m.Run())
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Caddy is a running caddy process.
type Caddy struct {
	t         testing.TB
	dir       string
	cmd       *exec.Cmd
	AdminPort int
	HTTPPort  int
	logs      *syncBuffer
	done      chan struct{}
	vars      map[string]any
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartCaddy renders the Caddyfile template (fields .Admin, .HTTP, .Storage and those in
// vars) and runs caddy with it until the test ends.
func StartCaddy(t testing.TB, caddyfile string, vars map[string]any) *Caddy {
	t.Helper()
	c := &Caddy{t: t, dir: t.TempDir(), AdminPort: freePort(t), HTTPPort: freePort(t), logs: &syncBuffer{}, vars: vars}
	c.start(caddyfile)
	t.Cleanup(func() { c.Stop() })
	return c
}

func (c *Caddy) render(caddyfile string) string {
	c.t.Helper()
	data := map[string]any{
		"Admin":   fmt.Sprintf("127.0.0.1:%d", c.AdminPort),
		"HTTP":    c.HTTPPort,
		"Storage": filepath.Join(c.dir, "storage"),
	}
	for k, v := range c.vars {
		data[k] = v
	}
	tpl, err := template.New("Caddyfile").Option("missingkey=error").Parse(caddyfile)
	if err != nil {
		c.t.Fatal(err)
	}
	var b strings.Builder
	if err := tpl.Execute(&b, data); err != nil {
		c.t.Fatal(err)
	}
	path := filepath.Join(c.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return path
}

func (c *Caddy) env() []string {
	return append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(c.dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(c.dir, "config"),
		"HOME="+c.dir,
	)
}

func (c *Caddy) start(caddyfile string) {
	c.t.Helper()
	path := c.render(caddyfile)
	c.cmd = exec.Command(caddyBin, "run", "--config", path, "--adapter", "caddyfile")
	c.cmd.Env = c.env()
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.done = make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(c.AdminURL("/config/"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-c.done:
			c.t.Fatalf("caddy exited at start:\n%s", c.logs)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("caddy did not start in 30s:\n%s", c.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The HTTP server is up once the admin endpoint answers with the config loaded, but
	// give the listener a moment on slow machines.
	waitPort(c.t, c.HTTPPort, 10*time.Second)
}

func waitPort(t testing.TB, port int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d not listening after %s", port, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Reload runs "caddy reload" with a new Caddyfile (rendered like the first one).
func (c *Caddy) Reload(caddyfile string) error {
	c.t.Helper()
	path := c.render(caddyfile)
	cmd := exec.Command(caddyBin, "reload", "--config", path, "--adapter", "caddyfile", "--address", fmt.Sprintf("127.0.0.1:%d", c.AdminPort), "--force")
	cmd.Env = c.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("caddy reload: %v: %s", err, out)
	}
	return nil
}

// Stop stops caddy gracefully (SIGINT) and waits for it.
func (c *Caddy) Stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// Kill stops caddy with SIGKILL, as a crash would.
func (c *Caddy) Kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// Logs returns what caddy has written so far.
func (c *Caddy) Logs() string { return c.logs.String() }

// URL returns the URL of a path on the gateway's HTTP port.
func (c *Caddy) URL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", c.HTTPPort, path)
}

// AdminURL returns the URL of a path on the admin endpoint.
func (c *Caddy) AdminURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", c.AdminPort, path)
}

var client = &http.Client{Timeout: 10 * time.Second}

// Do sends a request to the gateway with the given headers and returns the response
// with its body read.
func (c *Caddy) Do(t testing.TB, method, path string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, c.URL(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// Admin sends a request to the admin endpoint; body, when not nil, is sent as JSON.
func (c *Caddy) Admin(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		case []byte:
			rd = bytes.NewReader(b)
		default:
			j, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			rd = bytes.NewReader(j)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.AdminURL(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// Upstream is an HTTP server on loopback standing in for the API behind the gateway. It
// counts the requests it sees.
type Upstream struct {
	URL      string
	Port     int
	srv      *http.Server
	mu       sync.Mutex
	requests []*http.Request
	handler  http.HandlerFunc
}

// StartUpstream starts an upstream; handler nil answers 200 with a small JSON body.
func StartUpstream(t testing.TB, handler http.HandlerFunc) *Upstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &Upstream{Port: l.Addr().(*net.TCPAddr).Port, handler: handler}
	u.URL = fmt.Sprintf("127.0.0.1:%d", u.Port)
	u.srv = &http.Server{Handler: http.HandlerFunc(u.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = u.srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = u.srv.Shutdown(ctx)
	})
	return u
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.requests = append(u.requests, r.Clone(context.Background()))
	h := u.handler
	u.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true}`)
}

// SetHandler replaces the upstream's handler.
func (u *Upstream) SetHandler(h http.HandlerFunc) {
	u.mu.Lock()
	u.handler = h
	u.mu.Unlock()
}

// Seen returns how many requests reached the upstream, and how many of them carried the
// header name with the value.
func (u *Upstream) Seen(name, value string) (all, matching int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, r := range u.requests {
		if name != "" && r.Header.Get(name) == value {
			matching++
		}
	}
	return len(u.requests), matching
}
