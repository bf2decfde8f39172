package redis_test

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// adversarialNames are context names and keys meant to reach another
// context's Redis keys: "a}:lock:k" has the tag of context "a" followed by
// the lock key of "k}"; others forge escapes, carry NUL, unicode, or are
// long.
var adversarialNames = []string{
	"a", "a}", "a}:lock:k", "a}:meta", "a}:data", "{a}", "a{b}", "}", "{", "%", "%7D", "%25",
	"a:b", "a\x00b", "ключ", "🔑", strings.Repeat("x", 10<<10),
}

// adversarialKeys are context keys that forge the suffixes of contextd's
// own Redis keys.
var adversarialKeys = []string{"k", "k}:meta", "}:data", ":lock:k", "k\x00", "ключ", strings.Repeat("y", 10<<10)}

// TestAdversarialNamesAreIsolated opens one context per adversarial name on
// one Redis, each holding a lock on every adversarial key while it writes
// them: every write succeeds (no context's lock or data lands on another's
// keys), and each context holds exactly its own values, at its own
// revisions, as its instance and a fresh one read them.
func TestAdversarialNamesAreIsolated(t *testing.T) {
	srv := redistest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := &contextd.Options{MaxRetries: -1} // a write to a key locked by anyone else fails at once
	cs := make([]*contextd.Context[string], len(adversarialNames))
	for i, name := range adversarialNames {
		cs[i] = openInstance[string](t, newBackend(t, srv, nil), name, opts)
	}
	want := func(i int, key string) string { return fmt.Sprintf("%d/%.20q", i, key) }
	for i, c := range cs {
		for _, key := range adversarialKeys {
			l, err := c.AcquireLock(ctx, contextd.LockOptions{Key: key, LockTimeout: time.Minute, MaxRetries: -1})
			if err != nil {
				t.Fatalf("context %.20q: AcquireLock(%.20q): %v (another context's keys are in the way)", adversarialNames[i], key, err)
			}
			if err := c.UpdateContext(ctx, key, want(i, key), contextd.WithLock(l)); err != nil {
				t.Fatalf("context %.20q: UpdateContext(%.20q): %v", adversarialNames[i], key, err)
			}
		}
	}
	// Every context wrote its keys in its own revisions 1..n: a write that
	// had landed in another context's keys would show there.
	for i, c := range cs {
		wantAll := map[string]string{}
		for _, key := range adversarialKeys {
			wantAll[key] = want(i, key)
		}
		if err := c.Sync(ctx); err != nil {
			t.Fatalf("context %.20q: Sync: %v", adversarialNames[i], err)
		}
		got, err := c.GetContext(ctx)
		if err != nil || !maps.Equal(got, wantAll) {
			t.Errorf("context %.20q holds %v (%v), want exactly its own writes %v", adversarialNames[i], got, err, wantAll)
		}
		if rev := c.Revision(); rev != uint64(len(adversarialKeys)) {
			t.Errorf("context %.20q is at revision %d, want %d (one per own write)", adversarialNames[i], rev, len(adversarialKeys))
		}
	}
	// Every Redis key belongs to exactly one context's tag.
	keys, err := srv.Do(ctx, "KEYS", "*")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys.([]any) {
		owners := 0
		for _, name := range adversarialNames {
			if strings.HasPrefix(k.(string), backend.HashTag(name)) {
				owners++
			}
		}
		if owners != 1 {
			t.Errorf("Redis key %.60q belongs to %d contexts' tags, want exactly 1", k, owners)
		}
	}
}
