// Package cli holds the plain-Go parts of the "caddy vigil" commands: a client for Vigil's
// admin API on Caddy's admin endpoint, the JSON shapes the commands read from it, and their
// rendering as tables. The commands themselves are registered in package caddyplugin.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// maxBody bounds what the client reads of an answer.
const maxBody = 64 << 20

// Client talks to Vigil's admin API, as Caddy's own commands talk to its admin endpoint
// (caddycmd.AdminAPIRequest): one connection per request to a TCP address or a unix
// socket, with an Origin header for TCP so that Caddy's origin check accepts it.
type Client struct {
	addr       string
	origin     string
	sendOrigin bool
	http       *http.Client
}

// NewClient returns a client of the admin endpoint at dialAddr on network ("tcp", "tcp4",
// "tcp6" or "unix"). addr is the address as the user gave it, for messages. timeout bounds
// each request, answer included; zero means no bound.
func NewClient(addr, network, dialAddr string, timeout time.Duration) *Client {
	c := &Client{addr: addr, origin: "http://" + dialAddr, sendOrigin: true}
	if strings.HasPrefix(network, "unix") {
		// The host is irrelevant on a socket; Caddy wants 127.0.0.1 or ::1 if one is set.
		c.origin, c.sendOrigin = "http://127.0.0.1", false
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	c.http = &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, dialAddr)
			},
			DisableKeepAlives: true,
		},
	}
	return c
}

// Address returns the admin address as the user gave it.
func (c *Client) Address() string { return c.addr }

// Response is an answer of the admin API.
type Response struct {
	Status int
	Body   []byte
}

// Do sends a request to path (already escaped) with the query, and body marshalled as
// JSON unless nil. Any answer, whatever its status, comes back as a Response; the error
// is about reaching Caddy: a *NotRunningError when nothing listens at the address.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body any) (*Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := c.origin + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if c.sendOrigin {
		req.Header.Set("Origin", c.origin)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of Caddy's admin endpoint at %s: %w", c.addr, err)
	}
	return &Response{Status: resp.StatusCode, Body: data}, nil
}

// Call is Do for answers that must succeed: a status of 400 or more comes back as an
// *APIError.
func (c *Client) Call(ctx context.Context, method, path string, query url.Values, body any) (*Response, error) {
	resp, err := c.Do(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	if resp.Status >= 400 {
		return nil, ParseAPIError(resp.Status, resp.Body)
	}
	return resp, nil
}

// Get is Call with GET, decoding the answer into v.
func (c *Client) Get(ctx context.Context, path string, query url.Values, v any) (*Response, error) {
	resp, err := c.Call(ctx, http.MethodGet, path, query, nil)
	if err != nil {
		return nil, err
	}
	if err := Decode(resp, v); err != nil {
		return nil, err
	}
	return resp, nil
}

// Decode decodes the JSON body of a successful answer into v.
func Decode(resp *Response, v any) error {
	if err := json.Unmarshal(resp.Body, v); err != nil {
		return fmt.Errorf("the admin API answered %d with a body that is not what was expected: %v", resp.Status, err)
	}
	return nil
}

func (c *Client) transportError(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return &NotRunningError{Address: c.addr, Reason: "connection refused"}
	case errors.Is(err, fs.ErrNotExist) && !c.sendOrigin:
		return &NotRunningError{Address: c.addr, Reason: "no such socket"}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("no answer in time from Caddy's admin endpoint at %s: %w", c.addr, err)
	}
	return fmt.Errorf("reaching Caddy's admin endpoint at %s: %w", c.addr, err)
}

// NotRunningError says that nothing listens at the admin address.
type NotRunningError struct {
	Address string
	Reason  string
}

// Error says that Caddy is not running at the address, and how to start it.
func (e *NotRunningError) Error() string {
	return fmt.Sprintf("Caddy is not running at %s (%s): start it, or give its admin address with --address or its config with --config", e.Address, e.Reason)
}

// APIError is an error answer of the admin API: {"error": "...", "field": "..."}.
type APIError struct {
	Status  int
	Message string
	Field   string
}

// Error reads "<error> (field <field>)", or "<error>" when the answer names no field.
func (e *APIError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s (field %s)", e.Message, e.Field)
	}
	return e.Message
}

// ParseAPIError reads an error answer. A body that is not Vigil's (or Caddy's) JSON
// error is quoted, shortened, with the status.
func ParseAPIError(status int, body []byte) *APIError {
	var e struct {
		Error string `json:"error"`
		Field string `json:"field"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return &APIError{Status: status, Message: e.Error, Field: e.Field}
	}
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200] + "…"
	}
	msg := fmt.Sprintf("the admin API answered %d %s", status, http.StatusText(status))
	if text != "" {
		msg += ": " + text
	}
	return &APIError{Status: status, Message: msg}
}

// PathEscape joins path segments, each escaped ('/' in a CIDR range included), to a
// prefix: PathEscape("/vigil/blocklist", "cidr", "10.0.0.0/8") is
// "/vigil/blocklist/cidr/10.0.0.0%2F8".
func PathEscape(prefix string, segments ...string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// Indent writes a JSON body indented, as --json prints it; an empty body writes nothing.
func Indent(w io.Writer, body []byte) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, body, "", "  "); err != nil {
		return fmt.Errorf("the admin API answered with invalid JSON: %v", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}
