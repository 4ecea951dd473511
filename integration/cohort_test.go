package integration

import (
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// mailbox is a real SMTP server on loopback that keeps what it receives.
type mailbox struct {
	mu   sync.Mutex
	msgs []received
	addr string
}

type received struct {
	from string
	rcpt []string
	data []byte
}

type mailSession struct {
	mb  *mailbox
	cur received
}

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error { s.cur.from = from; return nil }
func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.rcpt = append(s.cur.rcpt, to)
	return nil
}
func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data = b
	s.mb.mu.Lock()
	s.mb.msgs = append(s.mb.msgs, s.cur)
	s.mb.mu.Unlock()
	s.cur = received{}
	return nil
}
func (s *mailSession) Reset()        { s.cur = received{} }
func (s *mailSession) Logout() error { return nil }

func startMailbox(t *testing.T) *mailbox {
	mb := &mailbox{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailSession{mb: mb}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mb.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return mb
}

// to returns the messages whose RCPT TO included addr.
func (mb *mailbox) to(addr string) []received {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	var out []received
	for _, m := range mb.msgs {
		for _, r := range m.rcpt {
			if r == addr {
				out = append(out, m)
			}
		}
	}
	return out
}

// parts parses a message: its headers and its text and HTML parts.
func parts(t *testing.T, data []byte) (mail.Header, string, string) {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		t.Fatalf("content type %q: %v", m.Header.Get("Content-Type"), err)
	}
	var text, html string
	r := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := r.NextPart()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(p) // NextPart decodes quoted-printable
		switch ct := p.Header.Get("Content-Type"); {
		case strings.HasPrefix(ct, "text/plain"):
			text = string(b)
		case strings.HasPrefix(ct, "text/html"):
			html = string(b)
		}
	}
	return m.Header, text, html
}

const cohortCaddyfile = `{
	admin {{.Admin}}
	auto_https off
	storage file_system {{.Storage}}
	vigil {
		tick 100ms
		cohort_interval 500ms
		snapshot 500ms
		test_clock
		channel mail email {
			smtp {{.SMTP}}
			from "Vigil <cs@example.com>"
			to   cs@example.com
			tls  none
		}
		channel cs webhook {{.Hook}}
	}
}

http://127.0.0.1:{{.HTTP}} {
	vigil {
		identify user {header.X-User-Id}
	}
	reverse_proxy {{.Upstream}}
}
`

