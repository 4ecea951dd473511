package cohort

import (
	"bytes"
	"errors"
	"fmt"
	htemplate "html/template"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	ttemplate "text/template"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
	"github.com/vigilgw/vigil/detector/rules"
)

// Engine evaluates cohort rules: every Evaluate it works out each rule's members (users
// or companies matching the rule's conditions on who they are and what they did) and
// acts once per member as it enters: e-mails the user (through an email channel) and
// notifies the rule's channels. Members' entry times and the members acted on are kept
// (and exported for snapshots), so that a restart does not e-mail anyone twice.
// Safe for concurrent use.
type Engine struct {
	store    *detector.Store
	registry *Registry
	logger   *slog.Logger

	mu       sync.Mutex
	rules    []*cohortRule
	optOut   map[string]bool
	notifier alert.Notifier
	history  *rules.History

	// beforeRender, when set (by tests), runs after the members are worked out and the
	// registry's lock released, before the e-mails are rendered.
	beforeRender func()
}

// NewEngine returns an engine over a store and a registry, recording events in history.
func NewEngine(store *detector.Store, reg *Registry, history *rules.History, logger *slog.Logger) *Engine {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Engine{store: store, registry: reg, logger: logger, history: history, optOut: map[string]bool{}}
}

// SetNotifier sets where events go.
func (e *Engine) SetNotifier(n alert.Notifier) {
	e.mu.Lock()
	e.notifier = n
	e.mu.Unlock()
}

type cohortRule struct {
	rule    rules.Rule
	fp      string
	counter *detector.CallerCounter // behaviour with a filter; nil: the caller history
	kind    detector.Dim
	text    *ttemplate.Template
	html    *htemplate.Template
	// state holds, per member id, when it entered (0: not a member now) and when the rule
	// last acted on it (0: never); ids with neither are not kept.
	state  members
	gen    uint32        // evaluation counter, to find who left
	warned bool          // the rule logged that it remembers no more members
	repeat time.Duration // 0: never again
	// counts holds, during an evaluation, the behaviour's count of every caller that has
	// one (others have zero), read once from the store for all candidates; cond the
	// match, compiled for the evaluation's time.
	counts *counts
	cond   conditions
}

// counts are the behaviour counts of one evaluation, shared by the rules with the same
// filter and window.
type counts struct{ m map[string]uint64 }

// countKey identifies a behaviour's counts within one evaluation: rules with the same
// filter and window share them.
type countKey struct {
	counter any // the counter's shared core, or the kind for the caller history
	window  time.Duration
}

// behaviorCounts reads the behaviour's count of every caller with calls in its window:
// one pass over the store's callers instead of a lookup per candidate.
func (e *Engine) behaviorCounts(c *cohortRule, now time.Time, cache map[countKey]*counts) *counts {
	b := c.rule.Behavior
	if b == nil {
		return nil
	}
	w := time.Duration(b.Window)
	k := countKey{counter: c.kind, window: w}
	if c.counter != nil {
		k.counter = c.counter.Shared()
	}
	if m, ok := cache[k]; ok {
		return m
	}
	m := map[string]uint64{}
	add := func(id string, n detector.CallerCounts) bool {
		m[id] = uint64(n.Calls)
		return true
	}
	if c.counter != nil {
		c.counter.EachCount(w, now, add)
	} else {
		e.store.EachCallerCount(c.kind, w, now, add)
	}
	cs := &counts{m: m}
	cache[k] = cs
	return cs
}

// memberState is compact: a million members cost tens of megabytes.
type memberState struct {
	entered, acted uint32 // Unix seconds
	seen           uint32 // the evaluation that last found it a member
}

// maxActed bounds the memory of members acted on, per rule.
const maxActed = 2 * DefaultMaxUsers

