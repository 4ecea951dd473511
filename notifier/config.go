package notifier

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The channel types (Config.Type).
const (
	TypeWebhook      = "webhook"      // JSON POST, optionally signed (Standard Webhooks)
	TypeSlack        = "slack"        // Slack incoming webhook
	TypePagerDuty    = "pagerduty"    // PagerDuty Events API v2
	TypeAlertmanager = "alertmanager" // Alertmanager API v2
	TypeEmail        = "email"        // SMTP submission
	TypeSMS          = "sms"          // Twilio-compatible Messages API
)

// Webhook formats.
const (
	// FormatAlertmanager makes a webhook channel send Alertmanager's webhook payload
	// (version "4") instead of Vigil's own.
	FormatAlertmanager = "alertmanager"
)

// SMTP TLS modes.
const (
	// TLSStartTLS connects in plain text and upgrades with STARTTLS before AUTH and MAIL; the
	// default, except on port 465.
	TLSStartTLS = "starttls"
	// TLSImplicit speaks TLS from the first byte (SMTPS); the default on port 465.
	TLSImplicit = "implicit"
	// TLSNone sends in plain text; allowed only towards a loopback address, for tests.
	TLSNone = "none"
)

// Default values of the notification settings.
const (
	DefaultQueueSize   = 1000             // batches per channel queue
	DefaultTimeout     = 10 * time.Second // per attempt
	DefaultMaxAttempts = 10               // attempts per batch
	DefaultMaxAge      = time.Hour        // from queueing to the last attempt
	DefaultBackoffBase = 5 * time.Second  // first retry's upper bound
	DefaultBackoffMax  = 5 * time.Minute  // cap on any wait, Retry-After included
	DefaultKeepAlive   = time.Minute      // Alertmanager re-post interval
)

// Config is one notification channel, as written under apps.vigil.channels[] in Caddy's
// JSON config (the Caddyfile's "channel NAME TYPE ..." lines adapt to it). Which fields a
// type takes is said on each field; a field given to a type that does not use it is an
// error. Every string value may be a Caddy placeholder such as {env.SMTP_PASSWORD}: New
// resolves them, and keeps the secret ones (secret, routing_key, password, token, and the
// url of a slack channel) in a Secret that never prints.
type Config struct {
	// Name identifies the channel in rules' notify lists, events and metrics. Required;
	// letters, digits, '-', '_' and '.'.
	Name string `json:"name,omitempty"`
	// Type is one of webhook, slack, pagerduty, alertmanager, email, sms. Required.
	Type string `json:"type,omitempty"`
	// URL is where requests go. Required for webhook, slack (the incoming-webhook URL, which
	// is a secret) and alertmanager (its base URL, "http://127.0.0.1:9093"; alerts go to
	// URL/api/v2/alerts). Optional for pagerduty (default
	// https://events.pagerduty.com/v2/enqueue; use https://events.eu.pagerduty.com/v2/enqueue
	// for an EU account) and sms (the base URL of a Twilio-compatible API, default
	// https://api.twilio.com). Credentials and query strings in a URL never show in logs or
	// errors.
	URL string `json:"url,omitempty"`
	// Secret (webhook) signs each request per Standard Webhooks (HMAC-SHA256). A value that
	// starts with "whsec_" is base64 after the prefix and its decoded bytes are the key;
	// any other value is used as raw bytes. Optional: without it, requests are not signed.
	Secret string `json:"secret,omitempty"`
	// Format (webhook) is "" for Vigil's JSON body, or "alertmanager" for Alertmanager's
	// webhook payload (version "4").
	Format string `json:"format,omitempty"`
	// RoutingKey (pagerduty, required) is the 32-character integration key of a PagerDuty
	// Events API v2 integration.
	RoutingKey string `json:"routing_key,omitempty"`
	// SMTP (email, required) is the submission server as host:port, for example
	// smtp.example.com:587.
	SMTP string `json:"smtp,omitempty"`
	// Username (email) is the SMTP AUTH user name; empty: no AUTH.
	Username string `json:"username,omitempty"`
	// Password (email) is the SMTP AUTH password. AUTH uses PLAIN, or LOGIN when the server
	// offers only that.
	Password string `json:"password,omitempty"`
	// From (email, sms; required) is the sender: an address ("Vigil <alerts@example.com>")
	// for email, an E.164 number or alphanumeric sender ID for sms.
	From string `json:"from,omitempty"`
	// To (email, sms; required) lists the recipients: addresses for email (one message to
	// all), E.164 numbers for sms (one message each).
	To []string `json:"to,omitempty"`
	// TLS (email) is "starttls" (default, except on port 465), "implicit" (default on port
	// 465) or "none" (plain text; only towards a loopback address, for tests).
	TLS string `json:"tls,omitempty"`
	// Account (sms, required) is the account SID (or API key SID) for HTTP Basic auth and
	// the URL path.
	Account string `json:"account,omitempty"`
	// Token (sms, required) is the auth token (or API key secret) for HTTP Basic auth.
	Token string `json:"token,omitempty"`
	// KeepAlive (alertmanager) is how often alerts still firing are posted again, so that
	// Alertmanager does not resolve them by itself. Default 1m; keep it well under
	// Alertmanager's resolve_timeout (5m by default).
	KeepAlive Duration `json:"keep_alive,omitempty"`
	// Queue overrides the delivery settings of the notifier for this channel; unset fields
	// keep the notifier's values.
	Queue *QueueConfig `json:"queue,omitempty"`
}

