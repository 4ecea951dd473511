package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/vigilgw/vigil/detector/alert"
)

// Slack's limits on Block Kit messages.
const (
	slackMaxBlocks     = 50
	slackMaxHeader     = 150
	slackMaxSectionLen = 3000
)

// Slack posts a batch to a Slack incoming webhook: "text" is a one-line summary (the
// notification and fallback text) and "blocks" hold a header and one section per event
// (state, rule, summary, value against threshold, group, window, samples, and a playbook
// button when the playbook is a link). Above 49 events, the last block says how many more
// there are. User data is escaped (&, <, >), so that nothing in it can mention @channel.
// The webhook URL is the credential: it never shows in logs or errors.
type Slack struct {
	base
	url *url.URL
}

func newSlack(b base, c Config) (*Slack, error) {
	u, err := parseHTTPURL(c.URL)
	if err != nil {
		return nil, &ConfigError{Channel: c.Name, Field: "url", Problem: "not an http(s) URL"}
	}
	return &Slack{base: b, url: u}, nil
}

// slackMessage is the body of an incoming-webhook request.
type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

// slackBlock is a header, section or context block.
type slackBlock struct {
	Type      string       `json:"type"`
	Text      *slackText   `json:"text,omitempty"`
	Accessory *slackButton `json:"accessory,omitempty"`
	Elements  []slackText  `json:"elements,omitempty"`
}

// slackText is a text object.
type slackText struct {
	Type string `json:"type"` // plain_text or mrkdwn
	Text string `json:"text"`
}

// slackButton is a link button.
type slackButton struct {
	Type string    `json:"type"`
	Text slackText `json:"text"`
	URL  string    `json:"url"`
}

// Send posts b.
func (s *Slack) Send(ctx context.Context, b alert.Batch) error {
	if len(b.Events) == 0 {
		return errEmptyBatch
	}
	body, err := json.Marshal(slackPayload(&b))
	if err != nil {
		return Permanent(fmt.Errorf("slack %q: encoding the message: %w", s.name, err))
	}
	return s.post(ctx, httpRequest{url: s.url, display: redactURL(s.url, true), contentType: "application/json", body: body})
}

// slackPayload builds the message for b.
func slackPayload(b *alert.Batch) slackMessage {
	m := slackMessage{Text: slackEmoji(b) + " " + slackEscape(slackSummary(b))}
	m.Blocks = append(m.Blocks, slackBlock{Type: "header", Text: &slackText{Type: "plain_text", Text: truncateRunes(headline(b), slackMaxHeader)}})
	shown := len(b.Events)
	if shown > slackMaxBlocks-1 {
		shown = slackMaxBlocks - 2 // header, sections, and the "more" context block
	}
	for i := range b.Events[:shown] {
		m.Blocks = append(m.Blocks, slackSection(&b.Events[i]))
	}
	if rest := len(b.Events) - shown; rest > 0 {
		firing := 0
		for i := range b.Events[shown:] {
			if b.Events[shown+i].State == alert.Firing {
				firing++
			}
		}
		m.Blocks = append(m.Blocks, slackBlock{Type: "context", Elements: []slackText{{Type: "mrkdwn", Text: fmt.Sprintf(
			"…and %d more events not shown (%d firing, %d resolved)", rest, firing, rest-firing)}}})
	}
	return m
}

// slackSummary is the one-line text of a batch.
func slackSummary(b *alert.Batch) string {
	if len(b.Events) == 1 {
		ev := &b.Events[0]
		return stateWord(ev) + " " + ev.RuleName + ": " + summaryText(ev)
	}
	return headline(b) + " (" + ruleNames(b, 3) + ")"
}

// slackEmoji marks the batch's state at a glance.
func slackEmoji(b *alert.Batch) string {
	switch {
	case isTest(b):
		return ":white_check_mark:"
	case b.Firing() == 0:
		return ":large_green_circle:"
	}
	return ":red_circle:"
}

// slackSection is the block of one event.
func slackSection(ev *alert.Event) slackBlock {
	var t strings.Builder
	icon := ":red_circle:"
	switch {
	case ev.Type == alert.TypeTest:
		icon = ":white_check_mark:"
	case ev.State == alert.Resolved:
		icon = ":large_green_circle:"
	}
	fmt.Fprintf(&t, "%s *%s* *%s*\n%s", icon, stateWord(ev), slackEscape(ev.RuleName), slackEscape(summaryText(ev)))
	fmt.Fprintf(&t, "\n*Value:* %s", slackEscape(conditionText(ev)))
	if ev.Window != "" {
		fmt.Fprintf(&t, "  *Window:* %s", slackEscape(ev.Window))
	}
	if g := groupText(ev.Group); g != "" {
		fmt.Fprintf(&t, "\n*Group:* `%s`", slackEscape(g))
	}
	pb := playbookURL(ev)
	if ev.Playbook != "" && pb == "" {
		fmt.Fprintf(&t, "\n*Playbook:* %s", slackEscape(ev.Playbook))
	}
	if len(ev.Samples) > 0 {
		t.WriteString("\n*Samples:*\n```")
		for i := range ev.Samples {
			t.WriteString("\n" + slackEscape(sampleText(&ev.Samples[i])))
		}
		t.WriteString("\n```")
	}
	block := slackBlock{Type: "section", Text: &slackText{Type: "mrkdwn", Text: slackCut(t.String(), slackMaxSectionLen)}}
	if pb != "" && len(pb) <= 3000 {
		block.Accessory = &slackButton{Type: "button", Text: slackText{Type: "plain_text", Text: "Playbook"}, URL: pb}
	}
	return block
}

// slackEscape escapes the three characters Slack's mrkdwn gives a meaning to.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// slackCut cuts escaped mrkdwn text to at most n characters without splitting an entity,
// and closes a code block left open.
func slackCut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)[:n-5]
	out := string(r)
	if amp := strings.LastIndexByte(out, '&'); amp >= 0 && !strings.Contains(out[amp:], ";") {
		out = out[:amp]
	}
	out += "…"
	if strings.Count(out, "```")%2 == 1 {
		out += "\n```"
	}
	return out
}

var _ Channel = (*Slack)(nil)
