package endpoint

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name, path, want string
	}{
		// Shape of the path.
		{"root", "/", "/"},
		{"empty path", "", "/"},
		{"only slashes", "///", "/"},
		{"query dropped", "/users?id=42", "/users"},
		{"fragment dropped", "/users#top", "/users"},
		{"query on root", "/?q=1", "/"},
		{"relative path read as absolute", "users/me", "/users/me"},
		{"repeated slashes collapse", "//users///me", "/users/me"},
		{"trailing slash dropped", "/users/", "/users"},
		// Kept as they are.
		{"version v1", "/v1/users", "/v1/users"},
		{"version v2", "/v2", "/v2"},
		{"oauth2", "/oauth2/token", "/oauth2/token"},
		{"base64", "/encode/base64", "/encode/base64"},
		{"s3", "/s3/buckets", "/s3/buckets"},
		{"me", "/users/me", "/users/me"},
		{"id placeholder is stable", "/users/{id}", "/users/{id}"},
		{"rest placeholder is stable", "/a/{rest}", "/a/{rest}"},
		// Rule 1: all digits.
		{"digits", "/users/42/orders", "/users/{id}/orders"},
		{"single digit", "/page/7", "/page/{id}"},
		{"digits and letter kept", "/x/7a", "/x/7a"},
		// Rule 2: UUIDs.
		{"uuid lower", "/o/123e4567-e89b-12d3-a456-426614174000", "/o/{id}"},
		{"uuid upper", "/o/123E4567-E89B-12D3-A456-426614174000", "/o/{id}"},
		{"uuid without dashes is long hex", "/o/123e4567e89b12d3a456426614174000", "/o/{id}"},
		{"uuid shape with letters only kept", "/o/abcdefgh-ijkl-mnop-qrst-uvwxyzabcdef", "/o/abcdefgh-ijkl-mnop-qrst-uvwxyzabcdef"},
		// Rule 3: hex.
		{"hex 16 letters only", "/h/deadbeefdeadbeef", "/h/{id}"},
		{"hex 8 with digit and letter", "/h/5f3c9a1b", "/h/{id}"},
		{"hex 8 letters only kept", "/h/deadbeef", "/h/deadbeef"},
		{"hex 7 with digit and letter kept", "/h/5f3c9a1", "/h/5f3c9a1"},
		{"hex word kept", "/h/facade", "/h/facade"},
		{"hex 15 letters only kept", "/h/abcdefabcdefabc", "/h/abcdefabcdefabc"},
		// Rule 4: tokens.
		{"token with digit", "/t/sk_live_4eC39HqLyjWDarjtT1zdp7dc", "/t/{id}"},
		{"token 20 chars with digit", "/t/abcdefghijklmnopqrs1", "/t/{id}"},
		{"token 19 chars kept", "/t/abcdefghijklmnopqr1", "/t/abcdefghijklmnopqr1"},
		{"long slug without digit kept", "/docs/getting-started-with-the-gateway", "/docs/getting-started-with-the-gateway"},
		{"long with a non-token char kept", "/t/abcdefghij!klmnopqrs1", "/t/abcdefghij!klmnopqrs1"},
		// Rule 5: numeric parts.
		{"prefixed id", "/users/u-42", "/users/{id}"},
		{"underscore id", "/orders/order_123", "/orders/{id}"},
		{"date", "/reports/2026-11-24", "/reports/{id}"},
		{"colon id", "/x/urn:42", "/x/{id}"},
		{"dotted version", "/v1.10/x", "/{id}/x"},
		{"one digit part kept", "/page-1", "/page-1"},
		{"utf-8 kept", "/charset/utf-8", "/charset/utf-8"},
		{"digits inside a word kept", "/i18n", "/i18n"},
		// Rule 6: e-mails.
		{"email", "/users/ann@example.com", "/users/{id}"},
		{"at sign", "/@ann", "/{id}"},
		// Rule 7: percent-encoded.
		{"percent long", "/q/caf%C3%A9-au-lait", "/q/{id}"},
		{"percent short kept", "/q/caf%C3%A9", "/q/caf%C3%A9"},
		{"percent exactly 16 kept", "/q/%20%20%20%20%20a", "/q/%20%20%20%20%20a"},
		{"percent 17", "/q/%20%20%20%20%20ab", "/q/{id}"},
		{"raw non-ASCII encoded", "/q/café", "/q/caf%C3%A9"},
		{"raw space encoded", "/q/a b", "/q/a%20b"},
		{"raw non-ASCII long", "/q/cafécafécafé", "/q/{id}"},
		// Caps.
		{"16 segments kept", "/" + strings.Repeat("a/", 15) + "b", "/" + strings.Repeat("a/", 15) + "b"},
		{"17 segments fold", "/" + strings.Repeat("a/", 16) + "b", "/" + strings.Repeat("a/", 15) + "{rest}"},
		{"many segments fold", strings.Repeat("/x", 100), strings.Repeat("/x", 15) + "/{rest}"},
		{"256 bytes kept", "/" + strings.Repeat("x", 255), "/" + strings.Repeat("x", 255)},
		{"257 bytes fold", "/" + strings.Repeat("x", 256), "/{rest}"},
		{"long tail folds after the first segments", "/api/" + strings.Repeat("y", 300), "/api/{rest}"},
		{"fold makes room for rest", "/" + strings.Repeat("x", 240) + "/yyyyyyyy/zzzzzzzzzz", "/" + strings.Repeat("x", 240) + "/{rest}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Normalize(tt.path)
			if got != tt.want {
				t.Errorf("Normalize(%q) = %q, want %q", tt.path, got, tt.want)
			}
			if again := Normalize(got); again != got {
				t.Errorf("Normalize(%q) = %q, not idempotent: again %q", tt.path, got, again)
			}
			if len(got) > MaxLen {
				t.Errorf("Normalize(%q) has %d bytes, want at most %d", tt.path, len(got), MaxLen)
			}
		})
	}
}