// QueueConfig holds the delivery settings: the bound of a channel's queue, the attempt
// timeout, and the retry policy. Zero fields take the defaults said on each.
type QueueConfig struct {
	// Size is how many batches a channel's queue holds; when it is full, new batches are
	// dropped (counted, logged and recorded on their events). Default 1000.
	Size int `json:"size,omitempty"`
	// Timeout bounds one delivery attempt, connection included. Default 10s.
	Timeout Duration `json:"timeout,omitempty"`
	// MaxAttempts is how many attempts a batch gets before it is recorded as failed.
	// Default 10.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// MaxAge is how long after it was queued a batch may still be attempted. Default 1h.
	MaxAge Duration `json:"max_age,omitempty"`
	// BackoffBase is the first retry's upper bound; each retry doubles it, up to BackoffMax,
	// and the wait is drawn at random below it (full jitter). Default 5s.
	BackoffBase Duration `json:"backoff_base,omitempty"`
	// BackoffMax caps the wait between attempts, a receiver's Retry-After included.
	// Default 5m.
	BackoffMax Duration `json:"backoff_max,omitempty"`
}

// DefaultQueueConfig returns the default delivery settings.
func DefaultQueueConfig() QueueConfig {
	return QueueConfig{
		Size:        DefaultQueueSize,
		Timeout:     Duration(DefaultTimeout),
		MaxAttempts: DefaultMaxAttempts,
		MaxAge:      Duration(DefaultMaxAge),
		BackoffBase: Duration(DefaultBackoffBase),
		BackoffMax:  Duration(DefaultBackoffMax),
	}
}

// Validate checks that no setting is negative and that BackoffBase is not above BackoffMax.
func (q QueueConfig) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"queue.size", int64(q.Size)},
		{"queue.timeout", int64(q.Timeout)},
		{"queue.max_attempts", int64(q.MaxAttempts)},
		{"queue.max_age", int64(q.MaxAge)},
		{"queue.backoff_base", int64(q.BackoffBase)},
		{"queue.backoff_max", int64(q.BackoffMax)},
	} {
		if f.v < 0 {
			return &ConfigError{Field: f.name, Problem: "must not be negative"}
		}
	}
	if q.BackoffBase > 0 && q.BackoffMax > 0 && q.BackoffBase > q.BackoffMax {
		return &ConfigError{Field: "queue.backoff_base", Problem: fmt.Sprintf(
			"%s is above backoff_max %s", q.BackoffBase, q.BackoffMax)}
	}
	return nil
}

// over returns q with its zero fields taken from d.
func (q QueueConfig) over(d QueueConfig) QueueConfig {
	pick := func(v, dv int64) int64 {
		if v != 0 {
			return v
		}
		return dv
	}
	return QueueConfig{
		Size:        int(pick(int64(q.Size), int64(d.Size))),
		Timeout:     Duration(pick(int64(q.Timeout), int64(d.Timeout))),
		MaxAttempts: int(pick(int64(q.MaxAttempts), int64(d.MaxAttempts))),
		MaxAge:      Duration(pick(int64(q.MaxAge), int64(d.MaxAge))),
		BackoffBase: Duration(pick(int64(q.BackoffBase), int64(d.BackoffBase))),
		BackoffMax:  Duration(pick(int64(q.BackoffMax), int64(d.BackoffMax))),
	}
}

// Duration is a time.Duration in JSON: a string such as "10s" or "1h30m", or an integer
// of nanoseconds (as caddy.Duration). It marshals as a string.
type Duration time.Duration

// MarshalJSON writes the duration as a string ("10s").
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string or an integer of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("duration %s: want a string such as \"10s\" or an integer of nanoseconds", b)
	}
	*d = Duration(n)
	return nil
}

