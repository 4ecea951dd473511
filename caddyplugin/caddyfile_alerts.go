package caddyplugin

import (
	"errors"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/rules"
	"github.com/vigilgw/vigil/notifier"
)

// parseChannel parses one channel line of the global vigil block. Syntax:
//
//	channel <name> <type> [<url or routing key>] [{
//		url         <url>
//		secret      <secret>            # webhook: Standard Webhooks signing
//		format      alertmanager        # webhook: Alertmanager's payload
//		routing_key <key>               # pagerduty
//		smtp        <host:port>         # email
//		username    <user>
//		password    <password>
//		from        <address or number>
//		to          <address or number>...
//		tls         starttls|implicit|none
//		account     <sid>               # sms
//		token       <token>
//		keep_alive  <duration>          # alertmanager
//		queue_size  <n>
//		timeout     <duration>
//		max_attempts <n>
//		max_age     <duration>
//	}]
//
// The argument after the type is the URL (webhook, slack, alertmanager) or the routing
// key (pagerduty). Secrets should be {env.NAME} placeholders, resolved when the config is
// loaded and never shown.
func parseChannel(d *caddyfile.Dispenser) (notifier.Config, error) {
	var c notifier.Config
	args := d.RemainingArgs()
	if len(args) < 2 || len(args) > 3 {
		return c, d.Errf("channel: want <name> <type> [<url or key>], got %d arguments", len(args))
	}
	c.Name, c.Type = args[0], args[1]
	if len(args) == 3 {
		switch c.Type {
		case notifier.TypePagerDuty:
			c.RoutingKey = args[2]
		case notifier.TypeWebhook, notifier.TypeSlack, notifier.TypeAlertmanager:
			c.URL = args[2]
		default:
			return c, d.Errf("channel %s: a %s channel takes its settings in a block, not %q", c.Name, c.Type, args[2])
		}
	}
	str := func(dst *string) error {
		if *dst != "" {
			return d.Errf("channel %s: %s given twice", c.Name, d.Val())
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		*dst = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		return nil
	}
	queue := func() *notifier.QueueConfig {
		if c.Queue == nil {
			c.Queue = new(notifier.QueueConfig)
		}
		return c.Queue
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch opt := d.Val(); opt {
		case "url":
			err = str(&c.URL)
		case "secret":
			err = str(&c.Secret)
		case "format":
			err = str(&c.Format)
		case "routing_key":
			err = str(&c.RoutingKey)
		case "smtp":
			err = str(&c.SMTP)
		case "username":
			err = str(&c.Username)
		case "password":
			err = str(&c.Password)
		case "from":
			err = str(&c.From)
		case "tls":
			err = str(&c.TLS)
		case "account":
			err = str(&c.Account)
		case "token":
			err = str(&c.Token)
		case "to":
			vals := d.RemainingArgs()
			if len(vals) == 0 {
				return c, d.ArgErr()
			}
			c.To = append(c.To, vals...)
		case "keep_alive":
			var dur notifier.Duration
			if dur, err = notifierDuration(d); err == nil {
				c.KeepAlive = dur
			}
		case "timeout":
			var dur notifier.Duration
			if dur, err = notifierDuration(d); err == nil {
				queue().Timeout = dur
			}
		case "max_age":
			var dur notifier.Duration
			if dur, err = notifierDuration(d); err == nil {
				queue().MaxAge = dur
			}
		case "queue_size":
			var n int
			if n, err = positiveIntArg(d); err == nil {
				queue().Size = n
			}
		case "max_attempts":
			var n int
			if n, err = positiveIntArg(d); err == nil {
				queue().MaxAttempts = n
			}
		default:
			return c, d.Errf("channel %s: unrecognized option %q", c.Name, opt)
		}
		if err != nil {
			return c, err
		}
	}
	if err := c.Validate(); err != nil {
		return c, d.Errf("%v", err)
	}
	return c, nil
}

func notifierDuration(d *caddyfile.Dispenser) (notifier.Duration, error) {
	dur, err := durationArg(d)
	return notifier.Duration(dur), err
}

// parseAlert parses one alert block of the global vigil block into a rule. Syntax:
//
//	alert "<name>" {
//		id          <id>                       # default: derived from the name
//		metric      count|error_rate|success_rate|latency_avg|latency_p50|latency_p90|
//		            latency_p99|unique_users|percent_change
//		endpoint    <glob>                     # filter
//		method      <method>
//		status      <code, class or list>      # 401, 4xx, 400,404,405
//		user        <id>
//		company     <id>
//		key         <key or key id>
//		upstream    <name>
//		blocked     [true|false]
//		limited     [true|false]
//		group_by    user|company|key|endpoint|upstream|status|method...
//		window      <duration>                 # default 5m
//		above|below|at_least|at_most|equals <n> # comparator and threshold
//		comparator  >|>=|<|<=|==|!=
//		threshold   <n>
//		for         <duration>
//		min_calls   <n>
//		throttle    <duration>|once
//		notify      <channel>...
//		playbook    <url or text>
//		severity    critical|error|warning|info
//		resolve_below|resolve_above <n>        # hysteresis
//		compare     <duration>                 # percent_change: against this long ago
//		max_groups  <n>
//		description <text>
//		anomaly     slight|moderate|severe     # makes it an anomaly rule
//		direction   up|down|both
//		disabled
//	}
func parseAlert(d *caddyfile.Dispenser) (rules.Rule, error) {
	var r rules.Rule
	line := d.Line()
	if !d.NextArg() {
		return r, d.Err("alert: missing the name (alert \"401 storm\" { ... })")
	}
	r.Name = d.Val()
	if d.NextArg() {
		return r, d.ArgErr()
	}
	seen := map[string]bool{}
	one := func(dst *string) error {
		if !d.NextArg() {
			return d.ArgErr()
		}
		*dst = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		return nil
	}
	num := func() (*float64, error) {
		opt := d.Val()
		if !d.NextArg() {
			return nil, d.ArgErr()
		}
		v, err := strconv.ParseFloat(d.Val(), 64)
		if err != nil {
			return nil, d.Errf("alert %q: %s: %q is not a number", r.Name, opt, d.Val())
		}
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		return &v, nil
	}
	dur := func(dst *rules.Duration) error {
		opt := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		v, err := rules.ParseDuration(d.Val())
		if err != nil {
			return d.Errf("alert %q: %s: %v", r.Name, opt, err)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
		*dst = rules.Duration(v)
		return nil
	}
	boolArg := func(dst **bool) error {
		v := true
		if d.NextArg() {
			b, err := strconv.ParseBool(d.Val())
			if err != nil {
				return d.Errf("alert %q: %s: want true or false, got %q", r.Name, d.Val(), d.Val())
			}
			v = b
			if d.NextArg() {
				return d.ArgErr()
			}
		}
		*dst = &v
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] && opt != "notify" && opt != "group_by" {
			return r, d.Errf("alert %q: %s given twice", r.Name, opt)
		}
		seen[opt] = true
		var err error
		switch opt {
		case "id":
			err = one(&r.ID)
		case "type":
			err = one(&r.Type)
		case "metric":
			err = one(&r.Metric)
		case "endpoint":
			err = one(&r.Filter.Endpoint)
		case "method":
			err = one(&r.Filter.Method)
		case "status":
			err = one(&r.Filter.Status)
		case "user":
			err = one(&r.Filter.User)
		case "company":
			err = one(&r.Filter.Company)
		case "key":
			err = one(&r.Filter.Key)
		case "upstream":
			err = one(&r.Filter.Upstream)
		case "blocked":
			err = boolArg(&r.Filter.Blocked)
		case "limited":
			err = boolArg(&r.Filter.Limited)
		case "group_by":
			vals := d.RemainingArgs()
			if len(vals) == 0 {
				return r, d.ArgErr()
			}
			r.GroupBy = append(r.GroupBy, vals...)
		case "window":
			err = dur(&r.Window)
		case "for":
			err = dur(&r.For)
		case "compare":
			err = dur(&r.Compare)
		case "above", "below", "at_least", "at_most", "equals", "not_equals":
			if r.Threshold != nil {
				return r, d.Errf("alert %q: more than one threshold", r.Name)
			}
			r.Comparator = map[string]string{"above": ">", "below": "<", "at_least": ">=", "at_most": "<=", "equals": "==", "not_equals": "!="}[opt]
			r.Threshold, err = num()
		case "threshold":
			if r.Threshold != nil {
				return r, d.Errf("alert %q: more than one threshold", r.Name)
			}
			r.Threshold, err = num()
		case "comparator":
			err = one(&r.Comparator)
		case "resolve_below":
			r.ResolveBelow, err = num()
		case "resolve_above":
			r.ResolveAbove, err = num()
		case "min_calls", "max_groups":
			var n int
			if n, err = positiveIntArg(d); err == nil {
				if opt == "min_calls" {
					r.MinCalls = n
				} else {
					r.MaxGroups = n
				}
			}
		case "throttle":
			var s string
			if err = one(&s); err == nil {
				if r.Throttle, err = rules.ParseThrottle(s); err != nil {
					err = d.Errf("alert %q: throttle: %v", r.Name, err)
				}
			}
		case "notify":
			vals := d.RemainingArgs()
			if len(vals) == 0 {
				return r, d.ArgErr()
			}
			r.Notify = append(r.Notify, vals...)
		case "playbook":
			err = one(&r.Playbook)
		case "severity":
			err = one(&r.Severity)
		case "description":
			err = one(&r.Description)
		case "anomaly":
			r.Type = rules.TypeAnomaly
			err = one(&r.Sensitivity)
		case "sensitivity":
			err = one(&r.Sensitivity)
		case "direction":
			err = one(&r.Direction)
		case "disabled":
			if d.NextArg() {
				return r, d.ArgErr()
			}
			off := false
			r.Enabled = &off
		default:
			return r, d.Errf("alert %q: unrecognized option %q", r.Name, opt)
		}
		if err != nil {
			return r, err
		}
	}
	r.Normalize()
	if err := r.Validate(); err != nil {
		var fe *detector.FieldError
		if errors.As(err, &fe) {
			return r, d.Errf("alert %q (line %d): %s: %v", r.Name, line, caddyfileName(fe.Field), fe.Err)
		}
		return r, d.Errf("alert %q (line %d): %v", r.Name, line, err)
	}
	return r, nil
}

// caddyfileName turns a rule's JSON field name into the Caddyfile option users wrote.
func caddyfileName(field string) string {
	if f, ok := strings.CutPrefix(field, "filter."); ok {
		return f
	}
	if field == "threshold" {
		return "threshold (above, below, at_least, at_most or equals)"
	}
	return field
}