// TestBehavioralEmails: registered users with sign-up times in the past and traffic,
// some of it recorded days ago; exactly the stuck users get exactly one e-mail each, with
// the right recipients and figures in both parts; an opted-out user gets none; the
// never-called cohort reaches the customer-success channel; a restart sends nothing again.
func TestBehavioralEmails(t *testing.T) {
	up, h, mb := statusUpstream(t), startHook(t), startMailbox(t)
	c := StartCaddy(t, cohortCaddyfile, map[string]any{"Upstream": up.URL, "Hook": h.srv.URL, "SMTP": mb.addr})
	now := time.Now().UTC().Truncate(time.Second)
	day := 24 * time.Hour
	setClock := func(at time.Time) {
		t.Helper()
		if code, body := c.Admin(t, "PUT", "/vigil/test/clock", map[string]string{"now": at.Format(time.RFC3339)}); code != 200 {
			t.Fatalf("clock: %d %s", code, body)
		}
	}
	users := []map[string]any{
		{"id": "u-ada", "email": "ada@example.com", "name": "Ada", "created_at": now.Add(-10 * day), "plan": "free", "attributes": map[string]string{"se_email": "se@example.com"}},
		{"id": "u-bob", "email": "bob@example.com", "name": "Bob", "created_at": now.Add(-10 * day), "plan": "free"},
		{"id": "u-cy", "email": "cy@example.com", "name": "Cy", "created_at": now.Add(-10 * day), "plan": "free"},
		{"id": "u-dormant", "email": "dee@example.com", "name": "Dee", "created_at": now.Add(-12 * day), "plan": "free"},
		{"id": "u-new", "email": "new@example.com", "name": "Nu", "created_at": now.Add(-2 * day), "plan": "free"},
	}
	if code, body := c.Admin(t, "PUT", "/vigil/users", users); code != 200 {
		t.Fatalf("PUT users: %d %s", code, body)
	}
	code, body := c.Admin(t, "PUT", "/vigil/users", `[{"id": "x", "email": "not an address"}]`)
	expectError(t, "bad user", code, body, 400, "[0].email")
	if code, body := c.Admin(t, "PUT", "/vigil/optout/bob@example.com", nil); code != 200 {
		t.Fatalf("opt-out: %d %s", code, body)
	}

	// The rules exist before the traffic, as they do when configured: a cohort's
	// per-user counts of filtered calls start when its rule does.
	for _, rule := range []string{`{
		"id": "stuck-integrations", "name": "Too many 4xx while integrating", "type": "cohort", "entity": "user",
		"match": {"created_after": "-28d", "created_before": "-7d", "plan": "free"},
		"behavior": {"metric": "count", "filter": {"status": "400,404,405"}, "window": "7d", "at_least": 25},
		"email_user": {"channel": "mail", "subject": "Need a hand with our API, {user.name}?", "cc": "{user.attributes.se_email}",
			"template": "Hi {{.User.Name}}, {{.Figures.Matched}} of your calls failed in the last week, most often {{.Figures.TopEndpoint}} with {{.Figures.TopStatus}}. First call: {{.Figures.FirstCall.Format \"2006-01-02\"}}.",
			"html_template": "<p>Hi {{.User.Name}}, {{.Figures.Matched}} failed calls, most often <code>{{.Figures.TopEndpoint}}</code> ({{.Figures.TopStatus}}).</p>"},
		"notify": ["cs"], "repeat": "never"}`, `{
		"id": "never-called", "name": "Signed up, never called", "type": "cohort", "entity": "user",
		"match": {"created_after": "-28d", "created_before": "-7d"},
		"behavior": {"window": "28d", "at_most": 0}, "notify": ["cs"]}`} {
		if code, body := c.Admin(t, "POST", "/vigil/alerts", rule); code != 201 {
			t.Fatalf("POST cohort rule: %d %s", code, body)
		}
	}
	code, body = c.Admin(t, "POST", "/vigil/alerts", `{"name": "x", "type": "cohort", "behavior": {"window": "7d", "at_least": 1}, "email_user": {"channel": "cs", "subject": "s", "template": "t"}}`)
	expectError(t, "email_user through a webhook", code, body, 400, "email_user.channel")

	// Ada: 25 responses 404 two days ago and 400 today; Bob the same (opted out); Cy only 5.
	// Ada reaches the rule's 25 with her last call, so that no evaluation between her
	// calls can e-mail her with a smaller count.
	setClock(now.Add(-2 * day))
	calls(t, c, 15, "/orders", map[string]string{"X-User-Id": "u-ada", "X-Want-Status": "404"})
	calls(t, c, 25, "/orders", map[string]string{"X-User-Id": "u-bob", "X-Want-Status": "405"})
	setClock(now)
	calls(t, c, 10, "/orders", map[string]string{"X-User-Id": "u-ada", "X-Want-Status": "400"})
	calls(t, c, 5, "/orders", map[string]string{"X-User-Id": "u-cy", "X-Want-Status": "404"})
	calls(t, c, 3, "/orders", map[string]string{"X-User-Id": "u-new"})

	deadline := time.Now().Add(10 * time.Second)
	for len(mb.to("ada@example.com")) == 0 {
		if time.Now().After(deadline) {
			_, m := c.Admin(t, "GET", "/vigil/cohorts/stuck-integrations", nil)
			_, ev := c.Admin(t, "GET", "/vigil/events?type=cohort", nil)
			_, u := c.Admin(t, "GET", "/vigil/users/u-ada", nil)
			t.Fatalf("no e-mail to Ada; mailbox %d messages; members %s\nevents %s\nuser %s\nlogs:\n%s", len(mb.msgs), m, ev, u, c.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.wait(t, "never-called", 5*time.Second, func(ev *hookEvent) bool { return ev.RuleID == "never-called" })
	time.Sleep(1500 * time.Millisecond) // three more evaluations: nothing more

	if n := len(mb.to("ada@example.com")); n != 1 {
		t.Fatalf("Ada got %d e-mails, want exactly 1", n)
	}
	for _, who := range []string{"bob@example.com", "cy@example.com", "dee@example.com", "new@example.com"} {
		if n := len(mb.to(who)); n != 0 {
			t.Fatalf("%s got %d e-mails, want none", who, n)
		}
	}
	msg := mb.to("ada@example.com")[0]
	hdr, text, html := parts(t, msg.data)
	to, _ := hdr.AddressList("To")
	cc, _ := hdr.AddressList("Cc")
	if len(to) != 1 || to[0].Address != "ada@example.com" || len(cc) != 1 || cc[0].Address != "se@example.com" || hdr.Get("Subject") != "Need a hand with our API, Ada?" {
		t.Fatalf("headers To %q Cc %q Subject %q", hdr.Get("To"), hdr.Get("Cc"), hdr.Get("Subject"))
	}
	if !strings.Contains(strings.Join(msg.rcpt, " "), "se@example.com") {
		t.Fatalf("the Cc is not a recipient: %v", msg.rcpt)
	}
	firstCall := now.Add(-2 * day).Format("2006-01-02")
	if !strings.Contains(text, "Hi Ada, 25 of your calls failed") || !strings.Contains(text, "most often /orders with 404") || !strings.Contains(text, "First call: "+firstCall) {
		t.Fatalf("text part %q", text)
	}
	if !strings.Contains(html, "25 failed calls") || !strings.Contains(html, "<code>/orders</code> (404)") {
		t.Fatalf("html part %q", html)
	}

	// Members, preview, the user's record.
	_, body = c.Admin(t, "GET", "/vigil/cohorts/stuck-integrations", nil)
	var members struct {
		Total   int
		Members []struct{ ID string }
	}
	if err := json.Unmarshal(body, &members); err != nil || members.Total != 2 {
		t.Fatalf("members %s", body) // Ada and Bob (Bob is a member, just not e-mailed)
	}
	_, body = c.Admin(t, "GET", "/vigil/cohorts/never-called", nil)
	if !strings.Contains(string(body), "u-dormant") || strings.Contains(string(body), "u-new") {
		t.Fatalf("never-called members %s", body)
	}
	code, body = c.Admin(t, "GET", "/vigil/cohorts/stuck-integrations/preview?user=u-ada", nil)
	if code != 200 || !strings.Contains(string(body), "Hi Ada") {
		t.Fatalf("preview %d %s", code, body)
	}
	code, body = c.Admin(t, "GET", "/vigil/users/u-ada", nil)
	if code != 200 || !strings.Contains(string(body), `"registered": true`) || !strings.Contains(string(body), `"top_failing"`) {
		t.Fatalf("user %d %s", code, body)
	}
	code, body = c.Admin(t, "GET", "/vigil/users/u-new", nil)
	if code != 200 || !strings.Contains(string(body), `"ttfhw_done": true`) {
		t.Fatalf("u-new's first hello world: %s", body)
	}

	// A restart sends nothing again.
	time.Sleep(700 * time.Millisecond) // a snapshot with the cohorts' memory
	c.Stop()
	c.start(cohortCaddyfile)
	setClock(now.Add(time.Minute))
	time.Sleep(2 * time.Second)
	if n := len(mb.to("ada@example.com")); n != 1 {
		t.Fatalf("after a restart Ada has %d e-mails, want still 1", n)
	}
}
