package notifier

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	email := func(mod func(*Config)) Config {
		c := Config{Name: "mail", Type: TypeEmail, SMTP: "smtp.example.com:587", From: "alerts@example.com", To: []string{"ops@example.com"}}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	tests := []struct {
		name      string
		cfg       Config
		wantField string // "" for valid
		notInErr  string
	}{
		{name: "webhook", cfg: Config{Name: "audit", Type: TypeWebhook, URL: "https://hooks.example.com/vigil", Secret: "{env.WEBHOOK_SECRET}"}},
		{name: "webhook alertmanager format", cfg: Config{Name: "a", Type: TypeWebhook, URL: "https://h.example.com", Format: "alertmanager"}},
		{name: "slack placeholder", cfg: Config{Name: "ops-slack", Type: TypeSlack, URL: "{env.SLACK_URL}"}},
		{name: "pagerduty EU", cfg: Config{Name: "oncall", Type: TypePagerDuty, RoutingKey: "{env.PD}", URL: "https://events.eu.pagerduty.com/v2/enqueue"}},
		{name: "alertmanager", cfg: Config{Name: "am", Type: TypeAlertmanager, URL: "http://127.0.0.1:9093", KeepAlive: Duration(time.Minute)}},
		{name: "email", cfg: email(nil)},
		{name: "email tls none on loopback", cfg: email(func(c *Config) { c.SMTP, c.TLS = "127.0.0.1:2525", TLSNone })},
		{name: "sms", cfg: Config{Name: "s", Type: TypeSMS, Account: "AC1", Token: "{env.T}", From: "+15550001111", To: []string{"+15550002222"}}},
		{name: "queue override", cfg: Config{Name: "a", Type: TypeWebhook, URL: "https://h.example.com", Queue: &QueueConfig{Size: 10, Timeout: Duration(time.Second)}}},

		{name: "no name", cfg: Config{Type: TypeWebhook, URL: "https://h"}, wantField: "name"},
		{name: "bad name", cfg: Config{Name: "ops slack", Type: TypeWebhook, URL: "https://h"}, wantField: "name"},
		{name: "unknown type", cfg: Config{Name: "a", Type: "carrier-pigeon"}, wantField: "type"},
		{name: "field of another type", cfg: Config{Name: "a", Type: TypeWebhook, URL: "https://h", RoutingKey: "k"}, wantField: "routing_key"},
		{name: "webhook without url", cfg: Config{Name: "a", Type: TypeWebhook}, wantField: "url"},
		{name: "webhook ftp url", cfg: Config{Name: "a", Type: TypeWebhook, URL: "ftp://h/x"}, wantField: "url"},
		{name: "webhook bad format", cfg: Config{Name: "a", Type: TypeWebhook, URL: "https://h", Format: "xml"}, wantField: "format"},
		{name: "webhook bad whsec", cfg: Config{Name: "a", Type: TypeWebhook, URL: "https://h", Secret: "whsec_!!notbase64"}, wantField: "secret", notInErr: "notbase64"},
		{name: "slack bad url is not echoed", cfg: Config{Name: "a", Type: TypeSlack, URL: "hooks.slack.com/services/T0/B0/SECRET"}, wantField: "url", notInErr: "SECRET"},
		{name: "pagerduty without key", cfg: Config{Name: "a", Type: TypePagerDuty}, wantField: "routing_key"},
		{name: "email without smtp", cfg: email(func(c *Config) { c.SMTP = "" }), wantField: "smtp"},
		{name: "email smtp without port", cfg: email(func(c *Config) { c.SMTP = "smtp.example.com" }), wantField: "smtp"},
		{name: "email without to", cfg: email(func(c *Config) { c.To = nil }), wantField: "to"},
		{name: "email bad to", cfg: email(func(c *Config) { c.To = []string{"ops@example.com", "not an address"} }), wantField: "to[1]"},
		{name: "email bad from", cfg: email(func(c *Config) { c.From = "@" }), wantField: "from"},
		{name: "email bad tls", cfg: email(func(c *Config) { c.TLS = "ssl" }), wantField: "tls"},
		{name: "email tls none remote", cfg: email(func(c *Config) { c.TLS = TLSNone }), wantField: "tls"},
		{name: "email password without user", cfg: email(func(c *Config) { c.Password = "p4ssw0rd-x" }), wantField: "username", notInErr: "p4ssw0rd-x"},
		{name: "sms without token", cfg: Config{Name: "s", Type: TypeSMS, Account: "AC1", From: "+1", To: []string{"+2"}}, wantField: "token"},
		{name: "sms without to", cfg: Config{Name: "s", Type: TypeSMS, Account: "AC1", Token: "t", From: "+1"}, wantField: "to"},
		{name: "negative queue timeout", cfg: Config{Name: "a", Type: TypeWebhook, URL: "https://h", Queue: &QueueConfig{Timeout: -1}}, wantField: "queue.timeout"},
		{name: "keep_alive on webhook", cfg: Config{Name: "a", Type: TypeWebhook, URL: "https://h", KeepAlive: Duration(time.Second)}, wantField: "keep_alive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate = %v, want a *ConfigError on %s", err, tt.wantField)
			}
			if ce.Field != tt.wantField || ce.Channel != tt.cfg.Name {
				t.Errorf("error on channel %q field %q (%v), want %q %q", ce.Channel, ce.Field, err, tt.cfg.Name, tt.wantField)
			}
			if tt.notInErr != "" && strings.Contains(err.Error(), tt.notInErr) {
				t.Errorf("error %q echoes %q", err, tt.notInErr)
			}
		})
	}
}

