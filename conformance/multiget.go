package conformance

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/contextd-go/contextd/backend"
)

// testGetMany checks backend.MultiGetter, for a store that offers it: the
// entries of the keys that exist, in the order asked, each as Get reports
// it, also across the parts a store may split a large read into.
func testGetMany(t *testing.T, h Harness) {
	probe := h.NewBackend(t)
	if _, ok := probe.(backend.MultiGetter); !ok {
		t.Skip("the store does not implement backend.MultiGetter")
	}
	getMany := func(t *testing.T, s backend.Store, name string, keys []string) []backend.Entry {
		t.Helper()
		es, err := s.(backend.MultiGetter).GetMany(t.Context(), name, keys)
		if err != nil {
			t.Fatalf("GetMany of %d keys: %v", len(keys), err)
		}
		return es
	}

	t.Run("Entries", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		first := mustCommit(t, b1, name, batch(put("a", "1"), put("b", "2"), put("c", "3")))
		second := mustCommit(t, b1, name, batch(put("c", "33"), del("b"), put("empty", "")))
		if es := getMany(t, b2, name, nil); len(es) != 0 {
			t.Errorf("GetMany of no keys = %d entries, want none", len(es))
		}
		got := getMany(t, b2, name, []string{"c", "missing", "a", "b", "empty", "a"})
		want := []backend.Entry{
			{Key: "c", Value: []byte("33"), Revision: second.Revision, Commit: second.Commit},
			{Key: "a", Value: []byte("1"), Revision: first.Revision, Commit: first.Commit},
			{Key: "empty", Value: []byte{}, Revision: second.Revision, Commit: second.Commit},
			{Key: "a", Value: []byte("1"), Revision: first.Revision, Commit: first.Commit},
		}
		if len(got) != len(want) {
			t.Fatalf("GetMany(c, missing, a, b (deleted), empty, a) = %d entries %v; want %d (missing and deleted keys left out)", len(got), keysOf(got), len(want))
		}
		for i := range want {
			if !entryEqual(got[i], want[i]) || got[i].Commit != want[i].Commit {
				t.Errorf("GetMany entry %d = key %q %s commit %q; want key %q %s commit %q", i, got[i].Key, fmtEntry(got[i]), got[i].Commit,
					want[i].Key, fmtEntry(want[i]), want[i].Commit)
			}
		}
		if es := getMany(t, b2, uniqueName(t), []string{"a"}); len(es) != 0 {
			t.Errorf("GetMany in a context never written = %d entries, want none", len(es))
		}
	})

	// More keys than a store is likely to read in one part (the Redis
	// backend reads 1000 per script).
	t.Run("Large", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		const n = 2500
		ops := make([]backend.Op, n)
		keys := make([]string, 0, n+n/10)
		for i := range ops {
			ops[i] = put(fmt.Sprintf("key-%05d", i), fmt.Sprintf("value %d", i))
			keys = append(keys, ops[i].Key)
			if i%10 == 0 {
				keys = append(keys, fmt.Sprintf("missing-%05d", i))
			}
		}
		head := mustCommit(t, s, name, batch(ops...))
		got := getMany(t, s, name, keys)
		if len(got) != n {
			t.Fatalf("GetMany of %d keys, %d of them present = %d entries", len(keys), n, len(got))
		}
		for i, e := range got {
			if want := entry(ops[i].Key, string(ops[i].Value), head.Revision); !entryEqual(e, want) {
				t.Fatalf("GetMany entry %d = key %q %s; want key %q %s", i, e.Key, fmtEntry(e), want.Key, fmtEntry(want))
			}
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		mustCommit(t, s, name, batch(put("a", "1")))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if es, err := s.(backend.MultiGetter).GetMany(ctx, name, []string{"a"}); !errors.Is(err, context.Canceled) {
			t.Errorf("GetMany with a cancelled ctx = %d entries, %v; want an error matching context.Canceled", len(es), err)
		}
	})
}
