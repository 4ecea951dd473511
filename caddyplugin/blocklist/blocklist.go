// Package blocklist keeps the callers the gateway refuses: users, companies, API keys,
// IP addresses and IP ranges, each entry with a reason and an optional expiry.
//
// [List.Match] runs on every request: it takes no lock and does not allocate. It reads
// an immutable index through an atomic pointer; writers ([List.Add], [List.Remove],
// [List.ReplaceSource], [List.Prune]) build a new index under a mutex and swap it in.
package blocklist

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilgw/vigil/caddyplugin/identity"
)

// Kind is what an entry blocks.
type Kind string

const (
	// User blocks a user id.
	User Kind = "user"
	// Company blocks a company id.
	Company Kind = "company"
	// Key blocks an API key, kept as its key id ("key:3f2a9c1e", see package identity).
	Key Kind = "key"
	// IP blocks one IP address, v4 or v6 (an IPv4-mapped IPv6 address is its IPv4 form).
	IP Kind = "ip"
	// CIDR blocks every IP address in a range, such as "203.0.113.0/24" or "2001:db8::/32".
	CIDR Kind = "cidr"
)

// kinds lists the kinds in the order in which Match checks them and Entries sorts them.
var kinds = []Kind{User, Company, Key, IP, CIDR}

// ParseKind reads a kind: user, company, key, ip or cidr, in any case.
func ParseKind(s string) (Kind, error) {
	k := Kind(strings.ToLower(s))
	if !slices.Contains(kinds, k) {
		return "", fmt.Errorf("block-list kind %q: want user, company, key, ip or cidr", s)
	}
	return k, nil
}

// Where an entry came from.
const (
	// SourceConfig marks entries from the Caddyfile or JSON config.
	SourceConfig = "config"
	// SourceAPI marks entries added at run time through the admin API.
	SourceAPI = "api"
)

// Entry blocks one caller, or a range of IP addresses.
type Entry struct {
	// Kind is what the entry blocks: user, company, key, ip or cidr.
	Kind Kind `json:"kind"`
	// Value is the user id, company id, key id, IP address or CIDR range blocked. A raw
	// API key given to Add is stored as its key id, an address and a range in canonical
	// form (the range masked: "10.1.2.3/8" is stored as "10.0.0.0/8").
	Value string `json:"value"`
	// Reason says why, for operators and for the 403 body.
	Reason string `json:"reason,omitempty"`
	// Expires is when the entry stops blocking; the zero time means never.
	Expires time.Time `json:"expires,omitzero"`
	// Added is when the entry was added; Add sets it to the current time when zero.
	Added time.Time `json:"added,omitzero"`
	// Source is where the entry came from: "config" or "api" (the default).
	Source string `json:"source,omitempty"`
}

// Expired reports whether the entry no longer blocks at now.
func (e Entry) Expired(now time.Time) bool {
	return !e.Expires.IsZero() && !now.Before(e.Expires)
}

// Caller is who is calling, as Match checks it.
type Caller struct {
	// User is the user id; empty means anonymous, so an entry for the user
	// identity.Anonymous ("anonymous") blocks every caller without a user id.
	User string
	// Company is the company id; empty means anonymous, as for User.
	Company string
	// Key is the key id of the caller's API key (identity.KeyID), never the raw key;
	// empty when there is none.
	Key string
	// IP is the client address; the zero Addr matches no ip or cidr entry.
	IP netip.Addr
}

// List is a block list, safe for concurrent use. The zero List is empty and ready.
type List struct {
	mu      sync.Mutex
	entries map[entryID]Entry // the writers' copy
	index   atomic.Pointer[index]
}

type entryID struct {
	kind  Kind
	value string
}

// index is an immutable view of the entries, built for Match. Its maps hold positions
// in entries, and addresses as plain integers, which keeps lookups on the fast paths of
// the Go map.
type index struct {
	entries                []Entry
	users, companies, keys map[string]int32
	ips4                   map[uint32]int32
	ips6                   map[addr6]int32
	prefixes4              []prefixSet[uint32] // longest prefix first
	prefixes6              []prefixSet[addr6]  // longest prefix first
}

// addr6 is an IPv6 address as two integers, high bits first.
type addr6 struct{ hi, lo uint64 }

// prefixSet holds the cidr entries of one address family and prefix length, keyed by
// their masked address.
type prefixSet[K comparable] struct {
	bits    int
	entries map[K]int32
}

// key4 returns an IPv4 address as an integer with all but its first bits cleared.
func key4(a netip.Addr, bits int) uint32 {
	b := a.As4()
	return (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) & (^uint32(0) << (32 - bits))
}

