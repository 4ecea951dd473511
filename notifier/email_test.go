package notifier

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sasl "github.com/emersion/go-sasl"
	smtp "github.com/emersion/go-smtp"

	"github.com/vigilgw/vigil/detector/alert"
)

// testCert makes a self-signed certificate for 127.0.0.1 and localhost, and a pool that
// trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "vigil test SMTP"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// receivedMail is one message the test SMTP server accepted.
type receivedMail struct {
	from     string
	rcpts    []string
	data     []byte
	tls      bool
	authUser string
	mech     string
}

// smtpServer is a real SMTP server (go-smtp) that accepts one user.
type smtpServer struct {
	addr      string
	mechs     []string
	mu        sync.Mutex // guards what follows: tests change it while the server runs
	user      string
	password  string
	failRcpt  *smtp.SMTPError // returned for every RCPT when set
	delivered []receivedMail
}

type smtpSession struct {
	srv  *smtpServer
	conn *smtp.Conn
	cur  receivedMail
}

func (s *smtpSession) AuthMechanisms() []string { return s.srv.mechs }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		s.srv.mu.Lock()
		wantUser, wantPass := s.srv.user, s.srv.password
		s.srv.mu.Unlock()
		if user != wantUser || pass != wantPass {
			// Echoes the password, as a careless server might: the client must not repeat it.
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials " + pass}
		}
		s.cur.authUser, s.cur.mech = user, mech
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, errors.New("unsupported mechanism")
}

// loginServer is the server side of AUTH LOGIN, which go-sasl no longer ships.
type loginServer struct {
	check      func(user, pass string) error
	step       int
	user, pass string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if len(response) > 0 { // initial response: the user name
			l.user = string(response)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(response)
		l.step++
		return []byte("Password:"), false, nil
	default:
		l.pass = string(response)
		return nil, true, l.check(l.user, l.pass)
	}
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.cur.authUser == "" {
		return smtp.ErrAuthRequired
	}
	s.cur.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.srv.mu.Lock()
	fail := s.srv.failRcpt
	s.srv.mu.Unlock()
	if fail != nil {
		return fail
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, s.cur.tls = s.conn.TLSConnectionState()
	s.cur.data = b
	s.srv.mu.Lock()
	s.srv.delivered = append(s.srv.delivered, s.cur)
	s.srv.mu.Unlock()
	return nil
}

func (s *smtpSession) Reset()        { s.cur = receivedMail{authUser: s.cur.authUser, mech: s.cur.mech} }
func (s *smtpSession) Logout() error { return nil }

func (s *smtpServer) messages() []receivedMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.delivered)
}