func TestNewResolvesPlaceholders(t *testing.T) {
	resolve := placeholders(map[string]string{"HOST": "smtp.example.com:465", "PASS": "pw"})
	ch, err := New(Config{Name: "m", Type: TypeEmail, SMTP: "{env.HOST}", Username: "u", Password: "{env.PASS}",
		From: "a@example.com", To: []string{"b@example.com"}}, Options{Resolve: resolve})
	if err != nil {
		t.Fatal(err)
	}
	e := ch.(*Email)
	if e.addr != "smtp.example.com:465" || e.tlsMode != TLSImplicit || e.password.Reveal() != "pw" || e.tlsConfig.ServerName != "smtp.example.com" {
		t.Errorf("addr %q tls %q server name %q", e.addr, e.tlsMode, e.tlsConfig.ServerName)
	}

	tests := []struct {
		name      string
		cfg       Config
		resolve   Resolver
		wantField string
	}{
		{name: "resolved value checked", cfg: Config{Name: "w", Type: TypeWebhook, URL: "{env.URL}"},
			resolve: placeholders(map[string]string{"URL": "not a url"}), wantField: "url"},
		{name: "resolver error", cfg: Config{Name: "w", Type: TypeWebhook, URL: "https://h", Secret: "{env.MISSING}"},
			resolve: func(s string) (string, error) {
				if strings.Contains(s, "MISSING") {
					return "", errors.New("MISSING is not set")
				}
				return s, nil
			}, wantField: "secret"},
		{name: "tls none resolved to a remote host", cfg: Config{Name: "m", Type: TypeEmail, SMTP: "{env.H}", TLS: TLSNone,
			From: "a@example.com", To: []string{"b@example.com"}}, resolve: placeholders(map[string]string{"H": "mail.example.com:25"}), wantField: "tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, Options{Resolve: tt.resolve})
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.wantField {
				t.Errorf("New = %v, want an error on %s", err, tt.wantField)
			}
		})
	}
	if _, err := NewAll([]Config{{Name: "a", Type: TypeWebhook, URL: "https://h"}, {Name: "a", Type: TypeWebhook, URL: "https://h"}}, Options{}); err == nil {
		t.Error("NewAll accepted two channels of the same name")
	}
}

func TestConfigJSON(t *testing.T) {
	in := `{"name":"ops","type":"webhook","url":"https://h/x","secret":"{env.S}","queue":{"size":10,"timeout":"3s","max_age":3600000000000}}`
	var c Config
	dec := json.NewDecoder(strings.NewReader(in))
	dec.DisallowUnknownFields() // as Caddy's strict unmarshalling
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Queue.Timeout != Duration(3*time.Second) || c.Queue.MaxAge != Duration(time.Hour) || c.Queue.Size != 10 {
		t.Errorf("queue %+v", c.Queue)
	}
	out, _ := json.Marshal(c)
	if want := `{"name":"ops","type":"webhook","url":"https://h/x","secret":"{env.S}","queue":{"size":10,"timeout":"3s","max_age":"1h0m0s"}}`; string(out) != want {
		t.Errorf("marshalled\n%s\nwant\n%s", out, want)
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"soon"`), &d); err == nil {
		t.Error("accepted a bad duration")
	}
}

func TestConfigRedacted(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want Config
	}{
		{name: "literal secrets hidden, placeholders kept",
			cfg:  Config{Name: "w", Type: TypeWebhook, URL: "https://u:p@h.example.com/x?t=tok", Secret: "literal"},
			want: Config{Name: "w", Type: TypeWebhook, URL: "https://[redacted]@h.example.com/x?[redacted]", Secret: "[redacted]"}},
		{name: "slack URL",
			cfg:  Config{Name: "s", Type: TypeSlack, URL: "https://hooks.slack.com/services/T/B/X"},
			want: Config{Name: "s", Type: TypeSlack, URL: "[redacted]"}},
		{name: "placeholders stay",
			cfg:  Config{Name: "p", Type: TypePagerDuty, RoutingKey: "{env.PD}"},
			want: Config{Name: "p", Type: TypePagerDuty, RoutingKey: "{env.PD}"}},
		{name: "sms and email",
			cfg:  Config{Name: "m", Type: TypeSMS, Token: "t0k", Password: "pw", Account: "AC1"},
			want: Config{Name: "m", Type: TypeSMS, Token: "[redacted]", Password: "[redacted]", Account: "AC1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := json.Marshal(tt.cfg.Redacted())
			want, _ := json.Marshal(tt.want)
			if string(got) != string(want) {
				t.Errorf("Redacted\n%s\nwant\n%s", got, want)
			}
		})
	}
}
