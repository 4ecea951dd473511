package notifier

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"text/template"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// maxSubject bounds the subject line, in characters.
const maxSubject = 200

// buildMessage renders m as an RFC 5322 message from from, and returns it with the
// envelope recipients (To, Cc and Bcc; Bcc appears in no header).
func buildMessage(from *mail.Address, m Message, now time.Time, host string) ([]byte, []string, error) {
	if m.Text == "" && m.HTML == "" {
		return nil, nil, errors.New("message has neither a text nor an HTML part")
	}
	var rcpts []string
	lists := make(map[string][]*mail.Address, 3)
	for _, l := range []struct {
		name  string
		addrs []string
	}{{"To", m.To}, {"Cc", m.Cc}, {"Bcc", m.Bcc}} {
		for _, raw := range l.addrs {
			a, err := mail.ParseAddress(raw)
			if err != nil {
				return nil, nil, fmt.Errorf("%s address %q: %w", l.name, raw, err)
			}
			lists[l.name] = append(lists[l.name], a)
			rcpts = append(rcpts, a.Address)
		}
	}
	if len(rcpts) == 0 {
		return nil, nil, errors.New("message has no recipient")
	}

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, part := range []struct{ typ, content string }{{"text/plain", m.Text}, {"text/html", m.HTML}} {
		if part.content == "" {
			continue
		}
		w, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {part.typ + "; charset=UTF-8"},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, nil, err
		}
		qp := quotedprintable.NewWriter(w)
		if _, err := qp.Write([]byte(part.content)); err != nil {
			return nil, nil, err
		}
		if err := qp.Close(); err != nil {
			return nil, nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, nil, err
	}

	var msg bytes.Buffer
	header := func(name, value string) { msg.WriteString(name + ": " + value + "\r\n") }
	header("From", from.String())
	if l := lists["To"]; len(l) > 0 {
		header("To", addressList(l))
	}
	if l := lists["Cc"]; len(l) > 0 {
		header("Cc", addressList(l))
	}
	subject := truncateRunes(strings.Join(strings.Fields(m.Subject), " "), maxSubject)
	header("Subject", mime.QEncoding.Encode("utf-8", subject))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", messageID(from, now, host))
	header("MIME-Version", "1.0")
	header("Auto-Submitted", "auto-generated")
	header("Content-Type", `multipart/alternative; boundary="`+mw.Boundary()+`"`)
	msg.WriteString("\r\n")
	msg.Write(body.Bytes())
	return msg.Bytes(), rcpts, nil
}

// addressList prints addresses for a header.
func addressList(l []*mail.Address) string {
	parts := make([]string, len(l))
	for i, a := range l {
		parts[i] = a.String()
	}
	return strings.Join(parts, ", ")
}

// messageID returns a new unique Message-ID in the sender's domain.
func messageID(from *mail.Address, now time.Time, host string) string {
	var r [12]byte
	_, _ = rand.Read(r[:])
	domain := host
	if at := strings.LastIndexByte(from.Address, '@'); at >= 0 {
		domain = from.Address[at+1:]
	}
	return fmt.Sprintf("<%d.%s@%s>", now.Unix(), hex.EncodeToString(r[:]), domain)
}

// emailSubject says FIRING, RESOLVED or TEST, with counts for a batch of several events,
// and the rule names: "[FIRING] 401 storm (user=u-42)", "[FIRING:2, RESOLVED:1] 401 storm,
// 5xx anomaly".
func emailSubject(b *alert.Batch) string {
	if len(b.Events) == 1 {
		ev := &b.Events[0]
		s := "[" + stateWord(ev) + "] " + ev.RuleName
		if g := groupText(ev.Group); g != "" && ev.Type != alert.TypeTest {
			s += " (" + g + ")"
		}
		return s
	}
	firing := b.Firing()
	var counts []string
	if isTest(b) {
		counts = append(counts, fmt.Sprintf("TEST:%d", len(b.Events)))
	} else {
		if firing > 0 {
			counts = append(counts, fmt.Sprintf("FIRING:%d", firing))
		}
		if resolved := len(b.Events) - firing; resolved > 0 {
			counts = append(counts, fmt.Sprintf("RESOLVED:%d", resolved))
		}
	}
	s := "[" + strings.Join(counts, ", ") + "] "
	if b.Incident != "" {
		s += "Incident " + b.Incident + ": "
	}
	return s + ruleNames(b, 3)
}