// String returns the duration as time.Duration writes it.
func (d Duration) String() string { return time.Duration(d).String() }

// ConfigError says which field of which channel is wrong and why. Its text never holds
// the value of a secret field.
type ConfigError struct {
	// Channel is the channel's name ("" when the error is not about one channel).
	Channel string
	// Field is the JSON name of the field ("routing_key", "queue.timeout").
	Field string
	// Problem says what is wrong.
	Problem string
}

// Error returns `channel "NAME": FIELD: PROBLEM`.
func (e *ConfigError) Error() string {
	if e.Channel == "" {
		return e.Field + ": " + e.Problem
	}
	return fmt.Sprintf("channel %q: %s: %s", e.Channel, e.Field, e.Problem)
}

// fieldsByType lists the optional fields each type takes (name and type are common).
var fieldsByType = map[string][]string{
	TypeWebhook:      {"url", "secret", "format"},
	TypeSlack:        {"url"},
	TypePagerDuty:    {"url", "routing_key"},
	TypeAlertmanager: {"url", "keep_alive"},
	TypeEmail:        {"smtp", "username", "password", "from", "to", "tls"},
	TypeSMS:          {"url", "account", "token", "from", "to"},
}

// set returns the names of the type-specific fields that are set.
func (c *Config) set() []string {
	var names []string
	add := func(name string, isSet bool) {
		if isSet {
			names = append(names, name)
		}
	}
	add("url", c.URL != "")
	add("secret", c.Secret != "")
	add("format", c.Format != "")
	add("routing_key", c.RoutingKey != "")
	add("smtp", c.SMTP != "")
	add("username", c.Username != "")
	add("password", c.Password != "")
	add("from", c.From != "")
	add("to", len(c.To) > 0)
	add("tls", c.TLS != "")
	add("account", c.Account != "")
	add("token", c.Token != "")
	add("keep_alive", c.KeepAlive != 0)
	return names
}

// Validate checks the configuration as written: required fields, fields the type does not
// take, and the form of values that are not placeholders. Errors are *ConfigError.
func (c Config) Validate() error { return c.validate(false) }

// hasPlaceholder reports whether s holds a Caddy placeholder, which only the resolver can
// check.
func hasPlaceholder(s string) bool {
	i := strings.IndexByte(s, '{')
	return i >= 0 && strings.IndexByte(s[i:], '}') > 0
}

// validate checks c; resolved says placeholders were replaced, so that values are checked
// whatever they hold.
func (c Config) validate(resolved bool) error {
	bad := func(field, problem string, args ...any) error {
		return &ConfigError{Channel: c.Name, Field: field, Problem: fmt.Sprintf(problem, args...)}
	}
	check := func(v string) bool { return resolved || !hasPlaceholder(v) }
	if c.Name == "" {
		return bad("name", "required")
	}
	if strings.IndexFunc(c.Name, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) >= 0 {
		return bad("name", "%q: use letters, digits, '-', '_' and '.'", c.Name)
	}
	allowed, ok := fieldsByType[c.Type]
	if !ok {
		return bad("type", "%q: want webhook, slack, pagerduty, alertmanager, email or sms", c.Type)
	}
	for _, f := range c.set() {
		if !slices.Contains(allowed, f) {
			return bad(f, "not used by a %s channel", c.Type)
		}
	}
	if c.Queue != nil {
		if err := c.Queue.Validate(); err != nil {
			err.(*ConfigError).Channel = c.Name
			return err
		}
	}
	if c.KeepAlive < 0 {
		return bad("keep_alive", "must not be negative")
	}
	switch c.Type {
	case TypeWebhook, TypeSlack, TypeAlertmanager:
		if c.URL == "" {
			return bad("url", "required for a %s channel", c.Type)
		}
	case TypePagerDuty:
		if c.RoutingKey == "" {
			return bad("routing_key", "required (the integration key of an Events API v2 integration)")
		}
	case TypeEmail:
		for _, f := range []struct{ name, v string }{{"smtp", c.SMTP}, {"from", c.From}} {
			if f.v == "" {
				return bad(f.name, "required for an email channel")
			}
		}
	case TypeSMS:
		for _, f := range []struct{ name, v string }{{"account", c.Account}, {"token", c.Token}, {"from", c.From}} {
			if f.v == "" {
				return bad(f.name, "required for an sms channel")
			}
		}
	}
	if c.URL != "" && check(c.URL) {
		if _, err := parseHTTPURL(c.URL); err != nil {
			if c.Type == TypeSlack {
				return bad("url", "not an http(s) URL") // the URL is the secret: no echo
			}
			return bad("url", "%v", err)
		}
	}
	if c.Format != "" && c.Format != FormatAlertmanager && check(c.Format) {
		return bad("format", "%q: want \"\" or \"alertmanager\"", c.Format)
	}
	if strings.HasPrefix(c.Secret, whsecPrefix) && check(c.Secret) {
		if _, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(c.Secret, whsecPrefix)); err != nil {
			return bad("secret", "the part after whsec_ is not valid base64")
		}
	}
	if c.Type == TypeEmail {
		return c.validateEmail(bad, check)
	}
	if c.Type == TypeSMS && len(c.To) == 0 {
		return bad("to", "required: at least one number")
	}
	return nil
}

