package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestKeyID(t *testing.T) {
	long := strings.Repeat("k", 300)
	sum := sha256.Sum256([]byte(long))
	tests := []struct {
		name, raw, want string
	}{
		{"empty key gives empty id", "", ""},
		{"sha256 of abc", "abc", "key:ba7816bf"},
		{"sha256 of a typical key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "key:" + hexPrefix("sk_live_4eC39HqLyjWDarjtT1zdp7dc")},
		{"key longer than the stack buffer", long, "key:" + hex.EncodeToString(sum[:4])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KeyID(tt.raw); got != tt.want {
				t.Errorf("KeyID(%q) = %q, want %q", tt.raw, got, tt.want)
			}
			if got := string(AppendKeyID([]byte("x"), tt.raw)); got != "x"+tt.want {
				t.Errorf("AppendKeyID(x, %q) = %q, want %q", tt.raw, got, "x"+tt.want)
			}
			if tt.want != "" && !IsKeyID(tt.want) {
				t.Errorf("IsKeyID(%q) = false, want true", tt.want)
			}
		})
	}
}

func hexPrefix(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:8]
}

func TestIsKeyID(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"key:3f2a9c1e", true},
		{"key:00000000", true},
		{"key:3F2A9C1E", false}, // KeyID writes lowercase only
		{"key:3f2a9c1", false},
		{"key:3f2a9c1e0", false},
		{"key:3f2a9c1g", false},
		{"Key:3f2a9c1e", false},
		{"kex:3f2a9c1e", false},
		{"3f2a9c1e", false},
		{"", false},
		{"key:", false},
	}
	for _, tt := range tests {
		if got := IsKeyID(tt.in); got != tt.want {
			t.Errorf("IsKeyID(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestAppendKeyIDAllocs(t *testing.T) {
	raw := strings.Repeat("secret", 20)
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = AppendKeyID(buf[:0], raw) }); n != 0 {
		t.Errorf("AppendKeyID allocates %v times per call, want 0", n)
	}
}

func BenchmarkAppendKeyID(b *testing.B) {
	raw := "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendKeyID(buf[:0], raw)
	}
}