// key6 returns an IPv6 address as integers with all but its first bits cleared.
func key6(a netip.Addr, bits int) addr6 {
	b := a.As16()
	k := addr6{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	if bits <= 64 {
		return addr6{k.hi & (^uint64(0) << (64 - bits)), 0}
	}
	return addr6{k.hi, k.lo & (^uint64(0) << (128 - bits))}
}

// matchPrefixes returns the entry of the longest prefix in sets that holds the address
// and has not expired.
func matchPrefixes[K comparable](ix *index, sets []prefixSet[K], a netip.Addr, key func(netip.Addr, int) K, now time.Time) (Entry, bool) {
	for i := range sets {
		if e, ok := lookup(ix, sets[i].entries, key(a, sets[i].bits), now); ok {
			return e, true
		}
	}
	return Entry{}, false
}

// addPrefix files entry i under the prefix p in the set of p's length, making it.
func addPrefix[K comparable](sets []prefixSet[K], bits int, k K, i int32) []prefixSet[K] {
	for _, set := range sets {
		if set.bits == bits {
			set.entries[k] = i
			return sets
		}
	}
	return append(sets, prefixSet[K]{bits: bits, entries: map[K]int32{k: i}})
}

// Add adds the entry, or replaces the entry of the same kind and value. It checks the
// entry first and says which field is wrong: an unknown kind, an empty value, an ip that
// does not parse as an IPv4 or IPv6 address, a cidr that does not parse as a range, a
// source other than config or api.
func (l *List) Add(e Entry) error {
	e, err := Normalize(e)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init()
	l.entries[entryID{e.Kind, e.Value}] = e
	l.publish()
	return nil
}

// ReplaceSource replaces every entry from the source (such as "config", on a config
// reload) with entries, whose Source is set to source. It checks every entry first: if
// one is wrong, it changes nothing and says which.
func (l *List) ReplaceSource(source string, entries []Entry) error {
	clean := make([]Entry, len(entries))
	for i, e := range entries {
		e.Source = source
		var err error
		if clean[i], err = Normalize(e); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init()
	for id, e := range l.entries {
		if e.Source == source {
			delete(l.entries, id)
		}
	}
	for _, e := range clean {
		l.entries[entryID{e.Kind, e.Value}] = e
	}
	l.publish()
	return nil
}

// Remove removes the entry of the kind and value (given as Add accepts it: a raw key or
// a key id, a range in any form that masks to it) and returns it, or reports false when
// there is none.
func (l *List) Remove(kind Kind, value string) (Entry, bool) {
	e, err := Normalize(Entry{Kind: kind, Value: value})
	if err != nil {
		return Entry{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	id := entryID{e.Kind, e.Value}
	old, ok := l.entries[id]
	if ok {
		delete(l.entries, id)
		l.publish()
	}
	return old, ok
}

// Prune removes the entries that have expired at now and returns how many.
func (l *List) Prune(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for id, e := range l.entries {
		if e.Expired(now) {
			delete(l.entries, id)
			n++
		}
	}
	if n > 0 {
		l.publish()
	}
	return n
}

// Entries returns the entries that have not expired at now, sorted by kind (user,
// company, key, ip, cidr) and then by value (addresses and ranges in address order).
func (l *List) Entries(now time.Time) []Entry {
	l.mu.Lock()
	out := make([]Entry, 0, len(l.entries))
	for _, e := range l.entries {
		if !e.Expired(now) {
			out = append(out, e)
		}
	}
	l.mu.Unlock()
	slices.SortFunc(out, compareEntries)
	return out
}

// Len returns how many entries the list holds, expired ones not yet pruned included.
func (l *List) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// Match returns the entry that blocks the caller at now, and whether there is one. It
// checks the user, the company, the key, the IP address and then the ranges that hold
// it, longest prefix first, and returns the first entry that has not expired. It takes
// no lock and does not allocate.
func (l *List) Match(c Caller, now time.Time) (Entry, bool) {
	ix := l.index.Load()
	if ix == nil {
		return Entry{}, false
	}
	if e, ok := lookup(ix, ix.users, orAnonymous(c.User), now); ok {
		return e, true
	}
	if e, ok := lookup(ix, ix.companies, orAnonymous(c.Company), now); ok {
		return e, true
	}
	if c.Key != "" {
		if e, ok := lookup(ix, ix.keys, c.Key, now); ok {
			return e, true
		}
	}
	if !c.IP.IsValid() {
		return Entry{}, false
	}
	if ip := c.IP.Unmap(); ip.Is4() {
		if e, ok := lookup(ix, ix.ips4, key4(ip, 32), now); ok {
			return e, true
		}
		return matchPrefixes(ix, ix.prefixes4, ip, key4, now)
	}
	if e, ok := lookup(ix, ix.ips6, key6(c.IP, 128), now); ok {
		return e, true
	}
	return matchPrefixes(ix, ix.prefixes6, c.IP, key6, now)
}

// lookup returns the entry of ix that m holds for k, unless it has expired at now.
func lookup[K comparable](ix *index, m map[K]int32, k K, now time.Time) (Entry, bool) {
	i, ok := m[k]
	if !ok || ix.entries[i].Expired(now) {
		return Entry{}, false
	}
	return ix.entries[i], true
}

func orAnonymous(id string) string {
	if id == "" {
		return identity.Anonymous
	}
	return id
}

// init makes the writers' map. l.mu must be held.
func (l *List) init() {
	if l.entries == nil {
		l.entries = make(map[entryID]Entry)
	}
}

// publish builds the index from the entries and swaps it in. l.mu must be held.
func (l *List) publish() {
	ix := &index{
		entries:   make([]Entry, 0, len(l.entries)),
		users:     make(map[string]int32),
		companies: make(map[string]int32),
		keys:      make(map[string]int32),
		ips4:      make(map[uint32]int32),
		ips6:      make(map[addr6]int32),
	}
	for _, e := range l.entries {
		i := int32(len(ix.entries))
		ix.entries = append(ix.entries, e)
		switch e.Kind {
		case User:
			ix.users[e.Value] = i
		case Company:
			ix.companies[e.Value] = i
		case Key:
			ix.keys[e.Value] = i
		case IP:
			if a := netip.MustParseAddr(e.Value); a.Is4() {
				ix.ips4[key4(a, 32)] = i
			} else {
				ix.ips6[key6(a, 128)] = i
			}
		case CIDR:
			if p := netip.MustParsePrefix(e.Value); p.Addr().Is4() {
				ix.prefixes4 = addPrefix(ix.prefixes4, p.Bits(), key4(p.Addr(), p.Bits()), i)
			} else {
				ix.prefixes6 = addPrefix(ix.prefixes6, p.Bits(), key6(p.Addr(), p.Bits()), i)
			}
		}
	}
	slices.SortFunc(ix.prefixes4, func(a, b prefixSet[uint32]) int { return cmp.Compare(b.bits, a.bits) })
	slices.SortFunc(ix.prefixes6, func(a, b prefixSet[addr6]) int { return cmp.Compare(b.bits, a.bits) })
	l.index.Store(ix)
}

// Normalize checks an entry and puts its value in canonical form, as Add stores it: a raw
// API key becomes its key id, addresses and ranges their canonical text. Errors say which
// field is wrong.
func Normalize(e Entry) (Entry, error) {
	kind, err := ParseKind(string(e.Kind))
	if err != nil {
		return Entry{}, err
	}
	e.Kind = kind
	e.Value = strings.TrimSpace(e.Value)
	if e.Value == "" {
		return Entry{}, fmt.Errorf("value: empty (kind %s)", kind)
	}
	switch kind {
	case Key:
		if !identity.IsKeyID(e.Value) {
			e.Value = identity.KeyID(e.Value)
		}
	case IP:
		addr, err := netip.ParseAddr(e.Value)
		if err != nil {
			hint := ""
			if strings.Contains(e.Value, "/") {
				hint = " (a range is kind cidr)"
			}
			return Entry{}, fmt.Errorf("value %q: not an IPv4 or IPv6 address%s", e.Value, hint)
		}
		e.Value = addr.Unmap().WithZone("").String()
	case CIDR:
		p, err := netip.ParsePrefix(e.Value)
		if err != nil {
			return Entry{}, fmt.Errorf("value %q: not a CIDR range such as 203.0.113.0/24 or 2001:db8::/32", e.Value)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		e.Value = p.Masked().String()
	}
	switch e.Source {
	case "":
		e.Source = SourceAPI
	case SourceAPI, SourceConfig:
	default:
		return Entry{}, fmt.Errorf("source %q: want config or api", e.Source)
	}
	if e.Added.IsZero() {
		e.Added = time.Now()
	}
	return e, nil
}

func compareEntries(a, b Entry) int {
	if c := cmp.Compare(slices.Index(kinds, a.Kind), slices.Index(kinds, b.Kind)); c != 0 {
		return c
	}
	switch a.Kind {
	case IP:
		return netip.MustParseAddr(a.Value).Compare(netip.MustParseAddr(b.Value))
	case CIDR:
		pa, pb := netip.MustParsePrefix(a.Value), netip.MustParsePrefix(b.Value)
		return cmp.Or(pa.Addr().Compare(pb.Addr()), cmp.Compare(pa.Bits(), pb.Bits()))
	}
	return strings.Compare(a.Value, b.Value)
}
