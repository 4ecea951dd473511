package notifier

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// whsecPrefix marks a Standard Webhooks secret whose key is the base64 after the prefix.
const whsecPrefix = "whsec_"

// Webhook types of Vigil's webhook body.
const (
	WebhookFiring   = "alert.firing"   // every event of the batch is firing
	WebhookResolved = "alert.resolved" // every event is resolved
	WebhookMixed    = "alert.mixed"    // some fire, some resolve
	WebhookTest     = "alert.test"     // a test notification
)

// WebhookPayload is the JSON body a webhook channel POSTs (unless its format is
// alertmanager): the batch's events in the admin API's event shape.
type WebhookPayload struct {
	// Type is alert.firing, alert.resolved, alert.mixed or alert.test.
	Type string `json:"type"`
	// Timestamp is when the newest event of the batch was raised (RFC 3339), the same on
	// every retry.
	Timestamp time.Time `json:"timestamp"`
	// Count is the number of events.
	Count int `json:"count"`
	// Incident names the correlated incident the batch is about, if any.
	Incident string `json:"incident,omitempty"`
	// Events are the batch's events, in the order they were raised.
	Events []alert.Event `json:"events"`
}

// Webhook POSTs a batch as JSON to a URL, signed per Standard Webhooks v1 when it has a
// secret: headers webhook-id (the same on every retry of a batch), webhook-timestamp (Unix
// seconds of the attempt) and webhook-signature ("v1," and the base64 HMAC-SHA256 of
// "id.timestamp.body").
type Webhook struct {
	base
	url     *url.URL
	display string
	key     Secret // HMAC key; zero: unsigned
	format  string
}

func newWebhook(b base, c Config) (*Webhook, error) {
	u, err := c.endpoint("")
	if err != nil {
		return nil, err
	}
	w := &Webhook{base: b, url: u, display: redactURL(u, false), format: c.Format}
	if c.Secret != "" {
		key, err := webhookKey(c.Secret)
		if err != nil {
			return nil, &ConfigError{Channel: c.Name, Field: "secret", Problem: err.Error()}
		}
		w.key = NewSecret(string(key))
	}
	return w, nil
}

// webhookKey returns the HMAC key of a secret: the decoded bytes after whsec_, or the raw
// bytes of any other value.
func webhookKey(secret string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(secret, whsecPrefix); ok {
		key, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return nil, fmt.Errorf("the part after whsec_ is not valid base64")
		}
		if len(key) == 0 {
			return nil, fmt.Errorf("the part after whsec_ is empty")
		}
		return key, nil
	}
	return []byte(secret), nil
}

// Send POSTs b.
func (w *Webhook) Send(ctx context.Context, b alert.Batch) error {
	if len(b.Events) == 0 {
		return errEmptyBatch
	}
	var payload any
	if w.format == FormatAlertmanager {
		payload = w.alertmanagerMessage(&b)
	} else {
		payload = webhookPayload(&b, w.now())
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return Permanent(fmt.Errorf("webhook %q: encoding the body: %w", w.name, err))
	}
	h := http.Header{}
	if !w.key.IsZero() {
		id := webhookID(w.name, &b)
		ts := strconv.FormatInt(w.now().Unix(), 10)
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", "v1,"+signWebhook([]byte(w.key.Reveal()), id, ts, body))
	}
	return w.post(ctx, httpRequest{url: w.url, display: w.display, contentType: "application/json", body: body, header: h})
}

// webhookPayload builds Vigil's webhook body for b.
func webhookPayload(b *alert.Batch, now time.Time) WebhookPayload {
	typ := WebhookMixed
	switch firing := b.Firing(); {
	case isTest(b):
		typ = WebhookTest
	case firing == len(b.Events):
		typ = WebhookFiring
	case firing == 0:
		typ = WebhookResolved
	}
	return WebhookPayload{
		Type:      typ,
		Timestamp: newestTime(b, now).UTC(),
		Count:     len(b.Events),
		Incident:  b.Incident,
		Events:    b.Events,
	}
}

// webhookID derives the message id from the channel and the batch's events, so that every
// retry of a batch carries the same id (receivers deduplicate on it) and no two batches do.
func webhookID(channel string, b *alert.Batch) string {
	h := sha256.New()
	h.Write([]byte(channel))
	for i := range b.Events {
		h.Write([]byte{0})
		h.Write([]byte(b.Events[i].ID))
	}
	h.Write([]byte{0})
	h.Write([]byte(b.Incident))
	return "msg_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// signWebhook returns the base64 HMAC-SHA256 of "id.timestamp.body".
func signWebhook(key []byte, id, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

var _ Channel = (*Webhook)(nil)
