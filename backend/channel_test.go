package backend_test

import (
	"strings"
	"testing"

	"github.com/contextd-go/contextd/backend"
)

// adversarialNames are context names meant to reach another context's
// keys: braces and colons that forge key suffixes, escape look-alikes,
// NUL, unicode, and a long name.
var adversarialNames = []string{
	"a", "a}", "a}:lock:k", "a}:meta", "{a}", "a{b}", "}", "{", "%", "%7D", "%7B", "%25", "a%7Db",
	"a:b", "a:", ":a", "a\x00b", "a\x00", "ключ", "🔑", "a\xff", strings.Repeat("x", 10<<10),
}

// TestHashTagsAreDisjoint checks that no two names give tags of which one
// is a prefix of the other: then no key of one context (its tag and a
// suffix) can be a key of another.
func TestHashTagsAreDisjoint(t *testing.T) {
	for _, x := range adversarialNames {
		for _, y := range adversarialNames {
			if x != y {
				checkDisjoint(t, x, y)
			}
		}
	}
}

func FuzzHashTagsAreDisjoint(f *testing.F) {
	for i, x := range adversarialNames {
		f.Add(x, adversarialNames[(i+1)%len(adversarialNames)])
	}
	f.Fuzz(func(t *testing.T, x, y string) {
		if x != y {
			checkDisjoint(t, x, y)
		}
	})
}

func checkDisjoint(t *testing.T, x, y string) {
	t.Helper()
	tx, ty := backend.HashTag(x), backend.HashTag(y)
	if strings.HasPrefix(tx, ty) || strings.HasPrefix(ty, tx) {
		t.Fatalf("HashTag(%q) = %q and HashTag(%q) = %q: one is a prefix of the other, so their keys can meet", x, tx, y, ty)
	}
	// The tag is a Redis Cluster hash tag: it must end at its first '}'.
	if i := strings.IndexByte(tx, '}'); i != len(tx)-1 {
		t.Fatalf("HashTag(%q) = %q has a '}' before its end", x, tx)
	}
}

func TestHashTagKeepsPlainNames(t *testing.T) {
	for name, want := range map[string]string{
		"my_cxtd": "{contextd:my_cxtd}",
		"a:b.c-d": "{contextd:a:b.c-d}",
		"a}":      "{contextd:a%7D}",
		"50%":     "{contextd:50%25}",
	} {
		if got := backend.HashTag(name); got != want {
			t.Errorf("HashTag(%q) = %q, want %q", name, got, want)
		}
	}
	if got, want := backend.DefaultChannel("a}"), "{contextd:a%7D}:events"; got != want {
		t.Errorf("DefaultChannel = %q, want %q", got, want)
	}
}