// startSMTP runs an SMTP server on loopback until the end of the test, speaking TLS as mode
// says (TLSStartTLS, TLSImplicit, or TLSNone for a server without TLS); it returns the
// server and the pool that trusts its certificate.
func startSMTP(t *testing.T, mode string, mechs ...string) (*smtpServer, *x509.CertPool) {
	t.Helper()
	cert, pool := testCert(t)
	srv := &smtpServer{user: "alerts", password: "smtp-pa55-word", mechs: mechs}
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &smtpSession{srv: srv, conn: c}, nil })
	s := smtp.NewServer(be)
	s.Domain = "localhost"
	if mode != TLSNone {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	s.ReadTimeout, s.WriteTimeout = 5*time.Second, 5*time.Second
	s.ErrorLog = nopSMTPLog{}
	var l net.Listener
	var err error
	if mode == TLSImplicit {
		l, err = tls.Listen("tcp", "127.0.0.1:0", s.TLSConfig)
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	srv.addr = l.Addr().String()
	done := make(chan struct{})
	go func() { // ends when Close closes the listener
		defer close(done)
		_ = s.Serve(l)
	}()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return srv, pool
}

type nopSMTPLog struct{}

func (nopSMTPLog) Printf(string, ...any) {}
func (nopSMTPLog) Println(...any)        {}

// parsedMail is a received message taken apart.
type parsedMail struct {
	header      mail.Header
	text, html  string
	contentType string
}

func parseMail(t *testing.T, data []byte) parsedMail {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("net/mail cannot read the message: %v", err)
	}
	p := parsedMail{header: m.Header}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	p.contentType = mt
	if mt != "multipart/alternative" {
		t.Fatalf("Content-Type %s, want multipart/alternative", mt)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, cp, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if !strings.EqualFold(cp["charset"], "utf-8") {
			t.Errorf("part %s: charset %q, want UTF-8", ct, cp["charset"])
		}
		var r io.Reader = part
		switch cte := part.Header.Get("Content-Transfer-Encoding"); cte {
		case "quoted-printable":
			r = quotedprintable.NewReader(part)
		default:
			t.Errorf("part %s: Content-Transfer-Encoding %q", ct, cte)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		switch ct {
		case "text/plain":
			p.text = string(b)
		case "text/html":
			p.html = string(b)
		default:
			t.Errorf("unexpected part %s", ct)
		}
	}
	return p
}

func TestEmailAlert(t *testing.T) {
	unicode := firingEvent("ev_u")
	unicode.RuleName = "Überlast <script>"
	tests := []struct {
		name        string
		implicit    bool
		tls         string
		mechs       []string
		batch       alert.Batch
		wantSubject string
		wantMech    string
		wantInText  []string
		wantInHTML  []string
	}{
		{name: "STARTTLS and PLAIN, firing", mechs: []string{sasl.Plain, sasl.Login}, batch: batchOf("mail", firingEvent("ev_1")),
			wantSubject: "[FIRING] 401 storm (user=u-42)", wantMech: sasl.Plain,
			wantInText: []string{"[FIRING] 401 storm", "31 (threshold > 20)", "user=u-42", "https://wiki.example.com/401",
				"2026-11-23T09:59:58Z GET /users/42/orders -> 401 in 12ms user=u-42 request=req-1"},
			wantInHTML: []string{`<a href="https://wiki.example.com/401">`, "31 (threshold &gt; 20)",
				"2026-11-23T09:59:58Z GET /users/42/orders -&gt; 401 in 12ms user=u-42 request=req-1"}},
		{name: "implicit TLS, resolved", implicit: true, tls: TLSImplicit, mechs: []string{sasl.Plain}, batch: batchOf("mail", resolvedEvent("ev_1")),
			wantSubject: "[RESOLVED] 401 storm (user=u-42)", wantMech: sasl.Plain, wantInText: []string{"[RESOLVED] 401 storm", "Resolved: 2026-11-23T10:10:00Z"}},
		{name: "LOGIN when only offered", mechs: []string{sasl.Login}, batch: batchOf("mail", firingEvent("ev_1"), resolvedEvent("ev_2"), firingEvent("ev_3")),
			wantSubject: "[FIRING:2, RESOLVED:1] 401 storm", wantMech: sasl.Login, wantInText: []string{"3 alerts: 2 firing, 1 resolved"}},
		{name: "UTF-8 subject and escaped HTML", mechs: []string{sasl.Plain}, batch: batchOf("mail", unicode),
			wantSubject: "[FIRING] Überlast <script> (user=u-42)", wantMech: sasl.Plain,
			wantInText: []string{"Überlast <script>"}, wantInHTML: []string{"Überlast &lt;script&gt;"}},
		{name: "test notification", mechs: []string{sasl.Plain}, batch: TestBatch("mail", t0),
			wantSubject: "[TEST] " + TestRuleName, wantMech: sasl.Plain, wantInText: []string{TestSummary}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mode := TLSStartTLS
			if tt.implicit {
				mode = TLSImplicit
			}
			srv, pool := startSMTP(t, mode, tt.mechs...)
			ch := newTestChannel(t, Config{Name: "mail", Type: TypeEmail, SMTP: srv.addr, TLS: tt.tls, Username: "alerts",
				Password: "smtp-pa55-word", From: "Vigil <alerts@example.com>", To: []string{"ops@example.com", "Oncall <oncall@example.com>"}},
				Options{TLSConfig: &tls.Config{RootCAs: pool}})
			if err := ch.Send(sendCtx(t), tt.batch); err != nil {
				t.Fatalf("Send: %v", err)
			}
			msgs := srv.messages()
			if len(msgs) != 1 {
				t.Fatalf("messages: %d, want 1", len(msgs))
			}
			got := msgs[0]
			if !got.tls || got.authUser != "alerts" || got.mech != tt.wantMech {
				t.Errorf("tls %v user %q mechanism %q, want TLS, alerts, %s", got.tls, got.authUser, got.mech, tt.wantMech)
			}
			if got.from != "alerts@example.com" || !slices.Equal(got.rcpts, []string{"ops@example.com", "oncall@example.com"}) {
				t.Errorf("envelope from %q to %v", got.from, got.rcpts)
			}
			p := parseMail(t, got.data)
			subject, err := new(mime.WordDecoder).DecodeHeader(p.header.Get("Subject"))
			if err != nil || subject != tt.wantSubject {
				t.Errorf("Subject %q (%v), want %q", subject, err, tt.wantSubject)
			}
			if from, err := p.header.AddressList("From"); err != nil || len(from) != 1 || from[0].Address != "alerts@example.com" {
				t.Errorf("From %v (%v)", from, err)
			}
			if to, err := p.header.AddressList("To"); err != nil || len(to) != 2 || to[1].Name != "Oncall" {
				t.Errorf("To %v (%v)", to, err)
			}
			if d, err := p.header.Date(); err != nil || time.Since(d) > time.Minute {
				t.Errorf("Date %q (%v)", p.header.Get("Date"), err)
			}
			if id := p.header.Get("Message-ID"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@example.com>") {
				t.Errorf("Message-ID %q", id)
			}
			if p.header.Get("MIME-Version") != "1.0" {
				t.Errorf("MIME-Version %q", p.header.Get("MIME-Version"))
			}
			if p.text == "" || p.html == "" {
				t.Fatalf("text part %d bytes, HTML part %d bytes: want both", len(p.text), len(p.html))
			}
			for _, w := range tt.wantInText {
				if !strings.Contains(p.text, w) {
					t.Errorf("text part lacks %q:\n%s", w, p.text)
				}
			}
			for _, w := range tt.wantInHTML {
				if !strings.Contains(p.html, w) {
					t.Errorf("HTML part lacks %q:\n%s", w, p.html)
				}
			}
			if strings.Contains(p.html, "<script>") {
				t.Error("HTML part holds unescaped user data")
			}
			if strings.Contains(string(got.data), "smtp-pa55-word") {
				t.Error("the message holds the SMTP password")
			}
		})
	}
}

