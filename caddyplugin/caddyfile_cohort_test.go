package caddyplugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/cohort"
	"github.com/vigilgw/vigil/detector/rules"
)

// missionCaddyfile holds the two cohorts of the customer-success mission: users who
// signed up more than 7 days and less than 4 weeks ago and never called, and users stuck
// on 400/404/405 (the SPEC section 4 example, whose e-mail Bccs the account's solutions
// engineer).
const missionCaddyfile = `{
	vigil {
		channel cs-slack slack https://hooks.slack.com/services/T0/B0/XXX
		channel ops-mail email {
			smtp     smtp.example.com:587
			username alerts
			password {env.SMTP_PASSWORD}
			from     success@example.com
			to       cs@example.com
		}

		alert "Signed up, never called" {
			cohort user
			match {
				created_after  -4w
				created_before -7d
			}
			behavior {
				window  4w
				at_most 0
			}
			notify cs-slack
		}

		alert "Too many 4xx while integrating" {
			id     stuck-integrations
			cohort user
			match {
				created_after  -28d
				created_before -7d
				plan           free
			}
			behavior {
				status   400,404,405
				window   7d
				at_least 1000
			}
			email_user {
				channel  ops-mail
				template stuck.tmpl
				subject  "Need a hand with our API?"
				bcc      {user.attributes.se_email}
			}
			notify cs-slack
			repeat never
		}
	}
}
`

// specStuckIntegrations is the cohort rule of SPEC section 4, as the JSON config and the
// admin API take it.
const specStuckIntegrations = `{
  "id": "stuck-integrations",
  "name": "Too many 4xx while integrating",
  "type": "cohort",
  "entity": "user",
  "match": {"created_after": "-28d", "created_before": "-7d", "plan": "free"},
  "behavior": {"metric": "count", "filter": {"status": "400,404,405"}, "window": "7d", "at_least": 1000},
  "email_user": {"channel": "ops-mail", "template": "stuck.tmpl", "subject": "Need a hand with our API?",
                 "bcc": "{user.attributes.se_email}"},
  "notify": ["cs-slack"],
  "repeat": "never"
}`

func ptr[T any](v T) *T { return &v }