// emailEvent is what the templates show of one event.
type emailEvent struct {
	State, Rule, Summary, Condition, Metric, Group, Playbook, PlaybookURL string
	Started, Resolved                                                     string
	Firing                                                                bool
	Samples                                                               []string
}

// emailView is what the templates show of a batch.
type emailView struct {
	Headline, Incident string
	Events             []emailEvent
	Link               string
}

// emailMessage renders b as a Message (without recipients).
func emailMessage(b *alert.Batch, externalURL string) (Message, error) {
	v := emailView{Headline: headline(b), Incident: b.Incident, Link: externalURL}
	for i := range b.Events {
		ev := &b.Events[i]
		e := emailEvent{
			State:       stateWord(ev),
			Rule:        ev.RuleName,
			Summary:     summaryText(ev),
			Condition:   conditionText(ev),
			Metric:      strings.TrimSpace(ev.Metric + " over " + ev.Window),
			Group:       groupText(ev.Group),
			Playbook:    ev.Playbook,
			PlaybookURL: playbookURL(ev),
			Firing:      ev.State != alert.Resolved,
		}
		if ev.Window == "" {
			e.Metric = ev.Metric
		}
		if !ev.StartedAt.IsZero() {
			e.Started = ev.StartedAt.UTC().Format(time.RFC3339)
		}
		if ev.State == alert.Resolved {
			e.Resolved = resolvedAt(ev).Format(time.RFC3339)
		}
		for j := range ev.Samples {
			e.Samples = append(e.Samples, sampleText(&ev.Samples[j]))
		}
		v.Events = append(v.Events, e)
	}
	var text, html bytes.Buffer
	if err := emailText.Execute(&text, v); err != nil {
		return Message{}, err
	}
	if err := emailHTML.Execute(&html, v); err != nil {
		return Message{}, err
	}
	return Message{Subject: emailSubject(b), Text: text.String(), HTML: html.String()}, nil
}

var emailText = template.Must(template.New("text").Parse(`{{.Headline}}
{{- if .Incident}}
Incident: {{.Incident}}{{end}}
{{range .Events}}
[{{.State}}] {{.Rule}}
  {{.Summary}}
  Value:    {{.Condition}}
{{- if .Metric}}
  Metric:   {{.Metric}}{{end}}
{{- if .Group}}
  Group:    {{.Group}}{{end}}
{{- if .Started}}
  Started:  {{.Started}}{{end}}
{{- if .Resolved}}
  Resolved: {{.Resolved}}{{end}}
{{- if .Playbook}}
  Playbook: {{.Playbook}}{{end}}
{{- if .Samples}}
  Samples:
{{- range .Samples}}
    {{.}}{{end}}{{end}}
{{end}}
-- 
Sent by Vigil.{{if .Link}} Events: {{.Link}}/events{{end}}
`))

var emailHTML = htmltemplate.Must(htmltemplate.New("html").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Headline}}</title></head>
<body style="font-family: sans-serif; font-size: 14px;">
<h2>{{.Headline}}</h2>
{{- if .Incident}}
<p>Incident: <b>{{.Incident}}</b></p>{{end}}
{{range .Events}}
<div style="border-left: 4px solid {{if .Firing}}#d33{{else}}#2a2{{end}}; padding-left: 8px; margin: 12px 0;">
<p><b>[{{.State}}] {{.Rule}}</b><br>{{.Summary}}</p>
<table>
<tr><td>Value</td><td>{{.Condition}}</td></tr>
{{- if .Metric}}
<tr><td>Metric</td><td>{{.Metric}}</td></tr>{{end}}
{{- if .Group}}
<tr><td>Group</td><td><code>{{.Group}}</code></td></tr>{{end}}
{{- if .Started}}
<tr><td>Started</td><td>{{.Started}}</td></tr>{{end}}
{{- if .Resolved}}
<tr><td>Resolved</td><td>{{.Resolved}}</td></tr>{{end}}
{{- if .PlaybookURL}}
<tr><td>Playbook</td><td><a href="{{.PlaybookURL}}">{{.PlaybookURL}}</a></td></tr>
{{- else if .Playbook}}
<tr><td>Playbook</td><td>{{.Playbook}}</td></tr>{{end}}
</table>
{{- if .Samples}}
<p>Samples:</p>
<pre>{{range .Samples}}{{.}}
{{end}}</pre>{{end}}
</div>
{{end}}
<p style="color: #777;">Sent by Vigil.{{if .Link}} <a href="{{.Link}}/events">Events</a>{{end}}</p>
</body></html>
`))