// SetRules replaces the cohort rules (rules of other types are ignored). A rule whose id
// and definition are unchanged keeps its members and the record of whom it acted on.
func (e *Engine) SetRules(rs []rules.Rule) error {
	var next []*cohortRule
	e.mu.Lock()
	old := map[string]*cohortRule{}
	for _, c := range e.rules {
		old[c.rule.ID] = c
	}
	e.mu.Unlock()
	for _, r := range rs {
		if r.Type != rules.TypeCohort {
			continue
		}
		fp := r.Fingerprint()
		if c, ok := old[r.ID]; ok && c.fp == fp {
			c.rule = r
			next = append(next, c)
			delete(old, r.ID)
			continue
		}
		c, err := e.compile(r, fp)
		if err != nil {
			for _, n := range next {
				if _, kept := old[n.rule.ID]; !kept && n.counter != nil {
					n.counter.Release()
				}
			}
			return fmt.Errorf("rule %q: %w", r.Name, err)
		}
		if prev, ok := old[r.ID]; ok {
			prev.state.each(func(id string, st *memberState) { // a changed rule does not e-mail the same people again
				if st.acted != 0 {
					c.state.setID(id, memberState{acted: st.acted})
				}
			})
		}
		next = append(next, c)
	}
	for _, c := range old {
		if c.counter != nil {
			c.counter.Release()
		}
	}
	e.mu.Lock()
	e.rules = next
	e.mu.Unlock()
	return nil
}

func (e *Engine) compile(r rules.Rule, fp string) (*cohortRule, error) {
	c := &cohortRule{rule: r, fp: fp, kind: detector.DimUser, state: newMembers()}
	if r.Entity == "company" {
		c.kind = detector.DimCompany
	}
	if r.Repeat != "" && r.Repeat != "never" {
		d, err := rules.ParseDuration(r.Repeat)
		if err != nil {
			return nil, &rules.FieldError{Field: "repeat", Err: err}
		}
		c.repeat = d
	}
	if b := r.Behavior; b != nil && b.Filter.Dims() != 0 {
		m, err := b.Filter.Compile()
		if err != nil {
			return nil, &rules.FieldError{Field: "behavior.filter", Err: err}
		}
		c.counter = e.store.CountCallers(c.kind, m)
	}
	if eu := r.EmailUser; eu != nil {
		if eu.Template != "" {
			src, err := templateSource(eu.Template)
			if err != nil {
				return nil, &rules.FieldError{Field: "email_user.template", Err: err}
			}
			if c.text, err = ttemplate.New("text").Option("missingkey=zero").Parse(src); err != nil {
				return nil, &rules.FieldError{Field: "email_user.template", Err: err}
			}
		}
		if eu.HTMLTemplate != "" {
			src, err := templateSource(eu.HTMLTemplate)
			if err != nil {
				return nil, &rules.FieldError{Field: "email_user.html_template", Err: err}
			}
			if c.html, err = htemplate.New("html").Option("missingkey=zero").Parse(src); err != nil {
				return nil, &rules.FieldError{Field: "email_user.html_template", Err: err}
			}
		}
	}
	return c, nil
}

// templateSource returns a template's text: the value itself when it holds an action or
// several lines, else the content of the file it names.
func templateSource(v string) (string, error) {
	if strings.Contains(v, "{{") || strings.Contains(v, "\n") {
		return v, nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%q is neither a template (no {{ }}) nor a file that exists", v)
		}
		return "", err
	}
	return string(b), nil
}

// Interval is the default time between two evaluations of cohort membership.
const Interval = time.Minute

// candidate is a possible member and what is known of it.
type candidate struct {
	id       string
	slot     int32  // registry slot; -1: not registered
	user     *entry // nil: not registered
	first    int64  // first call (Unix seconds), 0 when none
	first2xx int64
	store    *detector.Store
	kind     detector.Dim
	loaded   bool // first and first2xx read from the store
	// countsOf and count remember the candidate's behaviour count: rules that share
	// the counts read it once.
	countsOf *counts
	count    uint64
}

// calls reads the candidate's first call and first success when first needed.
func (cd *candidate) calls() {
	if !cd.loaded && cd.store != nil {
		cd.loaded = true
		cd.first, cd.first2xx, _ = cd.store.FirstCalls(cd.kind, cd.id)
	}
}

