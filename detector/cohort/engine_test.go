package cohort

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
	"github.com/vigilgw/vigil/detector/rules"
)

type recorder struct {
	mu      sync.Mutex
	batches []alert.Batch
}

func (r *recorder) Notify(b alert.Batch) {
	r.mu.Lock()
	r.batches = append(r.batches, b)
	r.mu.Unlock()
}

func (r *recorder) take() []alert.Batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.batches
	r.batches = nil
	return b
}

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func i64(v int64) *int64 { return &v }

// Two cohorts of the mission: signed up 7 days to 4 weeks ago and never called in 4
// weeks; at least N responses 400, 404 or 405 in 7 days.
var (
	dormant = rules.Rule{Name: "signed up, never called", Type: rules.TypeCohort,
		Match:    map[string]string{"created_before": "-7d", "created_after": "-28d"},
		Behavior: &rules.Behavior{Window: rules.Duration(28 * 24 * time.Hour), AtMost: i64(0)},
		Notify:   []string{"cs"}}
	stuck = rules.Rule{Name: "too many 4xx", Type: rules.TypeCohort,
		Behavior: &rules.Behavior{Filter: detector.Filter{Status: "400,404,405"}, Window: rules.Duration(7 * 24 * time.Hour), AtLeast: i64(5)},
		EmailUser: &rules.EmailUser{Channel: "mail", Subject: "Need a hand with our API, {user.name}?", Bcc: "{user.attributes.se_email}",
			Template:     "Hi {{.User.Name}}, {{.Figures.Matched}} of your calls failed; most often {{.Figures.TopEndpoint}} with {{.Figures.TopStatus}}.",
			HTMLTemplate: "<p>Hi {{.User.Name}}: {{.Figures.Errors4xx}} errors</p>"},
		Notify: []string{"cs"}}
)

func setup(t testing.TB, rs ...rules.Rule) (*Engine, *detector.Store, *Registry, *recorder) {
	t.Helper()
	store := detector.New(detector.Config{})
	reg := NewRegistry(0)
	e := NewEngine(store, reg, rules.NewHistory(0), nil)
	rec := &recorder{}
	e.SetNotifier(rec)
	for i := range rs {
		rs[i].Normalize()
		if err := rs[i].Validate(); err != nil {
			t.Fatalf("rule %q: %v", rs[i].Name, err)
		}
	}
	if err := e.SetRules(rs); err != nil {
		t.Fatal(err)
	}
	return e, store, reg, rec
}

func call(s *detector.Store, user string, at time.Time, status int, n int) {
	for i := 0; i < n; i++ {
		s.Record(&detector.Call{Time: at, Method: "GET", Endpoint: "/orders", Status: status, User: user})
	}
}

// entered lists who entered, per channel: "cs:u-1" for a member named in an entry event
// (from its summary), "mail:u-1" for an e-mail.
func entered(batches []alert.Batch) []string {
	var out []string
	for _, b := range batches {
		for _, ev := range b.Events {
			if ev.Email != nil {
				out = append(out, "mail:"+ev.Group["user"])
				continue
			}
			_, names, _ := strings.Cut(ev.Summary, ": ")
			for _, id := range strings.Split(names, ", ") {
				out = append(out, b.Channel+":"+id)
			}
		}
	}
	return out
}

func TestDormantCohortEdges(t *testing.T) {
	e, store, reg, rec := setup(t, dormant)
	day := 24 * time.Hour
	if err := reg.Upsert([]User{
		{ID: "exactly-7d", CreatedAt: now.Add(-7 * day)},                                        // created_before -7d: at the edge, in
		{ID: "6d", CreatedAt: now.Add(-6 * day)},                                                // too new
		{ID: "exactly-28d", CreatedAt: now.Add(-28 * day)},                                      // created_after -28d: at the edge, in
		{ID: "29d", CreatedAt: now.Add(-29 * day)},                                              // too old
		{ID: "called", CreatedAt: now.Add(-10 * day)},                                           // called once: out
		{ID: "tz", CreatedAt: time.Date(2026, 11, 10, 3, 0, 0, 0, time.FixedZone("CET", 3600))}, // 14 days ago, in
	}); err != nil {
		t.Fatal(err)
	}
	call(store, "called", now.Add(-3*day), 200, 1)
	e.Evaluate(now)
	got := strings.Join(entered(rec.take()), " ")
	if got != "cs:exactly-7d cs:exactly-28d cs:tz" && !sameSet(got, "cs:exactly-7d cs:exactly-28d cs:tz") {
		t.Fatalf("entered %q", got)
	}
	// Evaluating again acts on nobody again.
	e.Evaluate(now.Add(time.Minute))
	if b := rec.take(); len(b) != 0 {
		t.Fatalf("second evaluation: %+v", b)
	}
	// A minute later the user created exactly 28 days before the first evaluation is
	// older than 28 days: out of the cohort.
	if m, _ := e.Members("signed-up-never-called"); len(m) != 2 || m[0].ID == "exactly-28d" || m[1].ID == "exactly-28d" {
		t.Fatalf("members %+v", m)
	}
}

