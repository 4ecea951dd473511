package notifier

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strings"
	"time"

	sasl "github.com/emersion/go-sasl"
	smtp "github.com/emersion/go-smtp"

	"github.com/vigilgw/vigil/detector/alert"
)

// Email sends a batch as one e-mail to the channel's recipients through an SMTP submission
// server: STARTTLS (default) or implicit TLS (default on port 465), AUTH PLAIN (LOGIN when
// the server offers only that), and a multipart/alternative message with text/plain and
// text/html parts (UTF-8, quoted-printable). The subject says FIRING or RESOLVED, the rule
// and, for a batch of several events, their count. Samples are shown in full in both parts.
// SendMail sends other messages (behavioral e-mails to API users) through the same server.
type Email struct {
	base
	addr      string // host:port
	host      string
	tlsMode   string
	tlsConfig *tls.Config
	username  string
	password  Secret
	from      *mail.Address
	to        []string
}

func newEmail(b base, c Config, opts Options) (*Email, error) {
	host, port, err := net.SplitHostPort(c.SMTP)
	if err != nil {
		return nil, &ConfigError{Channel: c.Name, Field: "smtp", Problem: fmt.Sprintf("%q: want host:port", c.SMTP)}
	}
	from, err := mail.ParseAddress(c.From)
	if err != nil {
		return nil, &ConfigError{Channel: c.Name, Field: "from", Problem: fmt.Sprintf("%q: %v", c.From, err)}
	}
	mode := c.TLS
	if mode == "" {
		mode = TLSStartTLS
		if port == "465" {
			mode = TLSImplicit
		}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.TLSConfig != nil {
		cfg = opts.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	return &Email{
		base:      b,
		addr:      c.SMTP,
		host:      host,
		tlsMode:   mode,
		tlsConfig: cfg,
		username:  c.Username,
		password:  NewSecret(c.Password),
		from:      from,
		to:        append([]string(nil), c.To...),
	}, nil
}

// Message is an e-mail for SendMail.
type Message struct {
	// To and Cc are the visible recipients; Bcc recipients receive the message but appear
	// in no header. At least one recipient is required.
	To, Cc, Bcc []string
	// Subject is the subject line (encoded as needed).
	Subject string
	// Text is the text/plain part and HTML the text/html part; at least one is required.
	Text, HTML string
}

// Send e-mails b to the channel's recipients.
func (e *Email) Send(ctx context.Context, b alert.Batch) error {
	if len(b.Events) == 0 {
		return errEmptyBatch
	}
	// Behavioral e-mails to API users: each event carries its own rendered message.
	var alerts []alert.Event
	for i := range b.Events {
		ev := &b.Events[i]
		if ev.Email == nil {
			alerts = append(alerts, *ev)
			continue
		}
		m := Message{To: ev.Email.To, Cc: ev.Email.Cc, Bcc: ev.Email.Bcc, Subject: ev.Email.Subject, Text: ev.Email.Text, HTML: ev.Email.HTML}
		if err := e.SendMail(ctx, m); err != nil {
			return err
		}
	}
	if len(alerts) == 0 {
		return nil
	}
	b.Events = alerts
	m, err := emailMessage(&b, e.externalURL)
	if err != nil {
		return Permanent(fmt.Errorf("email %q: rendering the message: %w", e.name, err))
	}
	m.To = e.to
	return e.SendMail(ctx, m)
}

// SendMail sends m from the channel's sender through its SMTP server: one attempt, bounded
// by ctx, returning an error Classify can read (SMTP 4xx and network errors are
// retryable, 5xx are not).
func (e *Email) SendMail(ctx context.Context, m Message) error {
	op := "SMTP " + e.addr
	data, rcpts, err := buildMessage(e.from, m, e.now(), e.host)
	if err != nil {
		return Permanent(fmt.Errorf("%s: %w", op, err))
	}
	return e.scrub.Error(e.deliver(ctx, op, rcpts, data))
}

// deliver runs one SMTP transaction.
func (e *Email) deliver(ctx context.Context, op string, rcpts []string, data []byte) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return smtpError(ctx, op, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // unblocks any read or write
	defer stop()
	defer conn.Close()

	var c *smtp.Client
	switch e.tlsMode {
	case TLSImplicit:
		tc := tls.Client(conn, e.tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return smtpError(ctx, op+": TLS", err)
		}
		c = smtp.NewClient(tc)
	case TLSStartTLS:
		c, err = smtp.NewClientStartTLS(conn, e.tlsConfig)
		if err != nil {
			// go-smtp has no exported error for this; without STARTTLS no retry can help,
			// and sending the password in clear is not an option.
			if strings.Contains(err.Error(), "doesn't support STARTTLS") {
				return Permanent(fmt.Errorf("%s: the server does not offer STARTTLS (set tls implicit for port 465)", op))
			}
			return smtpError(ctx, op+": STARTTLS", err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.CommandTimeout = time.Until(dl)
		c.SubmissionTimeout = time.Until(dl)
	}
	// EHLO now (over TLS after STARTTLS, which makes the handshake happen here), so that a
	// failure is reported as itself and not as missing extensions.
	if err := c.Hello("localhost"); err != nil {
		return smtpError(ctx, op+": EHLO", err)
	}
	if e.username != "" {
		var auth sasl.Client
		switch {
		case c.SupportsAuth(sasl.Plain):
			auth = sasl.NewPlainClient("", e.username, e.password.Reveal())
		case c.SupportsAuth(sasl.Login):
			auth = sasl.NewLoginClient(e.username, e.password.Reveal())
		default:
			return Permanent(fmt.Errorf("%s: the server offers neither AUTH PLAIN nor AUTH LOGIN", op))
		}
		if err := c.Auth(auth); err != nil {
			return smtpError(ctx, op+": AUTH as "+e.username, err)
		}
	}
	if err := c.SendMail(e.from.Address, rcpts, bytes.NewReader(data)); err != nil {
		return smtpError(ctx, op, err)
	}
	// The message was accepted with the reply to DATA's final dot; a failed QUIT loses
	// nothing, and retrying would send the message twice.
	_ = c.Quit()
	return nil
}

// smtpError classifies an SMTP failure: 4xx replies and network errors are retryable, 5xx
// replies and certificate errors are not.
func smtpError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return transportError(ctx, op, err)
	}
	if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
		return &DeliveryError{Op: op, Retryable: se.Temporary(), Err: err}
	}
	return &DeliveryError{Op: op, Retryable: !isCertificateError(err), Err: err}
}

var _ Channel = (*Email)(nil)
