package notifier

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf16"

	"github.com/vigilgw/vigil/detector/alert"
)

// DefaultSMSURL is Twilio's API; any provider that speaks its Messages resource works.
const DefaultSMSURL = "https://api.twilio.com"

// SMS segment sizes.
const (
	smsGSMSegment  = 160 // GSM-7 septets
	smsUCS2Segment = 70  // UTF-16 code units
)

// SMS sends a batch as a text message through a Twilio-compatible API: a form POST of To,
// From and Body to URL/2010-04-01/Accounts/ACCOUNT/Messages.json with HTTP Basic auth
// (account, token), one request per recipient. The body is cut to one segment (160 GSM-7
// characters, or 70 when it needs UCS-2) and shows no samples: state, rule, value against
// threshold and group for one event; counts and rule names for several.
type SMS struct {
	base
	endpoint *url.URL
	display  string
	account  string
	token    Secret
	from     string
	to       []string
}

func newSMS(b base, c Config) (*SMS, error) {
	u, err := c.endpoint(DefaultSMSURL)
	if err != nil {
		return nil, err
	}
	u = u.JoinPath("2010-04-01", "Accounts", c.Account, "Messages.json")
	return &SMS{
		base:     b,
		endpoint: u,
		display:  redactURL(u, false),
		account:  c.Account,
		token:    NewSecret(c.Token),
		from:     c.From,
		to:       append([]string(nil), c.To...),
	}, nil
}

// Send texts b to every recipient, in order.
func (s *SMS) Send(ctx context.Context, b alert.Batch) error {
	if len(b.Events) == 0 {
		return errEmptyBatch
	}
	text := fitSegment(smsText(&b))
	for i, to := range s.to {
		form := url.Values{"To": {to}, "From": {s.from}, "Body": {text}}
		err := s.post(ctx, httpRequest{
			url:         s.endpoint,
			display:     s.display,
			contentType: "application/x-www-form-urlencoded",
			body:        []byte(form.Encode()),
			basicUser:   s.account,
			basicPass:   s.token,
		})
		if err != nil {
			if len(s.to) > 1 {
				return wrapDelivery(err, fmt.Sprintf("recipient %d of %d", i+1, len(s.to)))
			}
			return err
		}
	}
	return nil
}

// smsText is the message of a batch, before it is cut to a segment.
func smsText(b *alert.Batch) string {
	if len(b.Events) == 1 {
		ev := &b.Events[0]
		if ev.Type == alert.TypeTest {
			return "Vigil TEST: " + ev.RuleName + ". " + ev.Summary
		}
		s := "Vigil " + stateWord(ev) + ": " + ev.RuleName + " " + conditionText(ev)
		if g := groupText(ev.Group); g != "" {
			s += " " + g
		}
		return s
	}
	return "Vigil: " + headline(b) + ": " + ruleNames(b, 3)
}

// fitSegment cuts s to one SMS segment: 160 GSM-7 septets (extension characters count
// two), or 70 UTF-16 code units when s holds a character GSM-7 lacks. A cut text ends
// with "...".
func fitSegment(s string) string {
	if septets, ok := gsmSeptets(s); ok {
		if septets <= smsGSMSegment {
			return s
		}
		var b strings.Builder
		n := 0
		for _, r := range s {
			w := 1
			if strings.ContainsRune(gsmExtension, r) {
				w = 2
			}
			if n+w > smsGSMSegment-3 {
				break
			}
			n += w
			b.WriteRune(r)
		}
		return strings.TrimRight(b.String(), " ") + "..."
	}
	if len(utf16.Encode([]rune(s))) <= smsUCS2Segment {
		return s
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		w := utf16.RuneLen(r)
		if n+w > smsUCS2Segment-1 {
			break
		}
		n += w
		b.WriteRune(r)
	}
	return b.String() + "…"
}

// The GSM 03.38 default alphabet and its extension table (each extension character takes
// an escape septet too).
const (
	gsmBasic = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
		"¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
	gsmExtension = "\f^{}\\[~]|€"
)

// gsmSeptets counts the septets s takes in GSM-7, and reports whether it fits GSM-7 at all.
func gsmSeptets(s string) (int, bool) {
	n := 0
	for _, r := range s {
		switch {
		case strings.ContainsRune(gsmBasic, r):
			n++
		case strings.ContainsRune(gsmExtension, r):
			n += 2
		default:
			return 0, false
		}
	}
	return n, true
}

var _ Channel = (*SMS)(nil)
