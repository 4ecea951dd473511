package notifier

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// Channel turns a batch of events into one request to one receiver and sends it. A channel
// does not retry, queue or throttle: the Queue does. Send returns nil when the receiver
// accepted the batch, or an error that Classify can read (see DeliveryError) and whose
// text holds no secret. Channels are safe for concurrent use.
type Channel interface {
	// Name is the configured name of the channel.
	Name() string
	// Type is the channel type (TypeWebhook, TypeSlack, ...).
	Type() string
	// Send makes one delivery attempt of b, bounded by ctx.
	Send(ctx context.Context, b alert.Batch) error
}

// KeepAliver is implemented by channels whose receiver forgets an alert that is not sent
// again (Alertmanager resolves it after its resolve_timeout). The Queue calls KeepAlive
// every KeepAliveInterval from the channel's worker, between deliveries, until Close. It is
// a protocol keep-alive, not a notification: nothing is recorded on events.
type KeepAliver interface {
	// KeepAliveInterval is how often KeepAlive must run.
	KeepAliveInterval() time.Duration
	// KeepAlive sends again what the receiver must not forget.
	KeepAlive(ctx context.Context) error
}

// Resolver replaces Caddy placeholders ({env.X}) in a configuration value.
type Resolver func(string) (string, error)

// Options are the Go-level settings of the channels, given by the Caddy glue (or a test).
type Options struct {
	// Resolve replaces placeholders in every string value of a Config; nil leaves values as
	// they are.
	Resolve Resolver
	// HTTPClient sends the HTTP channels' requests (redirects are never followed); nil: a
	// client of the channel's own. The Queue bounds each attempt, so it needs no Timeout.
	HTTPClient *http.Client
	// TLSConfig is the base TLS configuration of SMTP connections (for example RootCAs in
	// tests); nil: the system's roots. ServerName defaults to the SMTP host.
	TLSConfig *tls.Config
	// ExternalURL is the base URL of Vigil's admin API as a receiver should link to it
	// ("http://gw-1.example.com:2019/vigil"); empty: no links back to Vigil are sent.
	ExternalURL string
	// Source names this gateway in PagerDuty's payload.source; empty: the host name.
	Source string
	// Now returns the current time; nil: time.Now.
	Now func() time.Time
}

// New builds the channel cfg describes: it resolves placeholders, checks the result and
// returns a *Webhook, *Slack, *PagerDuty, *Alertmanager, *Email or *SMS.
func New(cfg Config, opts Options) (Channel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc, err := cfg.resolve(opts.Resolve)
	if err != nil {
		return nil, err
	}
	if err := rc.validate(true); err != nil {
		return nil, err
	}
	b := newBase(rc, opts)
	switch rc.Type {
	case TypeWebhook:
		return newWebhook(b, rc)
	case TypeSlack:
		return newSlack(b, rc)
	case TypePagerDuty:
		return newPagerDuty(b, rc, opts)
	case TypeAlertmanager:
		return newAlertmanager(b, rc)
	case TypeEmail:
		return newEmail(b, rc, opts)
	case TypeSMS:
		return newSMS(b, rc)
	}
	return nil, &ConfigError{Channel: cfg.Name, Field: "type", Problem: fmt.Sprintf("%q: unknown", cfg.Type)}
}

// NewAll builds the channels of cfgs, checking that their names are unique.
func NewAll(cfgs []Config, opts Options) ([]Channel, error) {
	seen := make(map[string]bool, len(cfgs))
	out := make([]Channel, 0, len(cfgs))
	for _, c := range cfgs {
		if seen[c.Name] {
			return nil, &ConfigError{Channel: c.Name, Field: "name", Problem: "defined twice"}
		}
		seen[c.Name] = true
		ch, err := New(c, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, ch)
	}
	return out, nil
}

// resolve returns a copy of c with every placeholder replaced.
func (c Config) resolve(resolve Resolver) (Config, error) {
	if resolve == nil {
		return c, nil
	}
	c.To = append([]string(nil), c.To...)
	fields := []struct {
		name string
		v    *string
	}{
		{"url", &c.URL}, {"secret", &c.Secret}, {"format", &c.Format},
		{"routing_key", &c.RoutingKey}, {"smtp", &c.SMTP}, {"username", &c.Username},
		{"password", &c.Password}, {"from", &c.From}, {"tls", &c.TLS},
		{"account", &c.Account}, {"token", &c.Token},
	}
	for i := range c.To {
		fields = append(fields, struct {
			name string
			v    *string
		}{fmt.Sprintf("to[%d]", i), &c.To[i]})
	}
	for _, f := range fields {
		if *f.v == "" {
			continue
		}
		v, err := resolve(*f.v)
		if err != nil {
			return c, &ConfigError{Channel: c.Name, Field: f.name, Problem: "cannot resolve placeholder: " + err.Error()}
		}
		*f.v = v
	}
	return c, nil
}

// endpoint parses the url setting, or def when it is empty.
func (c Config) endpoint(def string) (*url.URL, error) {
	raw := c.URL
	if raw == "" {
		raw = def
	}
	u, err := parseHTTPURL(raw)
	if err != nil {
		return nil, &ConfigError{Channel: c.Name, Field: "url", Problem: err.Error()}
	}
	return u, nil
}