// Evaluate works out every rule's members at now and acts on those that entered. It
// holds the registry's read lock while it works out the members, so that an upsert
// waits for that, but not for the e-mails to render.
func (e *Engine) Evaluate(now time.Time) {
	e.store.Flush()
	e.mu.Lock()
	e.registry.mu.RLock()
	for _, c := range e.rules {
		c.state.sync(e.registry)
	}
	var outs []ruleOutput
	cache := map[countKey]*counts{}
	for _, kind := range []detector.Dim{detector.DimUser, detector.DimCompany} {
		var rs []*cohortRule
		for _, c := range e.rules {
			if c.rule.IsEnabled() && c.kind == kind {
				c.counts = e.behaviorCounts(c, now, cache)
				c.cond = compileMatch(c.rule.Match, now)
				rs = append(rs, c)
			}
		}
		if len(rs) > 0 {
			outs = append(outs, e.evaluate(rs, kind, now)...)
		}
	}
	e.registry.mu.RUnlock()
	if e.beforeRender != nil {
		e.beforeRender()
	}
	var events []alert.Event
	for _, o := range outs {
		if o.entered != nil {
			events = append(events, *o.entered)
		}
		for i := range o.mails {
			if ev, ok := e.mail(o.rule, &o.mails[i], now); ok {
				events = append(events, ev)
			}
		}
	}
	for _, c := range e.rules {
		c.counts = nil // the e-mails' figures read them too
	}
	n := e.notifier
	e.mu.Unlock()
	e.dispatch(n, events)
}

// ruleOutput is what one rule's evaluation acts on: the event of the members who
// entered, and the e-mails to those of them who get one, rendered once the registry's
// lock is released.
type ruleOutput struct {
	rule    *cohortRule
	entered *alert.Event
	mails   []candidate // detached from the registry: see detach
}

// detach returns a copy of the candidate that outlives the registry's lock: its user
// entry is copied (an upsert replaces entries, so the copy's slices stay as they are).
func (cd *candidate) detach() candidate {
	d := *cd
	if cd.user != nil {
		u := *cd.user
		d.user = &u
	}
	d.slot = -1
	return d
}

// conditions is a rule's match compiled for one evaluation.
type conditions struct {
	after, before         int64 // Unix seconds; 0: none
	hasAfter, hasBefore   bool
	plan, company         *string
	attrs                 [][2]string
	ttfhwOver, ttfhwUnder time.Duration // 0: none
}

func compileMatch(m map[string]string, now time.Time) conditions {
	var c conditions
	for k, v := range m {
		v := v
		switch {
		case k == "created_after":
			if t, err := rules.ParseRelativeTime(v, now); err == nil {
				c.after, c.hasAfter = t.Unix(), true
			}
		case k == "created_before":
			if t, err := rules.ParseRelativeTime(v, now); err == nil {
				c.before, c.hasBefore = t.Unix(), true
			}
		case k == "plan":
			c.plan = &v
		case k == "company":
			c.company = &v
		case strings.HasPrefix(k, "attributes."):
			c.attrs = append(c.attrs, [2]string{strings.TrimPrefix(k, "attributes."), v})
		case k == "ttfhw_over":
			c.ttfhwOver, _ = rules.ParseDuration(v)
		case k == "ttfhw_under":
			c.ttfhwUnder, _ = rules.ParseDuration(v)
		}
	}
	return c
}

// candidates calls fn for every possible member of a kind: registered users (or their
// companies), then callers seen in traffic only. The caller holds the registry's read
// lock.
func (e *Engine) candidates(kind detector.Dim, fn func(cd *candidate)) {
	companies := map[string]int64{}
	cd := new(candidate) // one for all: a candidate per user would be garbage per user
	if kind == detector.DimUser {
		e.registry.eachLocked(func(slot int32, id string, u *entry) {
			*cd = candidate{id: id, slot: slot, user: u, store: e.store, kind: kind}
			fn(cd)
		})
	} else {
		// Companies known to the registry, with the earliest sign-up of their users.
		e.registry.eachLocked(func(_ int32, _ string, u *entry) {
			if u.company == "" {
				return
			}
			if t, ok := companies[u.company]; !ok || (u.created != 0 && (t == 0 || u.created < t)) {
				companies[u.company] = u.created
			}
		})
		for id, created := range companies {
			*cd = candidate{id: id, slot: -1, user: &entry{created: created}, store: e.store, kind: kind}
			fn(cd)
		}
	}
	// Callers seen in traffic but not registered, known by id alone.
	var unregistered []candidate
	e.store.EachCaller(kind, func(id string, first, _, first2xx int64) bool {
		if id == detector.Anonymous {
			return true
		}
		if kind == detector.DimUser {
			if _, ok := e.registry.index[id]; ok {
				return true
			}
		}
		unregistered = append(unregistered, candidate{id: id, slot: -1, first: first, first2xx: first2xx, loaded: true})
		return true
	})
	for i := range unregistered {
		if _, known := companies[unregistered[i].id]; known {
			continue
		}
		fn(&unregistered[i])
	}
}

