package notifier

import (
	"fmt"
	"log/slog"
)

// redacted is what every printed form of a Secret shows.
const redacted = "[redacted]"

// Secret holds a resolved credential: a webhook signing secret, a PagerDuty routing key, an
// SMTP password, an SMS auth token or a Slack webhook URL. Every way Go has of printing a
// value (String, GoString, fmt verbs, JSON, slog) shows "[redacted]"; only Reveal returns
// the value, and only the code that puts it on the wire calls it.
type Secret struct {
	value string
}

// NewSecret wraps a resolved credential.
func NewSecret(value string) Secret { return Secret{value: value} }

// Reveal returns the credential itself, for putting it on the wire.
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether the secret is empty (not configured).
func (s Secret) IsZero() bool { return s.value == "" }

// String returns "[redacted]".
func (s Secret) String() string { return redacted }

// GoString returns "[redacted]", so that %#v does not print the value either.
func (s Secret) GoString() string { return redacted }

// Format prints "[redacted]" whatever the verb and flags (%s, %v, %+v, %q, %x ...).
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", redacted)
		return
	}
	fmt.Fprint(f, redacted)
}

// MarshalJSON returns the JSON string "[redacted]".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[redacted]", for encoders that use encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue returns "[redacted]" to log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

var (
	_ fmt.Stringer   = Secret{}
	_ fmt.GoStringer = Secret{}
	_ fmt.Formatter  = Secret{}
	_ slog.LogValuer = Secret{}
)
