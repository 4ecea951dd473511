package notifier

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// Test notifications ("caddy vigil test-channel NAME").
const (
	// TestRuleID and TestRuleName name the rule of a test notification.
	TestRuleID   = "vigil-test"
	TestRuleName = "Vigil test notification"
	// TestSummary is the summary of a test notification.
	TestSummary = "This is a test notification sent by \"caddy vigil test-channel\"; no action is needed."
)

// TestBatch returns the clearly marked test notification for channel: one firing event of
// type alert.TypeTest and severity info, rule "Vigil test notification", with a summary
// saying it is a test. Channels that keep alerts alive (Alertmanager) let it expire by
// itself; PagerDuty opens an info alert under the dedup_key "vigil/vigil-test", which
// later tests reuse.
func TestBatch(channel string, now time.Time) alert.Batch {
	var r [8]byte
	_, _ = rand.Read(r[:])
	now = now.UTC()
	return alert.Batch{
		Channel: channel,
		Events: []alert.Event{{
			ID:            "ev_test_" + hex.EncodeToString(r[:]),
			RuleID:        TestRuleID,
			RuleName:      TestRuleName,
			Type:          alert.TypeTest,
			State:         alert.Firing,
			Threshold:     "test",
			Severity:      alert.SeverityInfo,
			Group:         map[string]string{},
			Time:          now,
			StartedAt:     now,
			Channels:      []string{channel},
			Notifications: []alert.Delivery{},
			Samples:       []alert.Sample{},
			Summary:       TestSummary,
		}},
	}
}