// start is when a candidate's clock for sign-up conditions starts: its sign-up time, or
// its first call when it is not registered (or registered without a time).
func (cd *candidate) start() int64 {
	if cd.user != nil && cd.user.created != 0 {
		return cd.user.created
	}
	cd.calls()
	return cd.first
}

// TTFHW returns a user's time to first hello world at now: from sign-up (or first call)
// to the first successful call, or the time so far when there is none yet; false when
// nothing is known of the user.
func (cd *candidate) ttfhw(now int64) (time.Duration, bool) {
	start := cd.start()
	if start == 0 {
		return 0, false
	}
	cd.calls()
	end := cd.first2xx
	if end == 0 {
		end = now
	}
	return time.Duration(max(end-start, 0)) * time.Second, true
}

func (e *Engine) matches(c *cohortRule, cd *candidate, now time.Time) bool {
	m := &c.cond
	if m.plan != nil && (cd.user == nil || cd.user.plan != *m.plan) {
		return false
	}
	if m.company != nil && (cd.user == nil || cd.user.company != *m.company) {
		return false
	}
	for _, a := range m.attrs {
		if cd.user == nil {
			return false
		}
		if got, ok := cd.user.attr(a[0]); !ok || got != a[1] {
			return false
		}
	}
	if m.hasAfter || m.hasBefore {
		start := cd.start()
		if start == 0 || (m.hasAfter && start < m.after) || (m.hasBefore && start > m.before) {
			return false
		}
	}
	if m.ttfhwOver > 0 || m.ttfhwUnder > 0 {
		t, ok := cd.ttfhw(now.Unix())
		if !ok || (m.ttfhwOver > 0 && t <= m.ttfhwOver) || (m.ttfhwUnder > 0 && t >= m.ttfhwUnder) {
			return false
		}
	}
	if b := c.rule.Behavior; b != nil {
		var n uint64
		if c.counts != nil && cd.countsOf == c.counts {
			n = cd.count
		} else {
			n = e.behaviorCount(c, cd.id, now)
			if c.counts != nil {
				cd.countsOf, cd.count = c.counts, n
			}
		}
		if b.AtLeast != nil && n < uint64(*b.AtLeast) {
			return false
		}
		if b.AtMost != nil && n > uint64(*b.AtMost) {
			return false
		}
	}
	return true
}

func (e *Engine) behaviorCount(c *cohortRule, id string, now time.Time) uint64 {
	if c.counts != nil {
		return c.counts.m[id]
	}
	w := time.Duration(c.rule.Behavior.Window)
	if c.counter != nil {
		return uint64(c.counter.CountApplied(id, w, now).Calls)
	}
	return uint64(e.store.CallerCountApplied(c.kind, id, w, now).Calls)
}