func TestEmailSendMailBcc(t *testing.T) {
	srv, pool := startSMTP(t, TLSStartTLS, sasl.Plain)
	ch := newTestChannel(t, Config{Name: "mail", Type: TypeEmail, SMTP: srv.addr, Username: "alerts", Password: "smtp-pa55-word",
		From: "alerts@example.com", To: []string{"ops@example.com"}}, Options{TLSConfig: &tls.Config{RootCAs: pool}})
	err := ch.(*Email).SendMail(sendCtx(t), Message{
		To: []string{"user@example.org"}, Cc: []string{"csm@example.com"}, Bcc: []string{"audit@example.com"},
		Subject: "Getting started with the API", Text: "Hello,\nyou seem stuck.", HTML: "<p>Hello,<br>you seem stuck.</p>",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := srv.messages()[0]
	if want := []string{"user@example.org", "csm@example.com", "audit@example.com"}; !slices.Equal(got.rcpts, want) {
		t.Errorf("RCPT TO %v, want %v", got.rcpts, want)
	}
	p := parseMail(t, got.data)
	if strings.Contains(string(got.data), "audit@example.com") || p.header.Get("Bcc") != "" {
		t.Error("the Bcc recipient shows in the message")
	}
	if p.header.Get("Cc") != "<csm@example.com>" || p.header.Get("To") != "<user@example.org>" {
		t.Errorf("To %q Cc %q", p.header.Get("To"), p.header.Get("Cc"))
	}
	if !strings.Contains(p.text, "you seem stuck.") || !strings.Contains(p.html, "<p>Hello,") {
		t.Errorf("parts: %q / %q", p.text, p.html)
	}
}

func TestEmailFailures(t *testing.T) {
	tests := []struct {
		name      string
		server    string // TLS mode of the server; default STARTTLS
		password  string
		trust     bool
		failRcpt  *smtp.SMTPError
		wantRetry bool
		wantInErr string
	}{
		{name: "wrong password is permanent", password: "wrong-password", trust: true, wantInErr: "535"},
		{name: "no STARTTLS offered is permanent", server: TLSNone, password: "smtp-pa55-word", trust: true, wantInErr: "does not offer STARTTLS"},
		{name: "untrusted certificate is permanent", password: "smtp-pa55-word", wantInErr: "certificate"},
		{name: "4xx on RCPT is retryable", password: "smtp-pa55-word", trust: true,
			failRcpt: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}, wantRetry: true, wantInErr: "451"},
		{name: "5xx on RCPT is permanent", password: "smtp-pa55-word", trust: true,
			failRcpt: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}, wantInErr: "550"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mode := tt.server
			if mode == "" {
				mode = TLSStartTLS
			}
			srv, pool := startSMTP(t, mode, sasl.Plain)
			srv.mu.Lock()
			srv.failRcpt = tt.failRcpt
			srv.mu.Unlock()
			opts := Options{}
			if tt.trust {
				opts.TLSConfig = &tls.Config{RootCAs: pool}
			}
			ch := newTestChannel(t, Config{Name: "mail", Type: TypeEmail, SMTP: srv.addr, Username: "alerts", Password: tt.password,
				From: "alerts@example.com", To: []string{"ops@example.com"}}, opts)
			err := ch.Send(sendCtx(t), batchOf("mail", firingEvent("ev_1")))
			if err == nil {
				t.Fatal("no error")
			}
			if retry, _ := Classify(err); retry != tt.wantRetry {
				t.Errorf("retryable = %v, want %v (%v)", retry, tt.wantRetry, err)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) || !strings.Contains(err.Error(), srv.addr) {
				t.Errorf("error %q: want %q and the server address", err, tt.wantInErr)
			}
			if strings.Contains(err.Error(), tt.password) {
				t.Errorf("error %q holds the password", err)
			}
		})
	}
}
