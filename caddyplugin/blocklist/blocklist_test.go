package blocklist

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilgw/vigil/caddyplugin/identity"
)

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func TestParseKind(t *testing.T) {
	tests := []struct {
		in      string
		want    Kind
		wantErr bool
	}{
		{"user", User, false},
		{"company", Company, false},
		{"key", Key, false},
		{"ip", IP, false},
		{"CIDR", CIDR, false},
		{"email", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		got, err := ParseKind(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseKind(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestAddValidates(t *testing.T) {
	tests := []struct {
		name      string
		e         Entry
		wantValue string
		wantErr   string
	}{
		{"user", Entry{Kind: User, Value: "u-123"}, "u-123", ""},
		{"value trimmed", Entry{Kind: Company, Value: " acme "}, "acme", ""},
		{"raw key stored as its id", Entry{Kind: Key, Value: "sk_live_secret"}, identity.KeyID("sk_live_secret"), ""},
		{"key id kept", Entry{Kind: Key, Value: "key:3f2a9c1e"}, "key:3f2a9c1e", ""},
		{"ipv4", Entry{Kind: IP, Value: "203.0.113.7"}, "203.0.113.7", ""},
		{"ipv6 canonical", Entry{Kind: IP, Value: "2001:DB8:0:0::1"}, "2001:db8::1", ""},
		{"mapped ipv4 stored as ipv4", Entry{Kind: IP, Value: "::ffff:203.0.113.7"}, "203.0.113.7", ""},
		{"ip zone dropped", Entry{Kind: IP, Value: "fe80::1%eth0"}, "fe80::1", ""},
		{"cidr masked", Entry{Kind: CIDR, Value: "10.1.2.3/8"}, "10.0.0.0/8", ""},
		{"cidr v6", Entry{Kind: CIDR, Value: "2001:db8:1::/32"}, "2001:db8::/32", ""},
		{"mapped cidr stored as ipv4", Entry{Kind: CIDR, Value: "::ffff:10.0.0.0/104"}, "10.0.0.0/8", ""},
		{"kind in capitals", Entry{Kind: "USER", Value: "u-1"}, "u-1", ""},
		{"unknown kind", Entry{Kind: "email", Value: "a@b"}, "", `block-list kind "email": want user, company, key, ip or cidr`},
		{"empty kind", Entry{Value: "x"}, "", `block-list kind ""`},
		{"empty value", Entry{Kind: User, Value: "  "}, "", "value: empty (kind user)"},
		{"bad ip", Entry{Kind: IP, Value: "300.1.1.1"}, "", `value "300.1.1.1": not an IPv4 or IPv6 address`},
		{"range as ip", Entry{Kind: IP, Value: "10.0.0.0/8"}, "", `value "10.0.0.0/8": not an IPv4 or IPv6 address (a range is kind cidr)`},
		{"bad cidr", Entry{Kind: CIDR, Value: "10.0.0.0/33"}, "", `value "10.0.0.0/33": not a CIDR range`},
		{"address as cidr", Entry{Kind: CIDR, Value: "10.0.0.1"}, "", `value "10.0.0.1": not a CIDR range`},
		{"bad source", Entry{Kind: User, Value: "u", Source: "cli"}, "", `source "cli": want config or api`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l List
			err := l.Add(tt.e)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("Add(%+v) error = %v, want one starting %q", tt.e, err, tt.wantErr)
				}
				if l.Len() != 0 {
					t.Errorf("a failed Add left %d entries", l.Len())
				}
				return
			}
			if err != nil {
				t.Fatalf("Add(%+v) error = %v", tt.e, err)
			}
			got := l.Entries(t0)
			if len(got) != 1 || got[0].Value != tt.wantValue || got[0].Source != SourceAPI || got[0].Added.IsZero() {
				t.Errorf("Add(%+v): entries %+v, want one with value %q, source api and Added set", tt.e, got, tt.wantValue)
			}
		})
	}
}

func testList(t testing.TB) *List {
	var l List
	for _, e := range []Entry{
		{Kind: User, Value: "u-123", Reason: "abuse"},
		{Kind: User, Value: "u-old", Expires: t0.Add(-time.Second)},
		{Kind: User, Value: "u-soon", Expires: t0.Add(time.Hour)},
		{Kind: User, Value: identity.Anonymous, Reason: "identify yourself"},
		{Kind: Company, Value: "evil-corp"},
		{Kind: Key, Value: "sk_leaked"},
		{Kind: IP, Value: "203.0.113.7"},
		{Kind: IP, Value: "2001:db8::1"},
		{Kind: CIDR, Value: "198.51.100.0/24", Reason: "net"},
		{Kind: CIDR, Value: "198.51.100.128/25", Reason: "subnet", Expires: t0},
		{Kind: CIDR, Value: "10.0.0.0/8"},
		{Kind: CIDR, Value: "2001:db8:bad::/48"},
		{Kind: CIDR, Value: "192.0.2.0/32"},
	} {
		if err := l.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	return &l
}

func TestMatch(t *testing.T) {
	l := testList(t)
	ip := netip.MustParseAddr
	tests := []struct {
		name      string
		c         Caller
		now       time.Time
		wantValue string // "" for no match
	}{
		{"user", Caller{User: "u-123"}, t0, "u-123"},
		{"other user", Caller{User: "u-124", Company: "acme"}, t0, ""},
		{"expired user", Caller{User: "u-old", Company: "acme"}, t0, ""},
		{"user before expiry", Caller{User: "u-soon", Company: "acme"}, t0, "u-soon"},
		{"user at expiry", Caller{User: "u-soon", Company: "acme"}, t0.Add(time.Hour), ""},
		{"anonymous user", Caller{Company: "acme"}, t0, identity.Anonymous},
		{"anonymous spelled out", Caller{User: identity.Anonymous, Company: "acme"}, t0, identity.Anonymous},
		{"company", Caller{User: "u-1", Company: "evil-corp"}, t0, "evil-corp"},
		{"anonymous company is not blocked", Caller{User: "u-1"}, t0, ""},
		{"key by id", Caller{User: "u-1", Key: identity.KeyID("sk_leaked")}, t0, identity.KeyID("sk_leaked")},
		{"other key", Caller{User: "u-1", Key: identity.KeyID("sk_fine")}, t0, ""},
		{"raw key never matches", Caller{User: "u-1", Key: "sk_leaked"}, t0, ""},
		{"ipv4", Caller{User: "u-1", IP: ip("203.0.113.7")}, t0, "203.0.113.7"},
		{"ipv4 neighbour", Caller{User: "u-1", IP: ip("203.0.113.8")}, t0, ""},
		{"mapped ipv4", Caller{User: "u-1", IP: ip("::ffff:203.0.113.7")}, t0, "203.0.113.7"},
		{"ipv6", Caller{User: "u-1", IP: ip("2001:db8::1")}, t0, "2001:db8::1"},
		{"ipv6 with zone", Caller{User: "u-1", IP: ip("2001:db8::1%eth0")}, t0, "2001:db8::1"},
		{"cidr v4", Caller{User: "u-1", IP: ip("10.200.3.4")}, t0, "10.0.0.0/8"},
		{"cidr v4 mapped", Caller{User: "u-1", IP: ip("::ffff:10.200.3.4")}, t0, "10.0.0.0/8"},
		{"longest prefix first", Caller{User: "u-1", IP: ip("198.51.100.200")}, t0.Add(-time.Second), "198.51.100.128/25"},
		{"expired prefix falls back to shorter", Caller{User: "u-1", IP: ip("198.51.100.200")}, t0, "198.51.100.0/24"},
		{"cidr /32", Caller{User: "u-1", IP: ip("192.0.2.0")}, t0, "192.0.2.0/32"},
		{"cidr /32 neighbour", Caller{User: "u-1", IP: ip("192.0.2.1")}, t0, ""},
		{"cidr v6", Caller{User: "u-1", IP: ip("2001:db8:bad:1::99")}, t0, "2001:db8:bad::/48"},
		{"outside cidr v6", Caller{User: "u-1", IP: ip("2001:db8:bae::1")}, t0, ""},
		{"v6 address does not match a v4 range", Caller{User: "u-1", IP: ip("a00::1")}, t0, ""},
		{"no ip", Caller{User: "u-1"}, t0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := l.Match(tt.c, tt.now)
			if got := map[bool]string{true: e.Value}[ok]; got != tt.wantValue {
				t.Errorf("Match(%+v) = %q, %v; want %q", tt.c, e.Value, ok, tt.wantValue)
			}
		})
	}
	var empty List
	if _, ok := empty.Match(Caller{User: "u-123"}, t0); ok {
		t.Errorf("the zero List matched")
	}
}

func TestRemovePruneEntries(t *testing.T) {
	l := testList(t)
	if e, ok := l.Remove(Key, "sk_leaked"); !ok || e.Value != identity.KeyID("sk_leaked") {
		t.Errorf("Remove(key, raw key) = %+v, %v; want the entry", e, ok)
	}
	if e, ok := l.Remove(CIDR, "10.9.9.9/8"); !ok || e.Value != "10.0.0.0/8" {
		t.Errorf("Remove(cidr, unmasked) = %+v, %v; want the entry", e, ok)
	}
	if _, ok := l.Remove(User, "nobody"); ok {
		t.Errorf("Remove of an absent entry reported true")
	}
	if _, ok := l.Remove(IP, "not an ip"); ok {
		t.Errorf("Remove of an invalid value reported true")
	}
	if _, ok := l.Match(Caller{User: "u-1", IP: netip.MustParseAddr("10.1.1.1")}, t0); ok {
		t.Errorf("Match after Remove still matches")
	}
	var got []string
	for _, e := range l.Entries(t0) {
		got = append(got, string(e.Kind)+" "+e.Value)
	}
	want := "user anonymous,user u-123,user u-soon,company evil-corp,ip 203.0.113.7,ip 2001:db8::1," +
		"cidr 192.0.2.0/32,cidr 198.51.100.0/24,cidr 2001:db8:bad::/48"
	if strings.Join(got, ",") != want {
		t.Errorf("Entries =\n%s\nwant\n%s", strings.Join(got, ","), want)
	}
	if n := l.Prune(t0); n != 2 || l.Len() != 9 {
		t.Errorf("Prune = %d leaving %d, want 2 leaving 9", n, l.Len())
	}
}

func TestReplaceSource(t *testing.T) {
	var l List
	l.Add(Entry{Kind: User, Value: "from-api"})
	if err := l.ReplaceSource(SourceConfig, []Entry{{Kind: User, Value: "u-1"}, {Kind: User, Value: "u-2"}}); err != nil {
		t.Fatal(err)
	}
	if err := l.ReplaceSource(SourceConfig, []Entry{{Kind: User, Value: "u-2"}, {Kind: IP, Value: "bad"}}); err == nil ||
		err.Error() != `entry 1: value "bad": not an IPv4 or IPv6 address` {
		t.Errorf("ReplaceSource with a bad entry: error %v", err)
	}
	if err := l.ReplaceSource(SourceConfig, []Entry{{Kind: User, Value: "u-2"}}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range l.Entries(t0) {
		got = append(got, e.Value+"/"+e.Source)
	}
	if want := "from-api/api u-2/config"; strings.Join(got, " ") != want {
		t.Errorf("entries after reload %q, want %q", strings.Join(got, " "), want)
	}
}

func TestEntryJSON(t *testing.T) {
	e := Entry{Kind: User, Value: "u-777", Reason: "abuse", Expires: t0.Add(24 * time.Hour), Added: t0, Source: SourceAPI}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"kind":"user","value":"u-777","reason":"abuse","expires":"2026-11-25T10:00:00Z","added":"2026-11-24T10:00:00Z","source":"api"}`
	if string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	b, _ = json.Marshal(Entry{Kind: IP, Value: "10.0.0.1"})
	if want := `{"kind":"ip","value":"10.0.0.1"}`; string(b) != want {
		t.Errorf("json of a bare entry = %s, want %s", b, want)
	}
}

func TestConcurrentAddMatch(t *testing.T) {
	var l List
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				v := fmt.Sprintf("u-%d-%d", w, i)
				if err := l.Add(Entry{Kind: User, Value: v}); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					l.Remove(User, v)
				}
			}
		}()
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				l.Match(Caller{User: fmt.Sprintf("u-0-%d", i%300), IP: netip.MustParseAddr("10.0.0.1")}, t0)
			}
		}()
	}
	wg.Wait()
	if l.Len() != 400 {
		t.Errorf("Len = %d, want 400", l.Len())
	}
	if _, ok := l.Match(Caller{User: "u-1-299"}, t0); !ok {
		t.Errorf("the last entry added does not match")
	}
}

// bigList holds 10,000 entries: users, keys, addresses and ranges of many lengths.
func bigList(b testing.TB) *List {
	entries := make([]Entry, 0, 10000)
	for i := range 2500 {
		entries = append(entries,
			Entry{Kind: User, Value: fmt.Sprintf("u-%d", i)},
			Entry{Kind: Key, Value: fmt.Sprintf("sk_%d", i)},
			Entry{Kind: IP, Value: netip.AddrFrom4([4]byte{100, byte(i >> 8), byte(i), 1}).String()},
			Entry{Kind: CIDR, Value: fmt.Sprintf("%d.%d.0.0/%d", 20+i%100, i/100, 16+i%9)},
		)
	}
	var l List
	if err := l.ReplaceSource(SourceConfig, entries); err != nil {
		b.Fatal(err)
	}
	return &l
}

func TestMatchAllocs(t *testing.T) {
	l := bigList(t)
	callers := []Caller{
		{User: "u-42"},
		{User: "nobody", Company: "acme", Key: identity.KeyID("sk_fine"), IP: netip.MustParseAddr("::ffff:8.8.8.8")},
		{User: "nobody", IP: netip.MustParseAddr("2001:db8::1")},
	}
	for _, c := range callers {
		if n := testing.AllocsPerRun(100, func() { l.Match(c, t0) }); n != 0 {
			t.Errorf("Match(%+v) allocates %v times per call, want 0", c, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	l := bigList(b)
	cases := []struct {
		name string
		c    Caller
	}{
		{"blocked user", Caller{User: "u-2000"}},
		{"clean caller", Caller{User: "u-ok", Company: "acme", Key: identity.KeyID("sk_fine"), IP: netip.MustParseAddr("8.8.8.8")}},
		{"blocked range", Caller{User: "u-ok", IP: netip.MustParseAddr("20.0.3.4")}},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				l.Match(bc.c, t0)
			}
		})
	}
	b.Run("clean caller/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Match(cases[1].c, t0)
			}
		})
	})
}