// evaluate works out the members of rules of one kind in one pass over the candidates.
func (e *Engine) evaluate(rs []*cohortRule, kind detector.Dim, now time.Time) []ruleOutput {
	mails := make([][]candidate, len(rs))
	entered := make([][]string, len(rs))
	t := uint32(now.Unix())
	for _, c := range rs {
		c.gen++
	}
	// Rules that need at least one matching call can only have members among the callers
	// with counts: they look at those alone. The others look at every candidate.
	var all, byCounts []int
	for i, c := range rs {
		if b := c.rule.Behavior; kind == detector.DimUser && b != nil && b.AtLeast != nil && *b.AtLeast > 0 {
			byCounts = append(byCounts, i)
		} else {
			all = append(all, i)
		}
	}
	visit := func(i int, cd *candidate) {
		c := rs[i]
		if !e.matches(c, cd, now) {
			return
		}
		p := c.state.lookup(cd.slot, cd.id)
		var st memberState
		if p != nil {
			p.seen = c.gen
			if p.entered != 0 {
				return // a member already
			}
			st = *p
		} else if c.state.full(cd.slot) {
			if !c.warned {
				c.warned = true
				e.logger.Warn("cohort rule has too many members to remember more", "rule", c.rule.ID, "max", maxActed)
			}
			return
		}
		st.seen, st.entered = c.gen, t
		if st.acted == 0 || (c.repeat > 0 && now.Sub(time.Unix(int64(st.acted), 0)) >= c.repeat) {
			st.acted = t
			entered[i] = append(entered[i], cd.id)
			switch {
			case c.rule.EmailUser == nil:
			case cd.user == nil || cd.user.email == "":
				e.logger.Debug("cohort e-mail not sent", "rule", c.rule.ID, "user", cd.id, "reason", "no registered e-mail address")
			default:
				mails[i] = append(mails[i], cd.detach())
			}
		}
		if p != nil {
			*p = st
		} else {
			c.state.put(cd.slot, cd.id, st)
		}
	}
	if len(all) > 0 {
		e.candidates(kind, func(cd *candidate) {
			for _, i := range all {
				visit(i, cd)
			}
		})
	}
	// Rules with the same counts share one pass over them.
	for len(byCounts) > 0 {
		cs := rs[byCounts[0]].counts
		var group, rest []int
		for _, i := range byCounts {
			if rs[i].counts == cs {
				group = append(group, i)
			} else {
				rest = append(rest, i)
			}
		}
		byCounts = rest
		cd := new(candidate)
		for id := range cs.m {
			if id == detector.Anonymous {
				continue
			}
			*cd = candidate{id: id, slot: -1, store: e.store, kind: kind}
			if kind == detector.DimUser {
				cd.slot, cd.user = e.registry.lookup(id)
			}
			for _, i := range group {
				visit(i, cd)
			}
		}
	}
	outs := make([]ruleOutput, len(rs))
	for i, c := range rs {
		c.state.each(func(_ string, st *memberState) {
			if st.entered != 0 && st.seen != c.gen { // left the cohort
				*st = memberState{acted: st.acted} // forgotten when it was never acted on
			}
		})
		outs[i] = ruleOutput{rule: c, mails: mails[i]}
		if len(entered[i]) > 0 {
			ev := e.entered(c, entered[i], now)
			outs[i].entered = &ev
		}
	}
	return outs
}

// maxListed bounds the members named in a cohort's entry event (the members API lists
// them all).
const maxListed = 50

// entered is the event of members entering a cohort in one evaluation, for the rule's
// channels: one notification however many entered.
func (e *Engine) entered(c *cohortRule, ids []string, now time.Time) alert.Event {
	r := &c.rule
	sort.Strings(ids)
	ev := alert.Event{
		ID: rules.NewEventID(now), RuleID: r.ID, RuleName: r.Name, Type: alert.TypeCohort, State: alert.Firing,
		Threshold: "cohort", Severity: r.Severity, Group: map[string]string{}, Value: float64(len(ids)),
		Time: now.UTC(), StartedAt: now.UTC(), Playbook: r.Playbook, Channels: append([]string(nil), r.Notify...),
		Samples: []alert.Sample{},
	}
	if len(ids) == 1 {
		ev.Group[r.Entity] = ids[0]
	}
	listed := ids
	if len(listed) > maxListed {
		listed = listed[:maxListed]
	}
	ev.Summary = fmt.Sprintf("%d %s(s) entered the cohort %q: %s", len(ids), r.Entity, r.Name, strings.Join(listed, ", "))
	if len(ids) > maxListed {
		ev.Summary += fmt.Sprintf(" and %d more", len(ids)-maxListed)
	}
	return ev
}

