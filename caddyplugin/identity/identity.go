// Package identity names the callers of the gateway without keeping their secrets.
//
// An API key is a secret: Vigil never stores, logs or shows it. Wherever a key must be
// kept (rate-limit state, block lists, recorded calls, alerts) it is replaced by its key id,
// "key:" followed by the first 8 hex characters of the SHA-256 of the raw key, for example
// "key:3f2a9c1e". A caller with no user, company or key is [Anonymous].
package identity

import (
	"crypto/sha256"
	"encoding/hex"
)

// Anonymous is the identity of a caller that has no user, company or API key: it stands
// in for the missing value wherever an identity is recorded or matched.
const Anonymous = "anonymous"

// KeyIDPrefix starts every key id.
const KeyIDPrefix = "key:"

// keyIDHexLen is how many hex characters of the SHA-256 a key id keeps (32 bits): enough
// to tell a site's keys apart in reports, too few to confirm a guessed key offline.
const keyIDHexLen = 8

// KeyIDLen is the length in bytes of every key id, such as "key:3f2a9c1e".
const KeyIDLen = len(KeyIDPrefix) + keyIDHexLen

// KeyID returns the key id of the raw API key: "key:" and the first 8 lowercase hex
// characters of its SHA-256. An empty raw key gives an empty result. KeyID allocates the
// 12-byte result; on the request path use [AppendKeyID] with a reused buffer.
func KeyID(raw string) string {
	if raw == "" {
		return ""
	}
	var buf [KeyIDLen]byte
	return string(AppendKeyID(buf[:0], raw))
}

// AppendKeyID appends the key id of the raw API key to dst and returns the extended
// buffer; an empty raw key appends nothing. It does not allocate when dst has room for
// [KeyIDLen] more bytes.
func AppendKeyID(dst []byte, raw string) []byte {
	if raw == "" {
		return dst
	}
	d := sha256.Sum256(stringBytes(raw))
	dst = append(dst, KeyIDPrefix...)
	return hex.AppendEncode(dst, d[:keyIDHexLen/2])
}

// IsKeyID reports whether s already is a key id as [KeyID] makes it: "key:" followed by
// exactly 8 lowercase hex characters. A block-list entry can thus be given either a raw
// key or its key id.
func IsKeyID(s string) bool {
	if len(s) != KeyIDLen || s[:len(KeyIDPrefix)] != KeyIDPrefix {
		return false
	}
	for i := len(KeyIDPrefix); i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
