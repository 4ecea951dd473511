package caddyplugin

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/vigilgw/vigil/caddyplugin/blocklist"
	"github.com/vigilgw/vigil/caddyplugin/endpoint"
	"github.com/vigilgw/vigil/caddyplugin/limit"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("vigil", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("vigil", parseHandlerDirective)
	// Right after forward_auth: identities set by authentication are known, and it runs
	// before handle, route and reverse_proxy, so it sees every request of the site.
	httpcaddyfile.RegisterDirectiveOrder("vigil", httpcaddyfile.After, "forward_auth")
}

// parseGlobalOption parses the vigil global option into the vigil app. Syntax:
//
//	vigil {
//		tick         <duration>
//		max_series   <n>
//		max_keys     <n>
//		recent_calls <n>
//		snapshot     <duration>
//		test_clock
//		event_history <n>
//		cohort_interval <duration>
//		external_url  <url>
//		correlate     upstream|company|user|key|endpoint... [window <duration>] | off
//		channel <name> <type> [<url or key>] [{ ... }]   (see parseChannel)
//		alert "<name>" { ... }                              (see parseAlert)
//	}
//
// The block may appear once.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the vigil global option may appear only once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "vigil", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from the global vigil block (see parseGlobalOption
// for the syntax).
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	var alertAt []caddyfile.Token // where each alert block starts
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "tick", "max_series", "max_keys", "recent_calls", "snapshot", "test_clock", "event_history", "external_url", "cohort_interval":
			if seen[opt] {
				return d.Errf("%s given twice", opt)
			}
			seen[opt] = true
		}
		switch opt {
		case "tick":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.Tick = dur
		case "snapshot":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.Snapshot = dur
		case "cohort_interval":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.CohortInterval = dur
		case "max_series":
			n, err := positiveIntArg(d)
			if err != nil {
				return err
			}
			a.MaxSeries = n
		case "max_keys":
			n, err := positiveIntArg(d)
			if err != nil {
				return err
			}
			a.MaxKeys = n
		case "recent_calls":
			n, err := positiveIntArg(d)
			if err != nil {
				return err
			}
			a.RecentCalls = n
		case "test_clock":
			if d.NextArg() {
				return d.ArgErr()
			}
			a.TestClock = true
		case "event_history":
			n, err := positiveIntArg(d)
			if err != nil {
				return err
			}
			a.EventHistory = n
		case "external_url":
			if !d.NextArg() {
				return d.ArgErr()
			}
			a.ExternalURL = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "correlate":
			if a.Correlate != nil {
				return d.Err("correlate given twice")
			}
			a.Correlate = new(Correlate)
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for i := 0; i < len(args); i++ {
				switch args[i] {
				case "off":
					a.Correlate.Off = true
				case "window":
					if i+1 >= len(args) {
						return d.Err("correlate: window needs a duration")
					}
					dur, err := caddy.ParseDuration(args[i+1])
					if err != nil || dur <= 0 {
						return d.Errf("correlate: window: invalid duration %q", args[i+1])
					}
					a.Correlate.Window = caddy.Duration(dur)
					i++
				default:
					a.Correlate.By = append(a.Correlate.By, args[i])
				}
			}
			if _, err := a.Correlate.correlation(); err != nil {
				return d.Errf("%v", err)
			}
		case "channel":
			c, err := parseChannel(d)
			if err != nil {
				return err
			}
			for _, o := range a.Channels {
				if o.Name == c.Name {
					return d.Errf("channel %q defined twice", c.Name)
				}
			}
			a.Channels = append(a.Channels, c)
		case "alert":
			alertAt = append(alertAt, d.Token())
			r, err := parseAlert(d)
			if err != nil {
				return err
			}
			for _, o := range a.Alerts {
				if o.ID == r.ID {
					return d.Errf("alert %q: id %q is also the id of alert %q", r.Name, r.ID, o.Name)
				}
			}
			a.Alerts = append(a.Alerts, r)
		default:
			return d.Errf("unrecognized vigil option %q", opt)
		}
	}
	channels := map[string]bool{}
	for _, c := range a.Channels {
		channels[c.Name] = true
	}
	for i, r := range a.Alerts {
		for _, n := range r.Notify {
			if !channels[n] {
				return errAtToken(alertAt[i], "alert %q: notify: no channel named %q in this vigil block", r.Name, n)
			}
		}
		if err := a.checkEmailUser(&r); err != nil {
			return errAtToken(alertAt[i], "alert %q: %v in this vigil block", r.Name, err)
		}
	}
	return nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	opt := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return 0, d.Errf("%s: invalid duration %q: %v", opt, d.Val(), err)
	}
	if dur <= 0 {
		return 0, d.Errf("%s: duration must be positive, got %q", opt, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return caddy.Duration(dur), nil
}

func positiveIntArg(d *caddyfile.Dispenser) (int, error) {
	opt := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n <= 0 {
		return 0, d.Errf("%s: want a positive integer, got %q", opt, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return n, nil
}

func parseHandlerDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	vigil {
//		identify   user|company|key <placeholder or value>
//		endpoint   <template>...
//		block      user|company|key|ip|cidr <value>...
//		rate_limit user|company|key|ip|endpoint <n>/<unit> [burst <n>] [name <name>]
//		quota      user|company|key|ip <n>/day|month [timezone <zone>] [name <name>]
//		upstream   <name>
//		scope      <name>
//	}
//
// identify may be given once per kind; endpoint, block, rate_limit and quota repeat.
// block ip also takes CIDR ranges.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "identify":
			if err := h.parseIdentify(d); err != nil {
				return err
			}
		case "endpoint":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if _, err := endpoint.Compile(append(append([]string(nil), h.Endpoints...), args...)); err != nil {
				return d.Errf("endpoint: %v", err)
			}
			h.Endpoints = append(h.Endpoints, args...)
		case "block":
			if err := h.parseBlock(d); err != nil {
				return err
			}
		case "rate_limit":
			if err := h.parseRateLimit(d); err != nil {
				return err
			}
		case "quota":
			if err := h.parseQuota(d); err != nil {
				return err
			}
		case "upstream":
			if h.Upstream != "" {
				return d.Err("upstream given twice")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Upstream = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "scope":
			if h.Scope != "" {
				return d.Err("scope given twice")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Scope = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized vigil subdirective %q", d.Val())
		}
	}
	return nil
}

func (h *Handler) parseIdentify(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	kind := d.Val()
	if !d.NextArg() {
		return d.Errf("identify %s: missing the value (a placeholder such as {http.request.header.X-User-Id})", kind)
	}
	val := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if h.Identify == nil {
		h.Identify = new(Identify)
	}
	var dst *string
	switch kind {
	case "user":
		dst = &h.Identify.User
	case "company":
		dst = &h.Identify.Company
	case "key":
		dst = &h.Identify.Key
	default:
		return d.Errf("identify: unknown kind %q (want user, company or key)", kind)
	}
	if *dst != "" {
		return d.Errf("identify %s given twice", kind)
	}
	*dst = val
	return nil
}

func (h *Handler) parseBlock(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	kind, err := blocklist.ParseKind(d.Val())
	if err != nil {
		return d.Errf("block: %v", err)
	}
	vals := d.RemainingArgs()
	if len(vals) == 0 {
		return d.Errf("block %s: no values", kind)
	}
	check := new(blocklist.List)
	for _, v := range vals {
		k := kind
		if k == blocklist.IP && strings.Contains(v, "/") {
			k = blocklist.CIDR
		}
		if err := check.Add(blocklist.Entry{Kind: k, Value: v}); err != nil {
			return d.Errf("block %s: %v", kind, err)
		}
		h.Block = append(h.Block, BlockRule{Kind: string(k), Value: v})
	}
	return nil
}

func (h *Handler) parseRateLimit(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 2 {
		return d.Errf("rate_limit: want <kind> <n>/<unit> [burst <n>] [name <name>], got %d arguments", len(args))
	}
	rl := RateLimit{Key: args[0], Rate: args[1]}
	if !validLimitKey(rl.Key, true) {
		return d.Errf("rate_limit: unknown kind %q (want user, company, key, ip or endpoint)", rl.Key)
	}
	if _, err := limit.ParseRate(rl.Rate); err != nil {
		return d.Errf("rate_limit %s: %v", rl.Key, err)
	}
	for i := 2; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return d.Errf("rate_limit %s: %s needs a value", rl.Key, args[i])
		}
		switch args[i] {
		case "burst":
			n, err := strconv.ParseInt(args[i+1], 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("rate_limit %s: burst: want a positive integer, got %q", rl.Key, args[i+1])
			}
			rl.Burst = n
		case "name":
			rl.Name = args[i+1]
		default:
			return d.Errf("rate_limit %s: unknown option %q (want burst or name)", rl.Key, args[i])
		}
	}
	h.RateLimits = append(h.RateLimits, rl)
	return nil
}

func (h *Handler) parseQuota(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 2 {
		return d.Errf("quota: want <kind> <n>/day|month [timezone <zone>] [name <name>], got %d arguments", len(args))
	}
	q := Quota{Key: args[0], Limit: args[1]}
	if !validLimitKey(q.Key, false) {
		return d.Errf("quota: unknown kind %q (want user, company, key or ip)", q.Key)
	}
	if _, err := limit.ParseQuota(q.Limit); err != nil {
		return d.Errf("quota %s: %v", q.Key, err)
	}
	for i := 2; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return d.Errf("quota %s: %s needs a value", q.Key, args[i])
		}
		switch args[i] {
		case "timezone":
			if _, err := time.LoadLocation(args[i+1]); err != nil {
				return d.Errf("quota %s: timezone %q: %v", q.Key, args[i+1], err)
			}
			q.Timezone = args[i+1]
		case "name":
			q.Name = args[i+1]
		default:
			return d.Errf("quota %s: unknown option %q (want timezone or name)", q.Key, args[i])
		}
	}
	h.Quotas = append(h.Quotas, q)
	return nil
}

func validLimitKey(k string, endpointOK bool) bool {
	switch k {
	case "user", "company", "key", "ip":
		return true
	case "endpoint":
		return endpointOK
	}
	return false
}

// Interface guards.
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*App)(nil)
)