// mail is the e-mail event to a user who entered a cohort; false when the user gets none
// (not registered, no address, opted out: logged at debug level).
func (e *Engine) mail(c *cohortRule, cd *candidate, now time.Time) (alert.Event, bool) {
	r := &c.rule
	msg, err := e.render(c, cd, now)
	if err != nil {
		e.logger.Debug("cohort e-mail not sent", "rule", r.ID, "user", cd.id, "reason", err.Error())
		return alert.Event{}, false
	}
	ev := alert.Event{
		ID: rules.NewEventID(now), RuleID: r.ID, RuleName: r.Name, Type: alert.TypeCohort, State: alert.Firing,
		Threshold: "cohort", Severity: r.Severity, Group: map[string]string{r.Entity: cd.id}, Time: now.UTC(),
		StartedAt: now.UTC(), Channels: []string{r.EmailUser.Channel}, Recipient: msg.To[0], Email: msg, Samples: []alert.Sample{},
		Summary: fmt.Sprintf("e-mail %q to %s (%s), who entered the cohort %q", msg.Subject, cd.id, msg.To[0], r.Name),
	}
	if r.Behavior != nil {
		ev.Value = float64(e.behaviorCount(c, cd.id, now))
		ev.Window = r.Behavior.Window.String()
	}
	return ev, true
}

// ErrNoEmail is why a member gets no e-mail: not registered, no address, or opted out.
var ErrNoEmail = errors.New("no e-mail for this user")

// render builds the e-mail to a member.
func (e *Engine) render(c *cohortRule, cd *candidate, now time.Time) (*alert.Email, error) {
	if cd.user == nil || cd.user.email == "" {
		return nil, fmt.Errorf("%w: user %s has no registered e-mail address", ErrNoEmail, cd.id)
	}
	if e.optOut[strings.ToLower(cd.user.email)] || e.optOut[cd.id] {
		return nil, fmt.Errorf("%w: user %s opted out", ErrNoEmail, cd.id)
	}
	eu := c.rule.EmailUser
	u := cd.user.user(cd.id)
	data := map[string]any{"User": u, "Figures": e.figures(c, cd, now), "Rule": map[string]string{"ID": c.rule.ID, "Name": c.rule.Name}}
	msg := &alert.Email{To: []string{u.Email}, Subject: expand(eu.Subject, &u), Cc: addresses(expand(eu.Cc, &u)), Bcc: addresses(expand(eu.Bcc, &u))}
	var buf bytes.Buffer
	if c.text != nil {
		if err := c.text.Execute(&buf, data); err != nil {
			return nil, fmt.Errorf("rendering the text template: %w", err)
		}
		msg.Text = buf.String()
	}
	if c.html != nil {
		buf.Reset()
		if err := c.html.Execute(&buf, data); err != nil {
			return nil, fmt.Errorf("rendering the HTML template: %w", err)
		}
		msg.HTML = buf.String()
	}
	if msg.Text == "" {
		msg.Text = msg.Subject
	}
	return msg, nil
}

// Figures are a member's own numbers, for e-mail templates.
type Figures struct {
	// Calls, Errors4xx and Errors5xx count the member's calls over the behaviour's window
	// (7 days without one); Matched counts those the behaviour's filter selects.
	Calls, Errors4xx, Errors5xx, Matched uint64
	// TopEndpoint and TopStatus are what the member's failing calls got most;
	// TopFailing lists the most frequent failing endpoint and status pairs, most first.
	TopEndpoint string
	TopStatus   int
	TopFailing  []detector.Failing
	// FirstCall and FirstSuccess are the times of the first call and first 2xx (zero
	// when none).
	FirstCall, FirstSuccess time.Time
	// TTFHW is the time to first hello world (so far, without a success yet).
	TTFHW time.Duration
}

func (e *Engine) figures(c *cohortRule, cd *candidate, now time.Time) Figures {
	w := 7 * 24 * time.Hour
	if b := c.rule.Behavior; b != nil {
		w = time.Duration(b.Window)
	}
	all := e.store.CallerCountApplied(c.kind, cd.id, w, now)
	f := Figures{Calls: uint64(all.Calls), Errors4xx: uint64(all.Status4), Errors5xx: uint64(all.Status5)}
	if c.rule.Behavior != nil {
		f.Matched = e.behaviorCount(c, cd.id, now)
	}
	if h, ok := e.store.CallerApplied(c.kind, cd.id); ok {
		f.TopFailing = h.TopFailing
		if len(h.TopFailing) > 0 {
			f.TopEndpoint, f.TopStatus = h.TopFailing[0].Endpoint, h.TopFailing[0].Status
		}
		f.FirstCall = h.FirstSeen
		if h.FirstSuccess != nil {
			f.FirstSuccess = *h.FirstSuccess
		}
	}
	f.TTFHW, _ = cd.ttfhw(now.Unix())
	return f
}

