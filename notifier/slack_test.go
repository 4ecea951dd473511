package notifier

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vigilgw/vigil/detector/alert"
)

// slackBody is the incoming-webhook schema the test checks against.
type slackBody struct {
	Text   string `json:"text"`
	Blocks []struct {
		Type string `json:"type"`
		Text *struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"text"`
		Accessory *struct {
			Type string `json:"type"`
			Text struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"text"`
			URL string `json:"url"`
		} `json:"accessory"`
		Elements []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"elements"`
	} `json:"blocks"`
}

func TestSlackPayload(t *testing.T) {
	many := make([]alert.Event, 120)
	for i := range many {
		many[i] = firingEvent(fmt.Sprintf("ev_%d", i))
	}
	hostile := firingEvent("ev_h")
	hostile.RuleName = "<!channel> & friends"
	hostile.Group = map[string]string{"user": "<@U123>"}
	hostile.Summary = "a <b> & c"
	hostile.Samples[0].Path = "/x?a=1&b=<2>"
	long := firingEvent("ev_long")
	long.Summary = strings.Repeat("é&", 2000)
	tests := []struct {
		name       string
		batch      alert.Batch
		wantBlocks int
		wantInText []string // in the blocks' texts
		notInBody  []string
	}{
		{name: "one firing", batch: batchOf("s", firingEvent("ev_1")), wantBlocks: 2,
			wantInText: []string{"*FIRING*", "*401 storm*", "31 (threshold &gt; 20)", "user=u-42", "15m", "GET /users/42/orders -&gt; 401 in 12ms"}},
		{name: "one resolved", batch: batchOf("s", resolvedEvent("ev_1")), wantBlocks: 2, wantInText: []string{"*RESOLVED*"}},
		{name: "escaping", batch: batchOf("s", hostile), wantBlocks: 2,
			wantInText: []string{"&lt;!channel&gt; &amp; friends", "&lt;@U123&gt;", "/x?a=1&amp;b=&lt;2&gt;"},
			notInBody:  []string{"<!channel>", "<@U123>", "<b>"}},
		{name: "120 events summarised", batch: batchOf("s", many...), wantBlocks: 50, wantInText: []string{"…and 72 more events not shown (72 firing, 0 resolved)"}},
		{name: "long section cut", batch: batchOf("s", long), wantBlocks: 2},
		{name: "test notification", batch: TestBatch("s", t0), wantBlocks: 2, wantInText: []string{"*TEST*", TestRuleName}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, status(200, "ok"))
			req := sendThrough(t, rc, Config{Name: "s", Type: TypeSlack, URL: rc.URL + "/services/T0/B0/XXX"}, Options{}, tt.batch, 1)[0]
			if req.Path != "/services/T0/B0/XXX" || req.Header.Get("Content-Type") != "application/json" {
				t.Errorf("request: %s %s", req.Path, req.Header.Get("Content-Type"))
			}
			var m slackBody
			dec := json.NewDecoder(strings.NewReader(string(req.Body)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("body: %v\n%s", err, req.Body)
			}
			if m.Text == "" || strings.Contains(m.Text, "\n") {
				t.Errorf("text %q: want a non-empty single line", m.Text)
			}
			if len(m.Blocks) != tt.wantBlocks {
				t.Fatalf("blocks: %d, want %d", len(m.Blocks), tt.wantBlocks)
			}
			var texts strings.Builder
			for i, b := range m.Blocks {
				switch {
				case i == 0:
					if b.Type != "header" || b.Text == nil || b.Text.Type != "plain_text" || utf8.RuneCountInString(b.Text.Text) > 150 {
						t.Errorf("block 0: want a plain_text header of at most 150 characters, got %+v", b)
					}
				case b.Type == "section":
					if b.Text == nil || b.Text.Type != "mrkdwn" || b.Text.Text == "" || utf8.RuneCountInString(b.Text.Text) > 3000 {
						t.Errorf("block %d: want mrkdwn text of 1-3000 characters", i)
					}
					if strings.Count(b.Text.Text, "```")%2 != 0 {
						t.Errorf("block %d: code block left open", i)
					}
					if b.Accessory != nil && (b.Accessory.Type != "button" || b.Accessory.URL != "https://wiki.example.com/401" || b.Accessory.Text.Type != "plain_text") {
						t.Errorf("block %d: accessory %+v, want the playbook button", i, b.Accessory)
					}
					if b.Accessory == nil && tt.batch.Events[i-1].Playbook != "" {
						t.Errorf("block %d: no playbook button", i)
					}
					texts.WriteString(b.Text.Text)
				case b.Type == "context":
					if i != len(m.Blocks)-1 || len(b.Elements) != 1 || b.Elements[0].Type != "mrkdwn" {
						t.Errorf("block %d: context block %+v, want the last block with one mrkdwn element", i, b)
					}
					texts.WriteString(b.Elements[0].Text)
				default:
					t.Errorf("block %d: unexpected type %q", i, b.Type)
				}
			}
			for _, want := range tt.wantInText {
				if !strings.Contains(texts.String(), want) {
					t.Errorf("blocks lack %q:\n%s", want, texts.String())
				}
			}
			for _, bad := range tt.notInBody {
				if strings.Contains(string(req.Body), bad) {
					t.Errorf("body holds unescaped %q", bad)
				}
			}
		})
	}
}

func TestSlackErrorsAreClassified(t *testing.T) {
	tests := []struct {
		name      string
		code      int
		body      string
		wantRetry bool
	}{
		{name: "hook gone", code: 404, body: "no_service", wantRetry: false},
		{name: "archived", code: 410, body: "channel_is_archived", wantRetry: false},
		{name: "bad payload", code: 400, body: "invalid_payload", wantRetry: false},
		{name: "rate limited", code: 429, body: "rate_limited", wantRetry: true},
		{name: "server error", code: 500, body: "oops", wantRetry: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, status(tt.code, tt.body))
			ch := newTestChannel(t, Config{Name: "s", Type: TypeSlack, URL: rc.URL + "/services/T0/B0/SECRETPART"}, Options{})
			err := ch.Send(sendCtx(t), batchOf("s", firingEvent("ev_1")))
			if err == nil {
				t.Fatal("no error")
			}
			if retry, _ := Classify(err); retry != tt.wantRetry {
				t.Errorf("retryable = %v, want %v (%v)", retry, tt.wantRetry, err)
			}
			if !strings.Contains(err.Error(), tt.body) || strings.Contains(err.Error(), "SECRETPART") {
				t.Errorf("error %q: want the answer %q and no part of the URL's path", err, tt.body)
			}
		})
	}
}
