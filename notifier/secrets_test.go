package notifier

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	sasl "github.com/emersion/go-sasl"

	"github.com/vigilgw/vigil/detector/alert"
)

// echoEverything answers 500 with everything it received: URL, headers (basic auth
// decoded) and body, as a careless receiver's error page might.
func echoEverything(w http.ResponseWriter, r *http.Request, body []byte) {
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, "error for %s %v ", r.URL.String(), r.Header)
	if u, p, ok := r.BasicAuth(); ok {
		fmt.Fprintf(w, "user %s password %s ", u, p)
	}
	w.Write(body)
}

// placeholders resolves {env.NAME} from a map, as the Caddy glue's resolver would.
func placeholders(env map[string]string) Resolver {
	return func(s string) (string, error) {
		for k, v := range env {
			s = strings.ReplaceAll(s, "{env."+k+"}", v)
		}
		return s, nil
	}
}

func TestSecretsNeverLeak(t *testing.T) {
	type setup struct {
		cfg     Config
		opts    Options
		secrets []string
		payload func() string // what the receiver got, where the secret must not be
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) setup
	}{
		{name: "webhook secret and URL credentials", setup: func(t *testing.T) setup {
			rc := newReceiver(t, echoEverything)
			u, _ := url.Parse(rc.URL)
			return setup{
				cfg: Config{Name: "c", Type: TypeWebhook, URL: "http://hookuser:{env.URLPASS}@" + u.Host + "/in?token={env.QTOKEN}",
					Secret: "{env.HOOK_SECRET}"},
				opts:    Options{Resolve: placeholders(map[string]string{"URLPASS": "urlpass-7d1c", "QTOKEN": "qtoken-9a3f", "HOOK_SECRET": "hook-secret-41b2"})},
				secrets: []string{"urlpass-7d1c", "qtoken-9a3f", "hook-secret-41b2"},
				payload: func() string { return string(rc.got()[0].Body) },
			}
		}},
		{name: "slack URL", setup: func(t *testing.T) setup {
			rc := newReceiver(t, echoEverything)
			return setup{
				cfg:     Config{Name: "c", Type: TypeSlack, URL: "{env.SLACK_URL}"},
				opts:    Options{Resolve: placeholders(map[string]string{"SLACK_URL": rc.URL + "/services/T0ABC/B0DEF/slacktoken8e2d"})},
				secrets: []string{"slacktoken8e2d", "/services/T0ABC/B0DEF"},
				payload: func() string { return string(rc.got()[0].Body) },
			}
		}},
		{name: "pagerduty routing key", setup: func(t *testing.T) setup {
			rc := newReceiver(t, echoEverything)
			return setup{
				cfg:     Config{Name: "c", Type: TypePagerDuty, URL: rc.URL, RoutingKey: "{env.PD_KEY}"},
				opts:    Options{Resolve: placeholders(map[string]string{"PD_KEY": "pdkey0123456789abcdef0123456789a"})},
				secrets: []string{"pdkey0123456789abcdef0123456789a"},
				payload: func() string { // the key travels in routing_key, and nowhere else
					var e map[string]any
					json.Unmarshal(rc.got()[0].Body, &e)
					delete(e, "routing_key")
					b, _ := json.Marshal(e)
					return string(b)
				},
			}
		}},
		{name: "alertmanager URL credentials", setup: func(t *testing.T) setup {
			rc := newReceiver(t, echoEverything)
			u, _ := url.Parse(rc.URL)
			return setup{
				cfg:     Config{Name: "c", Type: TypeAlertmanager, URL: "http://am:{env.AM_PASS}@" + u.Host},
				opts:    Options{Resolve: placeholders(map[string]string{"AM_PASS": "ampass-5c0e"})},
				secrets: []string{"ampass-5c0e"},
				payload: func() string { return string(rc.got()[0].Body) },
			}
		}},
		{name: "email password", setup: func(t *testing.T) setup {
			srv, pool := startSMTP(t, TLSStartTLS, sasl.Plain)
			srv.mu.Lock()
			srv.password = "the-right-one" // the server refuses, echoing the password it got
			srv.mu.Unlock()
			return setup{
				cfg: Config{Name: "c", Type: TypeEmail, SMTP: srv.addr, Username: "alerts", Password: "{env.SMTP_PASSWORD}",
					From: "alerts@example.com", To: []string{"ops@example.com"}},
				opts:    Options{Resolve: placeholders(map[string]string{"SMTP_PASSWORD": "smtppass-2b7a"}), TLSConfig: &tls.Config{RootCAs: pool}},
				secrets: []string{"smtppass-2b7a", base64.StdEncoding.EncodeToString([]byte("\x00alerts\x00smtppass-2b7a"))},
				payload: func() string {
					msg, err := emailMessage(&alert.Batch{Events: []alert.Event{firingEvent("ev_1")}}, "")
					if err != nil {
						t.Fatal(err)
					}
					return msg.Subject + msg.Text + msg.HTML
				},
			}
		}},
		{name: "sms token", setup: func(t *testing.T) setup {
			rc := newReceiver(t, echoEverything)
			return setup{
				cfg: Config{Name: "c", Type: TypeSMS, URL: rc.URL, Account: "AC123", Token: "{env.SMS_TOKEN}",
					From: "+15550001111", To: []string{"+15550002222"}},
				opts:    Options{Resolve: placeholders(map[string]string{"SMS_TOKEN": "smstoken-6f4a"})},
				secrets: []string{"smstoken-6f4a"},
				payload: func() string { return string(rc.got()[0].Body) },
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.setup(t)
			log, logs := testLogger()
			ch := newTestChannel(t, s.cfg, s.opts)

			// One attempt by hand, for the error and for the payload.
			sendErr := ch.Send(sendCtx(t), batchOf("c", firingEvent("ev_0")))
			if sendErr == nil {
				t.Fatal("the receiver refuses every request: want an error")
			}

			// The same through the Queue, with retries, for the logs and the records.
			rec := newRecorder()
			set := fastQueue()
			set.MaxAttempts = 2
			q := startQueue(t, QueueOptions{Defaults: set, Recorder: rec, Logger: log}, ch)
			q.Notify(batchOf("c", firingEvent("ev_1")))
			rec.waitFinal(t, "ev_1", 10*time.Second)
			ev := firingEvent("ev_1")
			ev.Notifications = rec.of("ev_1")
			eventJSON, _ := json.Marshal(ev)
			log.Info("config", "channel", s.cfg, "resolved", ch)

			resolvedCfg, _ := s.cfg.resolve(s.opts.Resolve)
			redactedJSON, _ := json.Marshal(resolvedCfg.Redacted())
			places := map[string]string{
				"error":                    sendErr.Error(),
				"log":                      logs.String(),
				"records":                  rec.all(),
				"event JSON":               string(eventJSON),
				"payload":                  s.payload(),
				"channel printed":          fmt.Sprintf("%v %+v %#v %s", ch, ch, ch, ch),
				"resolved config printed":  fmt.Sprintf("%v %+v %#v %s", resolvedCfg, resolvedCfg, resolvedCfg, resolvedCfg),
				"resolved config redacted": string(redactedJSON),
				"resolved config logged (JSON)": func() string {
					var b syncBuffer
					slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "cfg", resolvedCfg)
					return b.String()
				}(),
			}
			for where, text := range places {
				for _, secret := range s.secrets {
					if strings.Contains(text, secret) {
						t.Errorf("%s holds the secret %q:\n%s", where, secret, text)
					}
				}
			}
			if !strings.Contains(rec.all(), "500") && s.cfg.Type != TypeEmail {
				t.Errorf("records lack the failure: %s", rec.all())
			}
		})
	}
}

func TestSecretPrintsRedacted(t *testing.T) {
	s := NewSecret("hunter2")
	var logged syncBuffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "secret", s)
	js, _ := json.Marshal(struct{ S Secret }{s})
	for _, got := range []string{
		s.String(), s.GoString(), fmt.Sprint(s), fmt.Sprintf("%v|%+v|%#v|%s|%q|%x|%d", s, s, s, s, s, s, s),
		string(js), logged.String(),
	} {
		if strings.Contains(got, "hunter2") || !strings.Contains(got, "[redacted]") {
			t.Errorf("%q: want [redacted] and not the value", got)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Error("Reveal lost the value")
	}
}