var userPlaceholder = regexp.MustCompile(`\{(user|env)\.([A-Za-z0-9_.-]+)\}`)

// expand replaces {user.FIELD} and {user.attributes.NAME} with the member's values, and
// {env.NAME} with the environment variable, as Caddy's placeholders do elsewhere in the
// config; unknown ones become empty.
func expand(s string, u *User) string {
	return userPlaceholder.ReplaceAllStringFunc(s, func(m string) string {
		p := userPlaceholder.FindStringSubmatch(m)
		if p[1] == "env" {
			return os.Getenv(p[2])
		}
		f := p[2]
		switch f {
		case "id":
			return u.ID
		case "email":
			return u.Email
		case "name":
			return u.Name
		case "company":
			return u.Company
		case "plan":
			return u.Plan
		}
		if a, ok := strings.CutPrefix(f, "attributes."); ok {
			return u.Attributes[a]
		}
		return ""
	})
}

func addresses(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// dispatch records events and notifies: the rule channels' events in one batch per
// channel, each e-mail to a user in a batch of its own (so that a retry never sends
// someone else's e-mail twice).
func (e *Engine) dispatch(n alert.Notifier, events []alert.Event) {
	if len(events) == 0 {
		return
	}
	if e.history != nil {
		e.history.Add(events)
	}
	if n == nil {
		return
	}
	var order []string
	batches := map[string][]alert.Event{}
	for _, ev := range events {
		if ev.Email != nil {
			n.Notify(alert.Batch{Channel: ev.Channels[0], Events: []alert.Event{ev}})
			continue
		}
		for _, ch := range ev.Channels {
			if _, ok := batches[ch]; !ok {
				order = append(order, ch)
			}
			batches[ch] = append(batches[ch], ev)
		}
	}
	for _, ch := range order {
		n.Notify(alert.Batch{Channel: ch, Events: batches[ch]})
	}
}

// Member is a cohort member as the API lists it.
type Member struct {
	// ID is the user or company id.
	ID string `json:"id"`
	// EnteredAt is when it entered the cohort (this time: a member that left and came
	// back has entered again).
	EnteredAt time.Time `json:"entered_at"`
	// ActedAt is when the rule last acted on it (e-mail, notification); nil: never.
	ActedAt *time.Time `json:"acted_at,omitempty"`
}

// Members returns a rule's members, oldest first; false when there is no such cohort
// rule.
func (e *Engine) Members(ruleID string) ([]Member, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.rules {
		if c.rule.ID != ruleID {
			continue
		}
		out := []Member{}
		c.state.each(func(id string, st *memberState) {
			if st.entered == 0 {
				return
			}
			m := Member{ID: id, EnteredAt: time.Unix(int64(st.entered), 0).UTC()}
			if st.acted != 0 {
				at := time.Unix(int64(st.acted), 0).UTC()
				m.ActedAt = &at
			}
			out = append(out, m)
		})
		sort.Slice(out, func(i, j int) bool {
			if !out[i].EnteredAt.Equal(out[j].EnteredAt) {
				return out[i].EnteredAt.Before(out[j].EnteredAt)
			}
			return out[i].ID < out[j].ID
		})
		return out, true
	}
	return nil, false
}

// Preview renders the e-mail a rule would send a user now, without sending it.
func (e *Engine) Preview(ruleID, userID string, now time.Time) (*alert.Email, error) {
	e.store.Flush()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.rules {
		if c.rule.ID != ruleID {
			continue
		}
		if c.rule.EmailUser == nil {
			return nil, errors.New("the rule sends no e-mail to users (no email_user)")
		}
		cd := userCandidate(e.store, e.registry, userID)
		return e.render(c, &cd, now)
	}
	return nil, fmt.Errorf("no cohort rule with id %q", ruleID)
}

// TTFHW returns a user's time to first hello world at now (see candidate.ttfhw) and
// whether it is done (the user has had a success).
func (e *Engine) TTFHW(userID string, now time.Time) (d time.Duration, done, ok bool) {
	cd := userCandidate(e.store, e.registry, userID)
	d, ok = cd.ttfhw(now.Unix())
	return d, cd.first2xx != 0, ok
}

// userCandidate returns a user as a candidate, with a copy of its registry entry (an
// upsert may replace the entry once the lock is released).
func userCandidate(store *detector.Store, reg *Registry, userID string) candidate {
	cd := candidate{id: userID, slot: -1, store: store, kind: detector.DimUser}
	reg.mu.RLock()
	if _, u := reg.lookup(userID); u != nil {
		copied := *u
		cd.user = &copied
	}
	reg.mu.RUnlock()
	return cd
}

// OptOut adds (or with remove, removes) an e-mail address or user id to the list of
// those who get no behavioral e-mail.
func (e *Engine) OptOut(who string, remove bool) bool {
	key := strings.ToLower(strings.TrimSpace(who))
	if strings.Contains(key, "@") {
		who = key
	} else {
		who = strings.TrimSpace(who)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, had := e.optOut[who]
	if remove {
		delete(e.optOut, who)
	} else {
		e.optOut[who] = true
	}
	return had
}

// OptOuts lists the opt-out list, sorted.
func (e *Engine) OptOuts() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.optOut))
	for k := range e.optOut {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// State is the engine's memory, for storage: the opt-out list, and per rule its members
// and whom it acted on.
type State struct {
	// OptOut is the opt-out list: e-mail addresses (lower case) and user ids.
	OptOut []string `json:"opt_out"`
	// Rules are the cohort rules' members and whom they acted on.
	Rules []RuleState `json:"rules"`
}

// RuleState is one rule's part of State.
type RuleState struct {
	// ID and Fingerprint identify the rule and its definition: members are restored
	// only into the same definition, whom it acted on into any rule of the same id.
	ID          string `json:"id"`
	Fingerprint string `json:"fingerprint"`
	// Members maps each member to when it entered, Acted each member acted on to when
	// (Unix seconds).
	Members map[string]int64 `json:"members"`
	Acted   map[string]int64 `json:"acted"`
}

// State returns the engine's state.
func (e *Engine) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := State{OptOut: make([]string, 0, len(e.optOut))}
	for k := range e.optOut {
		st.OptOut = append(st.OptOut, k)
	}
	sort.Strings(st.OptOut)
	for _, c := range e.rules {
		rs := RuleState{ID: c.rule.ID, Fingerprint: c.fp, Members: map[string]int64{}, Acted: map[string]int64{}}
		c.state.each(func(k string, st *memberState) {
			if st.entered != 0 {
				rs.Members[k] = int64(st.entered)
			}
			if st.acted != 0 {
				rs.Acted[k] = int64(st.acted)
			}
		})
		st.Rules = append(st.Rules, rs)
	}
	return st
}

// Restore brings back a state: the opt-out list, and the members and actions of rules
// whose id is unchanged (members only when the definition is unchanged too; whom a rule
// acted on is kept even across a change, so nobody is e-mailed twice).
func (e *Engine) Restore(st State) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, k := range st.OptOut {
		e.optOut[k] = true
	}
	for _, rs := range st.Rules {
		for _, c := range e.rules {
			if c.rule.ID != rs.ID {
				continue
			}
			for k, v := range rs.Acted {
				if st := c.state.lookup(-1, k); st != nil {
					st.acted = uint32(v)
				} else if !c.state.full(-1) {
					c.state.setID(k, memberState{acted: uint32(v)})
				}
			}
			if c.fp == rs.Fingerprint {
				for k, v := range rs.Members {
					if st := c.state.lookup(-1, k); st != nil {
						st.entered, st.seen = uint32(v), c.gen
					} else if !c.state.full(-1) {
						c.state.setID(k, memberState{entered: uint32(v), seen: c.gen})
					}
				}
			}
		}
	}
}