func TestIsIdentifier(t *testing.T) {
	tests := []struct {
		seg  string
		want bool
	}{
		{"0", true},
		{"v1", false},
		{"oauth2", false},
		{"base64", false},
		{"s3", false},
		{"users", false},
		{"me", false},
		{"2fa", false},
		{"ab12cd34", true},
		{"ABCDEF0123456789", true},
		{"top-10", true},
		{"a.b.c", false},
		{"--", false},
		{"%", false},
		{"\x00", false},
	}
	for _, tt := range tests {
		if got := isIdentifier(tt.seg); got != tt.want {
			t.Errorf("isIdentifier(%q) = %v, want %v", tt.seg, got, tt.want)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"/", "", "/users/42", "//a//b/", "/q/café", "/a?b", strings.Repeat("/x", 40),
		"/" + strings.Repeat("a", 300), "/u-42/2026-11-24/ann@x", "/%zz%20", "/{rest}/{id}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		got := Normalize(path)
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("Normalize(%q) = %q, does not start with /", path, got)
		}
		if len(got) > MaxLen {
			t.Fatalf("Normalize(%q) = %q, %d bytes, want at most %d", path, got, len(got), MaxLen)
		}
		if n := strings.Count(got, "/"); n > MaxSegments {
			t.Fatalf("Normalize(%q) = %q, %d segments, want at most %d", path, got, n, MaxSegments)
		}
		if again := Normalize(got); again != got {
			t.Fatalf("Normalize(%q) = %q, not idempotent: again %q", path, got, again)
		}
	})
}

func TestAppendNormalizedAllocs(t *testing.T) {
	buf := make([]byte, 0, MaxLen)
	path := "/v1/users/123e4567-e89b-12d3-a456-426614174000/orders/order_123?x=1"
	if n := testing.AllocsPerRun(100, func() { buf = AppendNormalized(buf[:0], path) }); n != 0 {
		t.Errorf("AppendNormalized allocates %v times per call, want 0", n)
	}
}

func BenchmarkNormalize(b *testing.B) {
	buf := make([]byte, 0, MaxLen)
	path := "/v1/users/123e4567-e89b-12d3-a456-426614174000/orders/order_123?x=1"
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendNormalized(buf[:0], path)
	}
}