func sameSet(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	if len(x) != len(y) {
		return false
	}
	m := map[string]int{}
	for _, s := range x {
		m[s]++
	}
	for _, s := range y {
		m[s]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestStuckCohortEmailsOnceWithFigures(t *testing.T) {
	e, store, reg, rec := setup(t, stuck)
	_ = reg.Upsert([]User{
		{ID: "u-1", Email: "ada@example.com", Name: "Ada", Attributes: map[string]string{"se_email": "se@example.com"}},
		{ID: "u-2", Email: "bob@example.com", Name: "Bob"},
		{ID: "u-3", Email: "cy@example.com", Name: "Cy"},
	})
	call(store, "u-1", now.Add(-time.Hour), 404, 5) // exactly 5: at_least 5, in
	call(store, "u-2", now.Add(-time.Hour), 404, 4) // 4: out
	call(store, "u-2", now.Add(-time.Hour), 401, 9) // 401 is not in the filter
	call(store, "u-3", now.Add(-time.Hour), 400, 6)
	call(store, "u-4", now.Add(-time.Hour), 405, 7) // not registered: no e-mail
	e.OptOut("CY@example.com", false)
	e.Evaluate(now)
	batches := rec.take()
	got := entered(batches)
	if !sameSet(strings.Join(got, " "), "cs:u-1 cs:u-3 cs:u-4 mail:u-1") {
		t.Fatalf("entered %v", got)
	}
	var mail *alert.Email
	for _, b := range batches {
		if b.Channel == "mail" {
			mail = b.Events[0].Email
		}
	}
	if mail.To[0] != "ada@example.com" || len(mail.Bcc) != 1 || mail.Bcc[0] != "se@example.com" || mail.Subject != "Need a hand with our API, Ada?" ||
		!strings.Contains(mail.Text, "5 of your calls failed; most often /orders with 404") || !strings.Contains(mail.HTML, "Ada: 5 errors") {
		t.Fatalf("mail %+v", mail)
	}
	// More errors: already a member, no second e-mail. A restart (state restored) neither.
	call(store, "u-1", now, 400, 10)
	e.Evaluate(now.Add(time.Minute))
	if b := rec.take(); len(b) != 0 {
		t.Fatalf("second evaluation: %+v", b)
	}
	st, _ := json.Marshal(e.State())
	e2, _, _, rec2 := setup(t, stuck)
	e2.store, e2.registry = store, reg
	var s State
	_ = json.Unmarshal(st, &s)
	e2.Restore(s)
	e2.Evaluate(now.Add(2 * time.Minute))
	if b := rec2.take(); len(b) != 0 {
		t.Fatalf("after a restart: %+v", b)
	}
	// Preview renders without sending.
	p, err := e.Preview("too-many-4xx", "u-1", now)
	if err != nil || !strings.Contains(p.Text, "Ada") {
		t.Fatalf("preview %+v %v", p, err)
	}
	if _, err := e.Preview("too-many-4xx", "u-3", now); err == nil {
		t.Fatal("preview for an opted-out user: no error")
	}
}

// TestUpsertDoesNotWaitForEmails checks that e-mails are rendered after the registry's
// lock is released (an upsert during a large first evaluation does not wait for
// thousands of e-mails), from the user's record as it was when the members were worked
// out.
func TestUpsertDoesNotWaitForEmails(t *testing.T) {
	e, store, reg, rec := setup(t, stuck)
	_ = reg.Upsert([]User{{ID: "u-1", Email: "ada@example.com", Name: "Ada"}})
	call(store, "u-1", now.Add(-time.Hour), 404, 5)
	upserted := make(chan error, 1)
	e.beforeRender = func() {
		go func() { upserted <- reg.Upsert([]User{{ID: "u-1", Email: "ada@new.example.com", Name: "Ada L."}}) }()
		select {
		case err := <-upserted:
			if err != nil {
				t.Errorf("upsert: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the upsert waited for the e-mails to render")
		}
	}
	e.Evaluate(now)
	var mail *alert.Email
	for _, b := range rec.take() {
		if b.Channel == "mail" {
			mail = b.Events[0].Email
		}
	}
	if mail == nil || mail.To[0] != "ada@example.com" || mail.Subject != "Need a hand with our API, Ada?" {
		t.Fatalf("mail %+v, want the one to the address and name of the evaluation", mail)
	}
	if u, _ := reg.Get("u-1"); u.Email != "ada@new.example.com" {
		t.Fatalf("registry after the upsert: %+v", u)
	}
}

func TestTTFHWMatch(t *testing.T) {
	r := rules.Rule{Name: "slow start", Type: rules.TypeCohort, Match: map[string]string{"created_after": "-7d", "ttfhw_over": "5m"},
		Behavior: &rules.Behavior{Filter: detector.Filter{Status: "400"}, Window: rules.Duration(7 * 24 * time.Hour), AtLeast: i64(6)}, Notify: []string{"cs"}}
	e, store, reg, rec := setup(t, r)
	_ = reg.Upsert([]User{{ID: "slow", CreatedAt: now.Add(-time.Hour)}, {ID: "quick", CreatedAt: now.Add(-time.Hour)}})
	call(store, "slow", now.Add(-50*time.Minute), 400, 6)
	call(store, "quick", now.Add(-58*time.Minute), 200, 1) // hello world within 2 minutes
	call(store, "quick", now.Add(-50*time.Minute), 400, 6)
	e.Evaluate(now)
	if got := entered(rec.take()); len(got) != 1 || got[0] != "cs:slow" {
		t.Fatalf("entered %v", got)
	}
	if d, done, ok := e.TTFHW("quick", now); !ok || !done || d != 2*time.Minute {
		t.Fatalf("ttfhw quick %v %v %v", d, done, ok)
	}
}

func TestParseCSV(t *testing.T) {
	users, err := ParseCSV(strings.NewReader("id,email,name,company,created_at,plan,se_email\nu-1,a@example.com,Ada,acme,2026-11-01,free,se@example.com\nu-2,,,,2026-11-02T10:00:00Z,,\n"))
	if err != nil || len(users) != 2 || users[0].Attributes["se_email"] != "se@example.com" || users[1].CreatedAt.Hour() != 10 {
		t.Fatalf("%+v %v", users, err)
	}
	for in, want := range map[string]string{
		"":                                   "line 1: empty file",
		"email\na@b.c\n":                     "no id column",
		"id,created_at\nu-1,yesterday\n":     "line 2, column created_at",
		"id,email\nu-1,a@b.c\nu-2,notmail\n": "line 3, column email",
		"id,email\n,a@b.c\n":                 "line 2, column id",
	} {
		if _, err := ParseCSV(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
}

// BenchmarkEvaluateMillionUsers: one membership evaluation of 10 cohort rules over
// 1,000,000 registered users (a tenth of them called this week); reports the heap.
func BenchmarkEvaluateMillionUsers(b *testing.B) {
	var rs []rules.Rule
	for i := 0; i < 10; i++ {
		r := stuck
		if i%2 == 0 {
			r = dormant
		}
		r.Name = fmt.Sprintf("%s %d", r.Name, i)
		rs = append(rs, r)
	}
	e, store, reg, _ := setup(b, rs...)
	e.SetNotifier(discard{}) // a real queue is bounded: keeping every e-mail would measure the test
	users := make([]User, 0, 1000)
	for i := 0; i < 1000000; i++ {
		users = append(users, User{ID: fmt.Sprintf("u-%d", i), Email: fmt.Sprintf("u%d@example.com", i), Plan: "free",
			CreatedAt: now.Add(-time.Duration(i%40) * 24 * time.Hour)})
		if len(users) == cap(users) {
			if err := reg.Upsert(users); err != nil {
				b.Fatal(err)
			}
			users = users[:0]
		}
		if i%10 == 0 {
			call(store, fmt.Sprintf("u-%d", i), now.Add(-time.Hour), 404, 1+i%7)
		}
	}
	store.Flush()
	// The first evaluation acts on everyone already in a cohort; the next ones are the
	// steady state that runs every minute.
	start := time.Now()
	var locked time.Duration // how long the first evaluation held the registry's lock
	e.beforeRender = func() { locked = time.Since(start) }
	e.Evaluate(now)
	first := time.Since(start)
	e.beforeRender = nil
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Evaluate(now.Add(time.Duration(i+1) * time.Minute))
	}
	b.StopTimer()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "MiB-heap")
	b.ReportMetric(first.Seconds(), "s-first") // reported last: ResetTimer drops metrics
	b.ReportMetric(locked.Seconds(), "s-first-locked")
	runtime.KeepAlive(e)
	runtime.KeepAlive(store)
	runtime.KeepAlive(reg)
}

type discard struct{}

func (discard) Notify(alert.Batch) {}

// Member state is kept by registry slot for registered users and by id for others: it
// must follow a caller who registers after entering, and survive a registry Load that
// gives every user a new slot, without acting on anyone twice.
func TestMemberStateFollowsRegistry(t *testing.T) {
	e, store, reg, rec := setup(t, stuck, dormant)
	day := 24 * time.Hour
	if err := reg.Upsert([]User{
		{ID: "d-1", CreatedAt: now.Add(-10 * day)},
		{ID: "d-2", CreatedAt: now.Add(-12 * day)},
		{ID: "u-1", Email: "ada@example.com", Name: "Ada"},
	}); err != nil {
		t.Fatal(err)
	}
	call(store, "u-1", now.Add(-time.Hour), 404, 5)
	call(store, "u-4", now.Add(-time.Hour), 405, 7) // not registered yet
	e.Evaluate(now)
	if got := strings.Join(entered(rec.take()), " "); !sameSet(got, "cs:d-1 cs:d-2 cs:u-1 cs:u-4 mail:u-1") {
		t.Fatalf("entered %q", got)
	}
	members := func(rule string) string {
		m, _ := e.Members(rule)
		var ids []string
		for _, x := range m {
			ids = append(ids, x.ID+"@"+x.EnteredAt.Format("15:04"))
		}
		return strings.Join(ids, " ")
	}
	stuckBefore, dormantBefore := members("too-many-4xx"), members("signed-up-never-called")

	// u-4 registers with an address: it entered before, so no e-mail now.
	if err := reg.Upsert([]User{{ID: "u-4", Email: "dan@example.com"}}); err != nil {
		t.Fatal(err)
	}
	e.Evaluate(now.Add(time.Minute))
	if b := rec.take(); len(b) != 0 {
		t.Fatalf("after u-4 registered: %+v", entered(b))
	}

	// A Load (a restart, or users re-read from storage) in another order: new slots.
	data, err := json.Marshal([]User{
		{ID: "u-4", Email: "dan@example.com"}, {ID: "u-1", Email: "ada@example.com", Name: "Ada"},
		{ID: "d-2", CreatedAt: now.Add(-12 * day)}, {ID: "new", CreatedAt: now.Add(-8 * day)},
		{ID: "d-1", CreatedAt: now.Add(-10 * day)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Load(data); err != nil {
		t.Fatal(err)
	}
	e.Evaluate(now.Add(2 * time.Minute))
	if got := strings.Join(entered(rec.take()), " "); got != "cs:new" {
		t.Fatalf("after a Load, entered %q, want only the new user", got)
	}
	if got := members("too-many-4xx"); got != stuckBefore {
		t.Fatalf("stuck members %q, want %q", got, stuckBefore)
	}
	if got := members("signed-up-never-called"); !strings.HasPrefix(got, dormantBefore) || !strings.Contains(got, "new@12:02") {
		t.Fatalf("dormant members %q, want %q and new", got, dormantBefore)
	}

	// d-1 calls: it leaves the dormant cohort; it does not come back while it has calls.
	call(store, "d-1", now.Add(2*time.Minute), 200, 1)
	e.Evaluate(now.Add(3 * time.Minute))
	if got := members("signed-up-never-called"); strings.Contains(got, "d-1") {
		t.Fatalf("d-1 called but is still a member: %q", got)
	}
	if b := rec.take(); len(b) != 0 {
		t.Fatalf("leaving acted: %+v", entered(b))
	}
}

func TestExpandPlaceholders(t *testing.T) {
	t.Setenv("VIGIL_TEST_CS", "cs@example.com")
	u := &User{ID: "u-1", Name: "Ada", Email: "ada@example.com", Company: "acme", Plan: "free", Attributes: map[string]string{"se_email": "se@example.com"}}
	for in, want := range map[string]string{
		"Hi {user.name} ({user.id}, {user.company}, {user.plan})": "Hi Ada (u-1, acme, free)",
		"{user.attributes.se_email}, {env.VIGIL_TEST_CS}":         "se@example.com, cs@example.com",
		"{user.attributes.none}{user.nope}{env.VIGIL_TEST_UNSET}": "",
		"{http.request.host} {user.email}":                        "{http.request.host} ada@example.com",
	} {
		if got := expand(in, u); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}
