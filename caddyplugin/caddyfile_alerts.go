package caddyplugin

import (
	"errors"
	"fmt"
	htmltemplate "html/template"
	"strconv"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
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
//		notify      <channel>...
//		playbook    <url or text>
//		severity    critical|error|warning|info # default warning (info for cohorts)
//		description <text>
//		disabled
//
//		# static rules (the default)
//		metric      count|error_rate|success_rate|latency_avg|latency_p50|latency_p90|
//		            latency_p99|unique_users|percent_change|absent
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
//		above|below|at_least|at_most|equals|not_equals <n> # comparator and threshold
//		comparator  >|>=|<|<=|==|!=
//		threshold   <n>
//		for         <duration>
//		min_calls   <n>
//		throttle    <duration>|once
//		resolve_below|resolve_above <n>        # hysteresis
//		compare     <duration>                 # percent_change: against this long ago
//		max_groups  <n>
//
//		# anomaly rules: the filter, group_by and the options above, and
//		anomaly     slight|moderate|severe     # makes it an anomaly rule
//		direction   up|down|both
//
//		# cohort rules
//		cohort      [user|company]             # makes it a cohort rule (of users by default)
//		match {                                # who the members are
//			created_after     <-28d or RFC 3339 time>
//			created_before    <-7d or RFC 3339 time>
//			plan              <plan>
//			company           <company id>
//			ttfhw_over        <duration>
//			ttfhw_under       <duration>
//			attributes.<NAME> <value>
//		}
//		behavior {                             # what they did
//			window    <duration>             # required, up to 35d
//			at_least|at_most <n>             # exactly one
//			metric    count                  # the default and only one
//			endpoint|method|status|upstream|blocked|limited <value>  # calls counted
//		}
//		email_user [<channel>] {               # the e-mail each member gets on entering
//			channel       <email channel>
//			template      <file or inline text/template>
//			html_template <file or inline html/template>
//			subject       <text>
//			cc            <address>...
//			bcc           <address>...
//		}
//		repeat      never|<duration>           # default never
//	}
//
// type static|anomaly|cohort and entity user|company are also accepted, as in JSON. The
// options of static and anomaly rules are errors in a cohort rule and the other way round.
// A cohort template is inline when it holds "{{" or several lines (a backtick string or a
// heredoc), else the path of a file read when the config starts; inline ones are parsed
// here, so a syntax error fails with its line. The Caddyfile reads "{$" as the start of
// an environment variable, so write Go template variables with a space ("{{ $x }}") or
// keep such templates in a file. Subject, cc and bcc keep {user.FIELD} and
// {user.attributes.NAME} placeholders as written, for the cohort engine to fill for each
// member; cc and bcc take several addresses, joined with ", ".
func parseAlert(d *caddyfile.Dispenser) (rules.Rule, error) {
	p := &ruleParser{d: d, start: d.Token(), seen: map[string]bool{}, at: map[string]caddyfile.Token{}}
	if !d.NextArg() {
		return p.r, d.Err("alert: missing the name (alert \"401 storm\" { ... })")
	}
	p.r.Name = d.Val()
	if d.NextArg() {
		return p.r, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := p.option(); err != nil {
			return p.r, err
		}
	}
	if err := p.checkType(); err != nil {
		return p.r, err
	}
	p.r.Normalize()
	if err := p.r.Validate(); err != nil {
		return p.r, p.validationErr(err)
	}
	return p.r, nil
}

// ruleParser reads one alert block. It remembers the token of every subdirective, so
// that an option that does not fit the rule's type, or a field that fails validation, is
// reported at the line where it was written.
type ruleParser struct {
	d     *caddyfile.Dispenser
	r     rules.Rule
	start caddyfile.Token // the alert token

	seen  map[string]bool // top-level subdirectives given
	order []caddyfile.Token
	at    map[string]caddyfile.Token // JSON field path -> the subdirective that set it
}

// errf reports an error about the rule at the current token.
func (p *ruleParser) errf(format string, args ...any) error {
	return p.d.Errf("alert %q: %s", p.r.Name, fmt.Sprintf(format, args...))
}

// errAt reports an error about the rule at the line of tok.
func (p *ruleParser) errAt(tok caddyfile.Token, format string, args ...any) error {
	return errAtToken(tok, "alert %q: %s", p.r.Name, fmt.Sprintf(format, args...))
}

// errAtToken returns an error that ends with the file and line of tok (and its import
// chain), as the dispenser's own errors do.
func errAtToken(tok caddyfile.Token, format string, args ...any) error {
	d := caddyfile.NewDispenser([]caddyfile.Token{tok})
	d.Next()
	return d.Errf(format, args...)
}

// mark records that the current subdirective sets field (a JSON path such as
// "behavior.window").
func (p *ruleParser) mark(field string) { p.at[field] = p.d.Token() }

// label names field as the user wrote it, for messages: "window", "behavior: window".
func label(field string) string {
	field = caddyfileName(field)
	if f, ok := strings.CutPrefix(field, "behavior."); ok {
		return "behavior: " + f
	}
	return field
}

// one reads the single argument of the current subdirective into dst, which it marks as
// field.
func (p *ruleParser) one(field string, dst *string) error {
	p.mark(field)
	if !p.d.NextArg() {
		return p.d.ArgErr()
	}
	*dst = p.d.Val()
	if p.d.NextArg() {
		return p.d.ArgErr()
	}
	return nil
}

func (p *ruleParser) num(field string) (*float64, error) {
	p.mark(field)
	opt := p.d.Val() // above, below... set the threshold
	if !p.d.NextArg() {
		return nil, p.d.ArgErr()
	}
	v, err := strconv.ParseFloat(p.d.Val(), 64)
	if err != nil {
		return nil, p.errf("%s: %q is not a number", opt, p.d.Val())
	}
	if p.d.NextArg() {
		return nil, p.d.ArgErr()
	}
	return &v, nil
}

// count reads a number of calls: a non-negative integer.
func (p *ruleParser) count(field string) (*int64, error) {
	p.mark(field)
	opt := label(field)
	if !p.d.NextArg() {
		return nil, p.d.ArgErr()
	}
	v, err := strconv.ParseInt(p.d.Val(), 10, 64)
	if err != nil || v < 0 {
		return nil, p.errf("%s: %q is not a number of calls (an integer, 0 or more)", opt, p.d.Val())
	}
	if p.d.NextArg() {
		return nil, p.d.ArgErr()
	}
	return &v, nil
}

// dur reads a duration ("15m", "7d", "4w"); a bad first argument is reported as such
// before any extra ones ("window 3 days").
func (p *ruleParser) dur(field string, dst *rules.Duration) error {
	p.mark(field)
	opt := label(field)
	if !p.d.NextArg() {
		return p.d.ArgErr()
	}
	v, err := rules.ParseDuration(p.d.Val())
	if err != nil {
		return p.errf("%s: %v", opt, err)
	}
	if p.d.NextArg() {
		return p.d.ArgErr()
	}
	*dst = rules.Duration(v)
	return nil
}

func (p *ruleParser) boolArg(field string, dst **bool) error {
	p.mark(field)
	v := true
	if p.d.NextArg() {
		b, err := strconv.ParseBool(p.d.Val())
		if err != nil {
			return p.errf("%s: want true or false, got %q", label(field), p.d.Val())
		}
		v = b
		if p.d.NextArg() {
			return p.d.ArgErr()
		}
	}
	*dst = &v
	return nil
}

// filter reads one filter subdirective (endpoint, method, status, user, company, key,
// upstream, blocked, limited) into f; prefix is the filter's JSON path.
func (p *ruleParser) filter(f *detector.Filter, prefix, opt string) error {
	field := prefix + opt
	switch opt {
	case "endpoint":
		return p.one(field, &f.Endpoint)
	case "method":
		return p.one(field, &f.Method)
	case "status":
		return p.one(field, &f.Status)
	case "user":
		return p.one(field, &f.User)
	case "company":
		return p.one(field, &f.Company)
	case "key":
		return p.one(field, &f.Key)
	case "upstream":
		return p.one(field, &f.Upstream)
	case "blocked":
		return p.boolArg(field, &f.Blocked)
	case "limited":
		return p.boolArg(field, &f.Limited)
	}
	return p.errf("unrecognized filter option %q", opt)
}

// setType sets the rule's type once (type, anomaly and cohort all set it).
func (p *ruleParser) setType(t string) error {
	if p.r.Type != "" && p.r.Type != t {
		return p.errf("%s: the rule is already of type %s (line %d)", p.d.Val(), p.r.Type, p.at["type"].Line)
	}
	p.r.Type = t
	p.mark("type")
	return nil
}

func (p *ruleParser) setEntity(opt, e string) error {
	if p.r.Entity != "" {
		return p.errf("entity given twice (also line %d)", p.at["entity"].Line)
	}
	if e != "user" && e != "company" {
		return p.errf("%s: %q: want user or company", opt, e)
	}
	p.r.Entity = e
	p.mark("entity")
	return nil
}

// option parses one subdirective of the alert block.
func (p *ruleParser) option() error {
	d, r := p.d, &p.r
	opt := d.Val()
	if p.seen[opt] && opt != "notify" && opt != "group_by" {
		return p.errf("%s given twice", opt)
	}
	if !p.seen[opt] {
		p.seen[opt] = true
		p.order = append(p.order, d.Token())
	}
	switch opt {
	case "id":
		return p.one("id", &r.ID)
	case "type":
		var t string
		if err := p.one("type", &t); err != nil {
			return err
		}
		return p.setType(t)
	case "metric":
		return p.one("metric", &r.Metric)
	case "endpoint", "method", "status", "user", "company", "key", "upstream", "blocked", "limited":
		return p.filter(&r.Filter, "filter.", opt)
	case "group_by":
		p.mark("group_by")
		vals := d.RemainingArgs()
		if len(vals) == 0 {
			return d.ArgErr()
		}
		r.GroupBy = append(r.GroupBy, vals...)
	case "window":
		return p.dur("window", &r.Window)
	case "for":
		return p.dur("for", &r.For)
	case "compare":
		return p.dur("compare", &r.Compare)
	case "above", "below", "at_least", "at_most", "equals", "not_equals", "threshold":
		if r.Threshold != nil {
			return p.errf("more than one threshold (also line %d)", p.at["threshold"].Line)
		}
		if opt != "threshold" {
			p.mark("comparator")
			r.Comparator = map[string]string{"above": ">", "below": "<", "at_least": ">=", "at_most": "<=", "equals": "==", "not_equals": "!="}[opt]
		}
		var err error
		r.Threshold, err = p.num("threshold")
		return err
	case "comparator":
		return p.one("comparator", &r.Comparator)
	case "resolve_below", "resolve_above":
		n, err := p.num(opt)
		if opt == "resolve_below" {
			r.ResolveBelow = n
		} else {
			r.ResolveAbove = n
		}
		return err
	case "min_calls", "max_groups":
		p.mark(opt)
		n, err := positiveIntArg(d)
		if opt == "min_calls" {
			r.MinCalls = n
		} else {
			r.MaxGroups = n
		}
		return err
	case "throttle":
		var s string
		if err := p.one("throttle", &s); err != nil {
			return err
		}
		var err error
		if r.Throttle, err = rules.ParseThrottle(s); err != nil {
			return p.errf("throttle: %v", err)
		}
	case "notify":
		p.mark("notify")
		vals := d.RemainingArgs()
		if len(vals) == 0 {
			return d.ArgErr()
		}
		r.Notify = append(r.Notify, vals...)
	case "playbook":
		return p.one("playbook", &r.Playbook)
	case "severity":
		if err := p.one("severity", &r.Severity); err != nil {
			return err
		}
		switch r.Severity {
		case alert.SeverityCritical, alert.SeverityError, alert.SeverityWarning, alert.SeverityInfo:
		default:
			return p.errf("severity: %q: want critical, error, warning or info", r.Severity)
		}
	case "description":
		return p.one("description", &r.Description)
	case "anomaly":
		if err := p.setType(rules.TypeAnomaly); err != nil {
			return err
		}
		return p.one("sensitivity", &r.Sensitivity)
	case "sensitivity":
		return p.one("sensitivity", &r.Sensitivity)
	case "direction":
		return p.one("direction", &r.Direction)
	case "disabled":
		p.mark("enabled")
		if d.NextArg() {
			return d.ArgErr()
		}
		off := false
		r.Enabled = &off
	case "cohort":
		if err := p.setType(rules.TypeCohort); err != nil {
			return err
		}
		if d.NextArg() {
			if err := p.setEntity(opt, d.Val()); err != nil {
				return err
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		}
	case "entity":
		if !d.NextArg() {
			return d.ArgErr()
		}
		if err := p.setEntity(opt, d.Val()); err != nil {
			return err
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	case "match":
		return p.match()
	case "behavior":
		return p.behavior()
	case "email_user":
		return p.emailUser()
	case "repeat":
		if err := p.one("repeat", &r.Repeat); err != nil {
			return err
		}
		if r.Repeat != "never" {
			if v, err := rules.ParseDuration(r.Repeat); err != nil || v <= 0 {
				return p.errf("repeat: %q: want never or a positive duration", r.Repeat)
			}
		}
	default:
		return p.errf("unrecognized option %q", opt)
	}
	return nil
}

// cohortOnly are the subdirectives only cohort rules take.
var cohortOnly = map[string]bool{"match": true, "behavior": true, "email_user": true, "repeat": true, "entity": true}

// notInCohort are the subdirectives cohort rules do not take, with a hint of what to
// write instead.
var notInCohort = map[string]string{
	"metric": "count is the only cohort metric; put it inside behavior { }",
	"window": "put it inside behavior { }", "at_least": "put it inside behavior { }", "at_most": "put it inside behavior { }",
	"endpoint": "filter the calls counted inside behavior { }", "method": "filter the calls counted inside behavior { }",
	"status": "filter the calls counted inside behavior { }", "upstream": "filter the calls counted inside behavior { }",
	"blocked": "filter the calls counted inside behavior { }", "limited": "filter the calls counted inside behavior { }",
	"company":  "select the members of a company with match { company <id> }",
	"user":     "a cohort counts each member's own calls",
	"key":      "a cohort counts each member's own calls",
	"throttle": "a cohort acts once per member; use repeat",
}

// checkType rejects the subdirectives that do not belong to the rule's type, at the line
// where each was written.
func (p *ruleParser) checkType() error {
	typ := p.r.Type
	if typ == "" {
		typ = rules.TypeStatic
	}
	for _, tok := range p.order {
		opt := tok.Text
		switch {
		case typ == rules.TypeCohort:
			if hint, bad := notInCohort[opt]; bad {
				return p.errAt(tok, "%s is not an option of cohort rules: %s", opt, hint)
			}
			switch opt {
			case "group_by", "for", "compare", "above", "below", "equals", "not_equals", "threshold", "comparator",
				"resolve_below", "resolve_above", "min_calls", "max_groups", "anomaly", "sensitivity", "direction":
				return p.errAt(tok, "%s is not an option of cohort rules, only of static and anomaly rules", opt)
			}
		case cohortOnly[opt]:
			return p.errAt(tok, "%s is only for cohort rules (add \"cohort user\" to the block), not %s rules", opt, typ)
		}
	}
	return nil
}

// match parses a cohort's match block.
func (p *ruleParser) match() error {
	d := p.d
	p.mark("match")
	if d.NextArg() {
		return d.ArgErr()
	}
	p.r.Match = map[string]string{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		switch {
		case key == "created_after", key == "created_before", key == "plan", key == "company",
			key == "ttfhw_over", key == "ttfhw_under":
		case strings.HasPrefix(key, "attributes.") && len(key) > len("attributes."):
		default:
			return p.errf("match: unrecognized condition %q (want created_after, created_before, plan, company, ttfhw_over, ttfhw_under or attributes.NAME)", key)
		}
		if _, dup := p.r.Match[key]; dup {
			return p.errf("match: %s given twice", key)
		}
		var v string
		if err := p.one("match."+key, &v); err != nil {
			return err
		}
		switch key {
		case "created_after", "created_before":
			if _, err := rules.ParseRelativeTime(v, time.Now()); err != nil {
				return p.errf("match: %s: %v", key, err)
			}
		case "ttfhw_over", "ttfhw_under":
			if dur, err := rules.ParseDuration(v); err != nil || dur <= 0 {
				return p.errf("match: %s: %q is not a positive duration", key, v)
			}
		}
		p.r.Match[key] = v
	}
	if len(p.r.Match) == 0 {
		return p.errAt(p.at["match"], "match: no condition (want created_after, created_before, plan, company, ttfhw_over, ttfhw_under or attributes.NAME in the block)")
	}
	return nil
}

// behavior parses a cohort's behavior block.
func (p *ruleParser) behavior() error {
	d := p.d
	p.mark("behavior")
	if d.NextArg() {
		return d.ArgErr()
	}
	b := new(rules.Behavior)
	p.r.Behavior = b
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return p.errf("behavior: %s given twice", opt)
		}
		seen[opt] = true
		var err error
		switch opt {
		case "metric":
			err = p.one("behavior.metric", &b.Metric)
		case "window":
			err = p.dur("behavior.window", &b.Window)
		case "at_least", "at_most":
			if b.AtLeast != nil || b.AtMost != nil {
				return p.errf("behavior: at_least and at_most together: give one of them")
			}
			if opt == "at_least" {
				b.AtLeast, err = p.count("behavior.at_least")
			} else {
				b.AtMost, err = p.count("behavior.at_most")
			}
		case "endpoint", "method", "status", "upstream", "blocked", "limited":
			err = p.filter(&b.Filter, "behavior.filter.", opt)
		case "user", "company", "key":
			return p.errf("behavior: %s: a cohort counts each member's own calls (select members with match { } instead)", opt)
		default:
			return p.errf("behavior: unrecognized option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// emailUser parses a cohort's email_user block.
func (p *ruleParser) emailUser() error {
	d := p.d
	p.mark("email_user")
	e := new(rules.EmailUser)
	p.r.EmailUser = e
	if d.NextArg() {
		p.mark("email_user.channel")
		e.Channel = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] || (opt == "channel" && e.Channel != "") {
			return p.errf("email_user: %s given twice", opt)
		}
		seen[opt] = true
		var err error
		switch opt {
		case "channel":
			err = p.one("email_user.channel", &e.Channel)
		case "subject":
			err = p.one("email_user.subject", &e.Subject)
		case "template", "html_template":
			dst := &e.Template
			if opt == "html_template" {
				dst = &e.HTMLTemplate
			}
			if err = p.one("email_user."+opt, dst); err == nil {
				if terr := checkInlineTemplate(*dst, opt == "html_template"); terr != nil {
					err = p.errf("email_user: %s: %v", opt, terr)
				}
			}
		case "cc", "bcc":
			p.mark("email_user." + opt)
			vals := d.RemainingArgs()
			if len(vals) == 0 {
				return d.ArgErr()
			}
			if opt == "cc" {
				e.Cc = strings.Join(vals, ", ")
			} else {
				e.Bcc = strings.Join(vals, ", ")
			}
		default:
			return p.errf("email_user: unrecognized option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkInlineTemplate parses an inline template (one with "{{" or several lines, as the
// cohort engine tells them from file paths), so that a syntax error fails at adapt time
// with the Caddyfile line. Files are read when the config starts.
func checkInlineTemplate(src string, html bool) error {
	if !strings.Contains(src, "{{") && !strings.Contains(src, "\n") {
		return nil
	}
	var err error
	if html {
		_, err = htmltemplate.New("html_template").Parse(src)
	} else {
		_, err = texttemplate.New("template").Parse(src)
	}
	return err
}

// validationErr reports a rule that fails validation at the line of the subdirective that
// set the field in error (or of the alert itself).
func (p *ruleParser) validationErr(err error) error {
	var fe *detector.FieldError
	if !errors.As(err, &fe) {
		return p.errAt(p.start, "%v", err)
	}
	tok := p.start
	for f := fe.Field; f != ""; {
		if t, ok := p.at[f]; ok {
			tok = t
			break
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return p.errAt(tok, "%s: %v", caddyfileName(fe.Field), fe.Err)
}

// caddyfileName turns a rule's JSON field name into the Caddyfile option users wrote.
func caddyfileName(field string) string {
	if f, ok := strings.CutPrefix(field, "filter."); ok {
		return f
	}
	if f, ok := strings.CutPrefix(field, "behavior.filter"); ok {
		return "behavior" + f
	}
	if field == "threshold" {
		return "threshold (above, below, at_least, at_most or equals)"
	}
	return field
}