// base holds what every channel has: its name and type, its queue overrides, the HTTP
// client, the scrubber of its secrets, the clock and the link back to Vigil.
type base struct {
	name, typ   string
	queue       *QueueConfig
	client      *http.Client
	ownClient   bool
	scrub       scrubber
	now         func() time.Time
	externalURL string
}

// sharedTransport carries the HTTP channels' requests. One transport for all channels,
// whatever config generation built them, keeps connections pooled and bounded: a config
// reload builds new channel values but no new connection pools, and the Queue closes the
// idle connections when channels are removed.
var sharedTransport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.IdleConnTimeout = 30 * time.Second
	t.MaxIdleConnsPerHost = 4
	return t
}()

func newBase(c Config, opts Options) base {
	b := base{
		name:        c.Name,
		typ:         c.Type,
		queue:       c.Queue,
		now:         opts.Now,
		externalURL: opts.ExternalURL,
	}
	if b.now == nil {
		b.now = time.Now
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if opts.HTTPClient != nil {
		cl := *opts.HTTPClient
		cl.CheckRedirect = noRedirect
		b.client = &cl
	} else {
		b.client = &http.Client{Transport: sharedTransport, CheckRedirect: noRedirect}
		b.ownClient = true
	}
	b.scrub = newScrubber(secretTexts(c)...)
	return b
}

// minQuerySecret is the length from which a URL's query values are taken for secrets
// (tokens); shorter ones ("?a=1") would blank out unrelated text.
const minQuerySecret = 6

// secretTexts returns every form in which c's secrets could show up in a text: the values,
// the credentials and query values of its URL, the path of a Slack URL, and the base64
// forms that HTTP Basic auth and SMTP AUTH put on the wire.
func secretTexts(c Config) []string {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	secrets := []string{c.Secret, c.RoutingKey, c.Password, c.Token}
	if c.Token != "" {
		secrets = append(secrets, b64(c.Account+":"+c.Token))
	}
	if c.Password != "" {
		secrets = append(secrets, b64(c.Password), b64("\x00"+c.Username+"\x00"+c.Password))
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return append(secrets, c.URL)
	}
	if c.Type == TypeSlack {
		secrets = append(secrets, c.URL)
		if len(u.EscapedPath()) > 1 {
			secrets = append(secrets, u.EscapedPath(), u.Path)
		}
	}
	if p, ok := u.User.Password(); ok {
		secrets = append(secrets, p, url.PathEscape(p), b64(u.User.Username()+":"+p))
	}
	for _, vs := range u.Query() {
		for _, v := range vs {
			if len(v) >= minQuerySecret {
				secrets = append(secrets, v, url.QueryEscape(v))
			}
		}
	}
	return secrets
}

// Name returns the configured name.
func (b *base) Name() string { return b.name }

// Type returns the channel type.
func (b *base) Type() string { return b.typ }

// String describes the channel without its secrets.
func (b *base) String() string { return fmt.Sprintf("%s channel %q", b.typ, b.name) }

// GoString is String, so that %#v prints no secret.
func (b *base) GoString() string { return b.String() }

// LogValue logs the channel's name and type.
func (b *base) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", b.name), slog.String("type", b.typ))
}

// queueOverrides returns the channel's own delivery settings (zero fields: the Queue's).
func (b *base) queueOverrides() QueueConfig {
	if b.queue == nil {
		return QueueConfig{}
	}
	return *b.queue
}

// CloseIdleConnections closes the idle connections of the channel's own HTTP client.
func (b *base) CloseIdleConnections() {
	if b.ownClient {
		b.client.CloseIdleConnections()
	}
}

// eventURL links to the event's rule in Vigil's admin API, or "" without an ExternalURL.
func (b *base) eventURL(ev *alert.Event) string {
	if b.externalURL == "" {
		return ""
	}
	return b.externalURL + "/events?rule=" + url.QueryEscape(ev.RuleID)
}

// httpRequest is one request of an HTTP channel.
type httpRequest struct {
	url         *url.URL
	display     string // url as it may be shown
	contentType string
	body        []byte
	header      http.Header
	basicUser   string
	basicPass   Secret
}

// post sends r, and returns nil on a 2xx answer or a scrubbed DeliveryError.
func (b *base) post(ctx context.Context, r httpRequest) error {
	op := "POST " + r.display
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url.String(), bytes.NewReader(r.body))
	if err != nil {
		return b.scrub.Error(Permanent(fmt.Errorf("%s: building the request: %w", op, err)))
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", r.contentType)
	req.Header.Set("User-Agent", userAgent)
	if r.basicUser != "" {
		req.SetBasicAuth(r.basicUser, r.basicPass.Reveal())
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return b.scrub.Error(transportError(ctx, op, err))
	}
	defer resp.Body.Close()
	err = checkResponse(op, resp, b.now())
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	return b.scrub.Error(err)
}

// userAgent is sent with every HTTP request.
const userAgent = "Vigil-Notifier/1"

// hostname returns the host name, or "vigil" when it is unknown.
func hostname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "vigil"
}

// errEmptyBatch is returned for a batch without events (the engine never sends one).
var errEmptyBatch = Permanent(errors.New("empty batch: nothing to send"))
