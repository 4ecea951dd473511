package caddyplugin

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/vigilgw/vigil/caddyplugin/identity"
)

// identSource reads one identity (user, company or API key) from a request. It is
// compiled once from the configured value, so that the common forms cost a map lookup
// per request instead of a placeholder expansion.
type identSource struct {
	kind  identKind
	value string // the constant, the canonical header name, or the placeholder key
}

type identKind uint8

const (
	identNone        identKind = iota // not configured
	identConst                        // a constant
	identHeader                       // exactly {http.request.header.NAME}
	identClientIP                     // {http.vars.client_ip} / {client_ip}
	identPlaceholder                  // any other single placeholder
	identTemplate                     // text mixing placeholders and constants
)

func compileIdent(v string) identSource {
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return identSource{}
	case !strings.Contains(v, "{"):
		return identSource{kind: identConst, value: v}
	}
	if strings.HasPrefix(v, "{") && strings.HasSuffix(v, "}") && strings.Count(v, "{") == 1 {
		key := v[1 : len(v)-1]
		switch {
		case strings.HasPrefix(key, "http.request.header."):
			return identSource{kind: identHeader, value: textproto.CanonicalMIMEHeaderKey(strings.TrimPrefix(key, "http.request.header."))}
		case key == "http.vars.client_ip" || key == "client_ip":
			return identSource{kind: identClientIP}
		}
		return identSource{kind: identPlaceholder, value: key}
	}
	return identSource{kind: identTemplate, value: v}
}

// get returns the identity, or "" when the request carries none. Repeated headers give
// their first value. vars is the request's Caddy variables (caddyhttp.VarsCtxKey),
// which the handler has read already.
func (s *identSource) get(r *http.Request, repl *caddy.Replacer, vars map[string]any) string {
	switch s.kind {
	case identConst:
		return s.value
	case identHeader:
		if vs := r.Header[s.value]; len(vs) > 0 {
			return strings.TrimSpace(vs[0])
		}
	case identClientIP:
		ip, _ := vars[caddyhttp.ClientIPVarKey].(string)
		return ip
	case identPlaceholder:
		if repl != nil {
			v, _ := repl.GetString(s.value)
			return v
		}
	case identTemplate:
		if repl != nil {
			return strings.TrimSpace(repl.ReplaceKnown(s.value, ""))
		}
	}
	return ""
}

// maxKeyIDs bounds the key ids the engine interns; beyond it, new ids are made per
// request.
const maxKeyIDs = 100000

// keyID returns the short hash ("key:3f2a9c1e") of a raw API key. A key seen before costs
// no allocation, and no lock: many cores identify callers by key at once.
func (e *engine) keyID(raw string) string {
	var buf [identity.KeyIDLen]byte
	b := identity.AppendKeyID(buf[:0], raw)
	if s, ok := e.keys.Intern(b); ok {
		return s
	}
	return string(b)
}