// adaptVigil adapts a whole Caddyfile with Caddy's adapter and returns apps.vigil.
func adaptVigil(t *testing.T, src string) json.RawMessage {
	t.Helper()
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	for _, w := range warnings {
		t.Logf("warning: %s", w.Message)
	}
	var cfg struct {
		Apps struct {
			Vigil json.RawMessage `json:"vigil"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Apps.Vigil) == 0 {
		t.Fatalf("no apps.vigil in %s", out)
	}
	return cfg.Apps.Vigil
}

// loadApp decodes apps.vigil strictly, as Caddy does, and validates it as Provision does.
func loadApp(t *testing.T, raw json.RawMessage) *App {
	t.Helper()
	a := new(App)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(a); err != nil {
		t.Fatalf("decoding apps.vigil %s: %v", raw, err)
	}
	if err := a.Validate(); err != nil {
		t.Fatalf("validating apps.vigil %s: %v", raw, err)
	}
	return a
}

func TestCohortCaddyfileMission(t *testing.T) {
	raw := adaptVigil(t, missionCaddyfile)
	if !bytes.Contains(raw, []byte(`"bcc":"{user.attributes.se_email}"`)) {
		t.Errorf("the bcc placeholder did not survive adaptation: %s", raw)
	}
	a := loadApp(t, raw)

	spec, err := rules.DecodeRule([]byte(specStuckIntegrations))
	if err != nil {
		t.Fatalf("SPEC example: %v", err)
	}
	want := []rules.Rule{
		{
			ID: "signed-up-never-called", Name: "Signed up, never called", Type: rules.TypeCohort,
			Severity: "info", Entity: "user",
			Match:    map[string]string{"created_after": "-4w", "created_before": "-7d"},
			Behavior: &rules.Behavior{Metric: "count", Window: rules.Duration(28 * 24 * 3600e9), AtMost: ptr(int64(0))},
			Notify:   []string{"cs-slack"},
		},
		{
			ID: "stuck-integrations", Name: "Too many 4xx while integrating", Type: rules.TypeCohort,
			Severity: "info", Entity: "user",
			Match: map[string]string{"created_after": "-28d", "created_before": "-7d", "plan": "free"},
			Behavior: &rules.Behavior{Metric: "count", Filter: detector.Filter{Status: "400,404,405"},
				Window: rules.Duration(7 * 24 * 3600e9), AtLeast: ptr(int64(1000))},
			EmailUser: &rules.EmailUser{Channel: "ops-mail", Template: "stuck.tmpl",
				Subject: "Need a hand with our API?", Bcc: "{user.attributes.se_email}"},
			Notify: []string{"cs-slack"},
			Repeat: "never",
		},
	}
	if !reflect.DeepEqual(a.Alerts, want) {
		got, _ := json.Marshal(a.Alerts)
		exp, _ := json.Marshal(want)
		t.Fatalf("adapted rules\n got  %s\n want %s", got, exp)
	}
	// The Caddyfile form and the SPEC's JSON form are the same rule.
	if !reflect.DeepEqual(a.Alerts[1], spec) {
		got, _ := json.Marshal(a.Alerts[1])
		exp, _ := json.Marshal(spec)
		t.Fatalf("Caddyfile and SPEC JSON differ\n caddyfile %s\n spec      %s", got, exp)
	}
	// Round trip: the adapted JSON of each rule decodes (strictly, validated) into the
	// same rule and encodes back to the same JSON.
	var alerts struct {
		Alerts []json.RawMessage `json:"alerts"`
	}
	if err := json.Unmarshal(raw, &alerts); err != nil {
		t.Fatal(err)
	}
	for i, rj := range alerts.Alerts {
		r, err := rules.DecodeRule(rj)
		if err != nil {
			t.Fatalf("alerts[%d] %s: %v", i, rj, err)
		}
		if !reflect.DeepEqual(r, want[i]) {
			t.Errorf("alerts[%d] decodes to %+v, want %+v", i, r, want[i])
		}
		out, _ := json.Marshal(r)
		var x, y any
		_ = json.Unmarshal(rj, &x)
		_ = json.Unmarshal(out, &y)
		if !reflect.DeepEqual(x, y) {
			t.Errorf("alerts[%d] round trip\n in  %s\n out %s", i, rj, out)
		}
	}
}

// TestCohortCaddyfileAllFields writes every field of a cohort rule, for users and for
// companies, and checks the rules they give.
func TestCohortCaddyfileAllFields(t *testing.T) {
	t.Setenv("VIGIL_TEST_CS_TEAM", "cs@example.com")
	const src = `{
	vigil {
		channel cs-slack slack https://hooks.slack.com/services/T0/B0/XXX
		channel ops-mail email {
			smtp smtp.example.com:587
			from success@example.com
			to   cs@example.com
		}
		alert "Slow starters" {
			type     cohort
			entity   user
			id       slow-starters
			severity warning
			description "paid users without a first success after a day"
			playbook https://wiki.example.com/onboarding
			match {
				created_after     2026-01-01T00:00:00Z
				created_before    -1d
				plan              pro
				company           acme
				ttfhw_over        1d
				ttfhw_under       30d
				attributes.region eu-west
				attributes.tier   "gold plus"
			}
			behavior {
				metric   count
				endpoint /v1/*
				method   post
				status   4xx
				upstream api-a
				blocked  false
				limited  false
				window   3d
				at_least 5
			}
			email_user ops-mail {
				template      "Hi {{.User.Name}}, you made {{.Figures.Calls}} calls."
				html_template ` + "`" + `<p>Hi {{.User.Name}},</p>
<p>you made {{.Figures.Calls}} calls.</p>` + "`" + `
				subject       "{user.name}, need a hand with {user.attributes.product}?"
				cc            {user.attributes.csm_email} {$VIGIL_TEST_CS_TEAM}
				bcc           {user.attributes.se_email},{env.SE_TEAM}
			}
			notify cs-slack
			notify ops-mail
			repeat 14d
			disabled
		}
		alert "Quiet companies" {
			cohort company
			match {
				plan             enterprise
				attributes.owner sales-emea
			}
			behavior {
				window  7d
				at_most 10
			}
			notify cs-slack
		}
		alert "Heredoc template" {
			cohort
			behavior {
				window 1d
				at_most 0
			}
			email_user {
				channel ops-mail
				subject Welcome
				template <<TXT
					Hi {{ .User.Name }},

					your first call is one curl away.
					TXT
			}
		}
	}
}
`
	a := loadApp(t, adaptVigil(t, src))
	off := false
	want := []rules.Rule{
		{
			ID: "slow-starters", Name: "Slow starters", Enabled: &off, Type: rules.TypeCohort,
			Severity: "warning", Description: "paid users without a first success after a day",
			Playbook: "https://wiki.example.com/onboarding", Entity: "user",
			Match: map[string]string{
				"created_after": "2026-01-01T00:00:00Z", "created_before": "-1d", "plan": "pro", "company": "acme",
				"ttfhw_over": "1d", "ttfhw_under": "30d", "attributes.region": "eu-west", "attributes.tier": "gold plus",
			},
			Behavior: &rules.Behavior{
				Metric: "count",
				Filter: detector.Filter{Endpoint: "/v1/*", Method: "post", Status: "4xx", Upstream: "api-a",
					Blocked: &off, Limited: &off},
				Window: rules.Duration(3 * 24 * 3600e9), AtLeast: ptr(int64(5)),
			},
			EmailUser: &rules.EmailUser{
				Channel:      "ops-mail",
				Template:     "Hi {{.User.Name}}, you made {{.Figures.Calls}} calls.",
				HTMLTemplate: "<p>Hi {{.User.Name}},</p>\n<p>you made {{.Figures.Calls}} calls.</p>",
				Subject:      "{user.name}, need a hand with {user.attributes.product}?",
				// {$X} is replaced when the Caddyfile is read; {env.X} and {user.X} stay.
				Cc:  "{user.attributes.csm_email}, cs@example.com",
				Bcc: "{user.attributes.se_email},{env.SE_TEAM}",
			},
			Notify: []string{"cs-slack", "ops-mail"},
			Repeat: "14d",
		},
		{
			ID: "quiet-companies", Name: "Quiet companies", Type: rules.TypeCohort, Severity: "info",
			Entity:   "company",
			Match:    map[string]string{"plan": "enterprise", "attributes.owner": "sales-emea"},
			Behavior: &rules.Behavior{Metric: "count", Window: rules.Duration(7 * 24 * 3600e9), AtMost: ptr(int64(10))},
			Notify:   []string{"cs-slack"},
		},
		{
			ID: "heredoc-template", Name: "Heredoc template", Type: rules.TypeCohort, Severity: "info",
			Entity:   "user",
			Behavior: &rules.Behavior{Metric: "count", Window: rules.Duration(24 * 3600e9), AtMost: ptr(int64(0))},
			EmailUser: &rules.EmailUser{Channel: "ops-mail", Subject: "Welcome",
				Template: "Hi {{ .User.Name }},\n\nyour first call is one curl away."},
		},
	}
	for i := range want {
		if i >= len(a.Alerts) || !reflect.DeepEqual(a.Alerts[i], want[i]) {
			var got []byte
			if i < len(a.Alerts) {
				got, _ = json.Marshal(a.Alerts[i])
			}
			exp, _ := json.Marshal(want[i])
			t.Errorf("alerts[%d]\n got  %s\n want %s", i, got, exp)
		}
	}
	if len(a.Alerts) != len(want) {
		t.Errorf("%d rules, want %d", len(a.Alerts), len(want))
	}
}

// TestCohortCaddyfileStaticUnchanged checks that static and anomaly rules give the same
// rules as before cohorts were added to the alert block.
func TestCohortCaddyfileStaticUnchanged(t *testing.T) {
	const src = "vigil {\n channel s slack https://x\n alert \"a\" {\n metric count\n status 5xx\n window 1m\n at_least 3\n group_by user company\n notify s\n throttle once\n blocked\n }\n alert \"b\" {\n type anomaly\n anomaly severe\n metric latency\n direction up\n }\n}"
	var a App
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src)); err != nil {
		t.Fatal(err)
	}
	on := true
	want := []rules.Rule{
		{ID: "a", Name: "a", Type: "static", Metric: "count", Filter: detector.Filter{Status: "5xx", Blocked: &on},
			GroupBy: []string{"user", "company"}, Window: rules.Duration(60e9), Comparator: ">=", Threshold: ptr(3.0),
			Throttle: rules.Throttle{Once: true}, Notify: []string{"s"}, Severity: "warning"},
		{ID: "b", Name: "b", Type: "anomaly", Metric: "latency", Sensitivity: "severe", Direction: "up", Severity: "warning"},
	}
	if !reflect.DeepEqual(a.Alerts, want) {
		got, _ := json.Marshal(a.Alerts)
		exp, _ := json.Marshal(want)
		t.Fatalf("got  %s\nwant %s", got, exp)
	}
}

func TestCohortCaddyfileErrors(t *testing.T) {
	// rule wraps the lines of one alert block in a vigil block
	// that has an email and a slack channel.
	rule := func(lines ...string) string {
		return "vigil {\n channel mail email {\n smtp a:25\n from a@example.com\n to b@example.com\n }\n channel slack slack https://x\n alert \"c\" {\n" +
			strings.Join(lines, "\n") + "\n }\n}"
	}
	// The alert block starts on line 8; its first option is on line 9.
	const first = 9
	at := func(n int) string { return fmt.Sprintf(", at Testfile:%d", first+n) }
	cohort := []string{" cohort", " behavior {", " window 7d", " at_most 0", " }"} // lines 8-12
	with := func(extra ...string) string { return rule(append(append([]string(nil), cohort...), extra...)...) }
	for _, tc := range []struct{ name, input, err string }{
		{"unknown option", with(" colour red"), `alert "c": unrecognized option "colour"` + at(5)},
		{"unknown in behavior", rule(" cohort", " behavior {", " window 7d", " at_most 0", " speed 3", " }"),
			`behavior: unrecognized option "speed"` + at(4)},
		{"unknown match condition", with(" match {", " country fr", " }"), `match: unrecognized condition "country"` + at(6)},
		{"unknown in email_user", with(" email_user mail {", " reply_to x@example.com", " }"),
			`email_user: unrecognized option "reply_to"` + at(6)},
		{"missing value in behavior", rule(" cohort", " behavior {", " window", " at_most 0", " }"), "wrong argument count" + at(2)},
		{"missing value in match", with(" match {", " plan", " }"), "wrong argument count" + at(6)},
		{"missing subject value", with(" email_user mail {", " template t.tmpl", " subject", " }"), "wrong argument count" + at(7)},
		{"missing bcc value", with(" email_user mail {", " bcc", " }"), "wrong argument count" + at(6)},
		{"at_least and at_most", rule(" cohort", " behavior {", " window 7d", " at_most 0", " at_least 10", " }"),
			"behavior: at_least and at_most together: give one of them" + at(4)},
		{"neither at_least nor at_most", rule(" cohort", " behavior {", " window 7d", " }"),
			"behavior.at_least: give exactly one of at_least and at_most" + at(1)},
		{"negative count", rule(" cohort", " behavior {", " window 7d", " at_least -1", " }"), `at_least: "-1" is not a number of calls` + at(3)},
		{"static window in cohort", with(" window 7d"), "window is not an option of cohort rules: put it inside behavior { }" + at(5)},
		{"static option before cohort", rule(" at_least 3", " cohort", " behavior {", " window 7d", " at_most 0", " }"),
			"at_least is not an option of cohort rules: put it inside behavior { }" + at(0)},
		{"throttle in cohort", with(" throttle 1h"), "throttle is not an option of cohort rules: a cohort acts once per member; use repeat" + at(5)},
		{"group_by in cohort", with(" group_by user"), "group_by is not an option of cohort rules, only of static and anomaly rules" + at(5)},
		{"company filter in cohort", with(" company acme"), "select the members of a company with match { company <id> }" + at(5)},
		{"anomaly and cohort", with(" anomaly severe"), "anomaly: the rule is already of type cohort (line 9)" + at(5)},
		{"match in static", rule(" metric count", " above 3", " match {", " plan free", " }"),
			`match is only for cohort rules (add "cohort user" to the block), not static rules` + at(2)},
		{"repeat in static", rule(" metric count", " above 3", " repeat never"), "repeat is only for cohort rules" + at(2)},
		{"email_user in anomaly", rule(" anomaly slight", " metric count", " email_user mail {", " subject hi", " }"),
			"email_user is only for cohort rules (add \"cohort user\" to the block), not anomaly rules" + at(2)},
		{"bad behavior window", rule(" cohort", " behavior {", " window 7days", " at_most 0", " }"), `behavior: window: invalid duration "7days"` + at(2)},
		{"window too long", rule(" cohort", " behavior {", " window 40d", " at_most 0", " }"), "behavior.window: want a duration up to 35d" + at(2)},
		{"bad created_after", with(" match {", " created_after -4weeks", " }"), `match: created_after: "-4weeks": want -28d, -12h or an RFC 3339 time` + at(6)},
		{"bad ttfhw", with(" match {", " ttfhw_over soon", " }"), `match: ttfhw_over: "soon" is not a positive duration` + at(6)},
		{"bad repeat", with(" repeat sometimes"), `repeat: "sometimes": want never or a positive duration` + at(5)},
		{"bad status", rule(" cohort", " behavior {", " window 7d", " at_most 0", " status 6xx", " }"), "behavior.status: " + `"6xx"`},
		{"user filter in behavior", rule(" cohort", " behavior {", " user u-1", " }"), "behavior: user: a cohort counts each member's own calls" + at(2)},
		{"empty match", with(" match {", " }"), "match: no condition" + at(5)},
		{"no match or behavior", rule(" cohort", " notify slack"), "match: a cohort needs match or behavior (or both)" + at(-1)},
		{"bad entity", rule(" cohort team"), `cohort: "team": want user or company` + at(0)},
		{"entity twice", rule(" cohort user", " entity company"), "entity given twice (also line 9)" + at(1)},
		{"email_user for companies", rule(" cohort company", " behavior {", " window 7d", " at_most 0", " }", " email_user mail {", " template t.tmpl", " subject hi", " }"),
			"email_user: only for cohorts of users" + at(5)},
		{"email_user without subject", with(" email_user mail {", " template t.tmpl", " }"), "email_user.subject: required" + at(5)},
		{"email_user without template", with(" email_user mail {", " subject hi", " }"), "email_user.template: required" + at(5)},
		{"email_user channel twice", with(" email_user mail {", " channel mail", " }"), "email_user: channel given twice" + at(6)},
		{"email_user to a slack channel", with(" email_user {", " channel slack", " template t.tmpl", " subject hi", " }"),
			`alert "c": email_user.channel: "slack" is a slack channel, not email in this vigil block, at Testfile:8`},
		{"email_user to no channel", with(" email_user nowhere {", " template t.tmpl", " subject hi", " }"),
			`alert "c": email_user.channel: no channel named "nowhere" in this vigil block, at Testfile:8`},
		{"bad inline template", with(" email_user mail {", ` template "Hi {{.User.Name"`, " subject hi", " }"),
			"email_user: template: template: template:1: unclosed action" + at(6)},
		{"bad inline html template", with(" email_user mail {", ` html_template "<p>{{if .User}}</p>"`, " subject hi", " }"),
			"email_user: html_template: " + "template: html_template:1: unexpected EOF" + at(6)},
		{"severity", with(" severity loud"), `severity: "loud": want critical, error, warning or info` + at(5)},
		{"behavior twice", with(" behavior {", " window 1d", " at_most 1", " }"), "behavior given twice" + at(5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a App
			err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			// The message must hold tc.err up to its location; the location must end it.
			msg, loc, hasLoc := strings.Cut(tc.err, ", at Testfile:")
			if err == nil || !strings.Contains(err.Error(), msg) || (hasLoc && !strings.HasSuffix(err.Error(), ", at Testfile:"+loc)) {
				t.Fatalf("error %v\nwant one containing %q\ninput:\n%s", err, tc.err, numbered(tc.input))
			}
		})
	}
}

// numbered returns src with line numbers, for failure messages.
func numbered(src string) string {
	var b strings.Builder
	for i, l := range strings.Split(src, "\n") {
		fmt.Fprintf(&b, "%3d %s\n", i+1, l)
	}
	return b.String()
}

// TestCohortCaddyfileAdaptError checks that Caddy's adapter reports a bad cohort with the
// file name and line.
func TestCohortCaddyfileAdaptError(t *testing.T) {
	src := strings.Replace(missionCaddyfile, "at_most 0", "at_most 0\n\t\t\t\tat_least 1", 1)
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err == nil || !strings.Contains(err.Error(), "behavior: at_least and at_most together: give one of them, at Caddyfile:21") {
		t.Fatalf("error %v", err)
	}
}

// TestCohortCaddyfileRendersEmail hands the adapted rules to the cohort engine and
// renders each e-mail: the placeholders of subject and bcc reach it unchanged and are
// filled from the user's record; a template file and an inline heredoc template both work,
// the latter with a template variable written "{{ $name }}" (not "{{$name}}", which the
// Caddyfile takes for an environment variable).
func TestCohortCaddyfileRendersEmail(t *testing.T) {
	tmpl := filepath.Join(t.TempDir(), "stuck.tmpl")
	if err := os.WriteFile(tmpl, []byte("Hi {{.User.Name}}, need a hand?"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(missionCaddyfile, "template stuck.tmpl", "template "+tmpl, 1)
	src = strings.Replace(src, `subject  "Need a hand with our API?"`, `subject  "Need a hand with our API, {user.name}?"
				html_template <<HTML
					{{ $name := .User.Name }}<p>Hi {{ $name }},</p>
					<p>{{ .Rule.Name }}</p>
					HTML`, 1)
	a := loadApp(t, adaptVigil(t, src))

	store := detector.New(detector.Config{})
	reg := cohort.NewRegistry(0)
	eng := cohort.NewEngine(store, reg, rules.NewHistory(0), nil)
	if err := eng.SetRules(a.Alerts); err != nil {
		t.Fatalf("the cohort engine refuses the adapted rules: %v", err)
	}
	if err := reg.Upsert([]cohort.User{{ID: "u-1", Email: "ada@example.com", Name: "Ada", Plan: "free",
		CreatedAt: time.Now().Add(-10 * 24 * time.Hour), Attributes: map[string]string{"se_email": "se@example.com"}}}); err != nil {
		t.Fatal(err)
	}
	msg, err := eng.Preview("stuck-integrations", "u-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "Need a hand with our API, Ada?" || len(msg.Bcc) != 1 || msg.Bcc[0] != "se@example.com" ||
		msg.Text != "Hi Ada, need a hand?" || msg.HTML != "<p>Hi Ada,</p>\n<p>Too many 4xx while integrating</p>" {
		t.Fatalf("e-mail %+v", msg)
	}
}

// TestCohortCaddyfileValidate runs what "caddy adapt --validate" and "caddy validate" run
// on the mission Caddyfile: the vigil app is decoded strictly, provisioned and validated.
func TestCohortCaddyfileValidate(t *testing.T) {
	t.Setenv("SMTP_PASSWORD", "secret")
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(missionCaddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("validate %s: %v", out, err)
	}
}

// The two ttfhw rules of the customer-success issue in the Caddyfile: a new user with
// more than 5 400s and a TTFHW over 5 minutes; this week's new users' median TTFHW
// abnormally long.
func TestTTFHWCaddyfile(t *testing.T) {
	const src = "vigil {\n alert \"slow start\" {\n metric ttfhw\n status 400\n group_by user\n window 1h\n min_calls 6\n above 300\n throttle once\n }\n alert \"slow week\" {\n anomaly moderate\n metric ttfhw\n direction up\n min_calls 5\n }\n}"
	var a App
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src)); err != nil {
		t.Fatal(err)
	}
	want := []rules.Rule{
		{ID: "slow-start", Name: "slow start", Type: "static", Metric: "ttfhw", Filter: detector.Filter{Status: "400"},
			GroupBy: []string{"user"}, Window: rules.Duration(time.Hour), MinCalls: 6, Comparator: ">", Threshold: ptr(300.0),
			Throttle: rules.Throttle{Once: true}, Severity: "warning"},
		{ID: "slow-week", Name: "slow week", Type: "anomaly", Metric: "ttfhw", Sensitivity: "moderate", Direction: "up", MinCalls: 5, Severity: "warning"},
	}
	if !reflect.DeepEqual(a.Alerts, want) {
		got, _ := json.Marshal(a.Alerts)
		exp, _ := json.Marshal(want)
		t.Fatalf("got  %s\nwant %s", got, exp)
	}
	for i := range a.Alerts {
		r := a.Alerts[i]
		r.Normalize()
		if err := r.Validate(); err != nil {
			t.Errorf("rule %q: %v", r.Name, err)
		}
	}
}