// validateEmail checks the fields of an email channel.
func (c Config) validateEmail(bad func(string, string, ...any) error, check func(string) bool) error {
	if len(c.To) == 0 {
		return bad("to", "required: at least one address")
	}
	var host, port string
	if check(c.SMTP) {
		var err error
		host, port, err = net.SplitHostPort(c.SMTP)
		if err != nil || host == "" || port == "" {
			return bad("smtp", "%q: want host:port, for example smtp.example.com:587", c.SMTP)
		}
	}
	switch c.TLS {
	case "", TLSStartTLS, TLSImplicit:
	case TLSNone:
		if host != "" && !isLoopbackHost(host) {
			return bad("tls", "none is only allowed towards a loopback address, not %q", host)
		}
	default:
		if check(c.TLS) {
			return bad("tls", "%q: want starttls, implicit or none", c.TLS)
		}
	}
	if c.Password != "" && c.Username == "" {
		return bad("username", "required when a password is set")
	}
	if check(c.From) {
		if _, err := mail.ParseAddress(c.From); err != nil {
			return bad("from", "%q: not an e-mail address: %v", c.From, err)
		}
	}
	for i, to := range c.To {
		if check(to) {
			if _, err := mail.ParseAddress(to); err != nil {
				return bad(fmt.Sprintf("to[%d]", i), "%q: not an e-mail address: %v", to, err)
			}
		}
	}
	return nil
}

// isLoopbackHost reports whether host is "localhost" or a loopback IP address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseHTTPURL parses an absolute http or https URL.
func parseHTTPURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%q: want an absolute http or https URL", redactURL(u, false))
	}
	return u, nil
}

// secretFields returns pointers to the fields of c that hold secrets.
func (c *Config) secretFields() []*string {
	fields := []*string{&c.Secret, &c.RoutingKey, &c.Password, &c.Token}
	if c.Type == TypeSlack {
		fields = append(fields, &c.URL)
	}
	return fields
}

// Redacted returns a copy of c fit to show (in the admin API, in logs): secret fields that
// hold a literal value read "[redacted]" (placeholders such as {env.X} stay, they are not
// secret), and URLs lose their credentials and query.
func (c Config) Redacted() Config {
	c.To = append([]string(nil), c.To...)
	if c.Queue != nil {
		q := *c.Queue
		c.Queue = &q
	}
	for _, f := range c.secretFields() {
		if *f != "" && !isPurePlaceholder(*f) {
			*f = redacted
		}
	}
	if c.URL != "" && !isPurePlaceholder(c.URL) && c.URL != redacted {
		if u, err := url.Parse(c.URL); err == nil {
			c.URL = redactURL(u, false)
		} else {
			c.URL = redacted
		}
	}
	return c
}

// isPurePlaceholder reports whether s is a single placeholder, "{env.X}".
func isPurePlaceholder(s string) bool {
	return len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}' && strings.Count(s, "{") == 1
}

// LogValue logs the redacted configuration.
func (c Config) LogValue() slog.Value {
	r := c.Redacted()
	attrs := []slog.Attr{slog.String("name", r.Name), slog.String("type", r.Type)}
	if r.URL != "" {
		attrs = append(attrs, slog.String("url", r.URL))
	}
	if r.SMTP != "" {
		attrs = append(attrs, slog.String("smtp", r.SMTP))
	}
	return slog.GroupValue(attrs...)
}

// String describes the channel with its secrets redacted, so that %v never prints one.
func (c Config) String() string {
	r := c.Redacted()
	return fmt.Sprintf("%s channel %q", r.Type, r.Name)
}

// GoString is String, so that %#v never prints a secret either.
func (c Config) GoString() string { return c.String() }

var (
	_ slog.LogValuer = Config{}
	_ fmt.Stringer   = Config{}
)
