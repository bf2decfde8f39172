package contextd_test

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
)

func TestConditionalWrites(t *testing.T) {
	b := newMemory(t, nil)
	c := open[string](t, b, "ctx", nil)
	other := open[string](t, b, "ctx", nil)
	ctx := t.Context()

	rev, err := c.Create(ctx, "k", "first")
	if err != nil || rev != 1 {
		t.Fatalf("Create of an absent key = %d, %v; want revision 1", rev, err)
	}
	if _, err := other.Create(ctx, "k", "second"); !errors.Is(err, contextd.ErrConflict) {
		t.Fatalf("Create of an existing key = %v, want ErrConflict", err)
	}
	e, ok, err := c.GetEntry(ctx, "k")
	if err != nil || !ok || e.Value != "first" || e.Revision != 1 || e.Key != "k" {
		t.Fatalf("GetEntry = %+v, %v, %v", e, ok, err)
	}
	// IfRevision: the write goes through at the revision read, not after
	// another write.
	if err := c.UpdateContext(ctx, "k", "v2", contextd.IfRevision(e.Revision)); err != nil {
		t.Fatalf("UpdateContext IfRevision of the current revision: %v", err)
	}
	if err := other.UpdateContext(ctx, "k", "stale", contextd.IfRevision(e.Revision)); !errors.Is(err, contextd.ErrConflict) {
		t.Fatalf("UpdateContext IfRevision of an old revision = %v, want ErrConflict", err)
	}
	if v, _, _ := c.Get(ctx, "k", contextd.Fresh()); v != "v2" {
		t.Fatalf("a refused conditional write changed the value to %q", v)
	}
	if err := c.UpdateContext(ctx, "new", "x", contextd.IfAbsent()); err != nil {
		t.Fatalf("UpdateContext IfAbsent of an absent key: %v", err)
	}
	// Delete with a condition.
	cur, _, _ := c.GetEntry(ctx, "new", contextd.Fresh())
	if err := other.Delete(ctx, "new", contextd.IfRevision(cur.Revision+7)); !errors.Is(err, contextd.ErrConflict) {
		t.Fatalf("Delete IfRevision of a wrong revision = %v, want ErrConflict", err)
	}
	if err := other.Delete(ctx, "new", contextd.IfRevision(cur.Revision)); err != nil {
		t.Fatalf("Delete IfRevision of the current revision: %v", err)
	}
	if _, ok, _ := c.Get(ctx, "new", contextd.Fresh()); ok {
		t.Fatal("the conditional delete did not delete")
	}
}

func TestTxn(t *testing.T) {
	b := newMemory(t, nil)
	c := open[int](t, b, "ctx", nil)
	other := open[int](t, b, "ctx", nil)
	ctx := t.Context()
	if err := c.TransactionalUpdate(ctx, map[string]int{"a": 1, "b": 2, "guard": 0}); err != nil {
		t.Fatal(err)
	}
	guard, _, _ := c.GetEntry(ctx, "guard")
	rev, err := c.Txn().Put("a", 10).Delete("b").Put("c", 3).IfRevision("guard", guard.Revision).Commit(ctx)
	if err != nil || rev != 2 {
		t.Fatalf("Txn.Commit = %d, %v; want revision 2", rev, err)
	}
	eventually(t, "the other instance applies the transaction", func() bool { return other.Revision() == 2 })
	got, _ := other.GetContext(ctx)
	if want := map[string]int{"a": 10, "c": 3, "guard": 0}; !maps.Equal(got, want) {
		t.Fatalf("after the transaction the other instance has %v, want %v", got, want)
	}
	// A failing condition, on a key not written, writes nothing.
	if err := other.UpdateContext(ctx, "guard", 1); err != nil {
		t.Fatal(err)
	}
	_, err = c.Txn().Put("a", 99).Delete("c").IfRevision("guard", guard.Revision).Commit(ctx)
	if !errors.Is(err, contextd.ErrConflict) {
		t.Fatalf("Txn with a stale condition = %v, want ErrConflict", err)
	}
	if v, _, _ := c.Get(ctx, "a", contextd.Fresh()); v != 10 {
		t.Fatalf("a refused transaction wrote a = %d", v)
	}
	if _, err := c.Txn().Put("z", 1).IfAbsent("a").Commit(ctx); !errors.Is(err, contextd.ErrConflict) {
		t.Fatalf("Txn IfAbsent of an existing key = %v, want ErrConflict", err)
	}
}

func TestLockHolderDeletesAndTransacts(t *testing.T) {
	lockBackends(t, func(t *testing.T, b *memory.Backend) {
		c := open[int](t, b, "ctx", nil)
		other := open[int](t, b, "ctx", &contextd.Options{MaxRetries: -1})
		ctx := t.Context()
		if err := c.UpdateContext(ctx, "k", 1); err != nil {
			t.Fatal(err)
		}
		l, err := c.AcquireLock(ctx, contextd.LockOptions{Key: "k"})
		if err != nil {
			t.Fatal(err)
		}
		if err := other.Delete(ctx, "k"); !errors.Is(err, contextd.ErrLockNotAcquired) {
			t.Fatalf("Delete of a key another holds = %v, want ErrLockNotAcquired", err)
		}
		if _, err := c.Txn().Put("k", 2).Put("j", 2).Commit(ctx, contextd.WithLock(l)); err != nil {
			t.Fatalf("Txn WithLock by the holder: %v", err)
		}
		if err := c.Delete(ctx, "k", contextd.WithLock(l)); err != nil {
			t.Fatalf("Delete WithLock by the holder: %v", err)
		}
		if _, ok, _ := c.Get(ctx, "k"); ok {
			t.Fatal("the holder's delete did not delete")
		}
		_ = l.Release(ctx)
	})
}

func TestModifyDeletesAndConditions(t *testing.T) {
	c := open[int](t, newMemory(t, nil), "ctx", nil)
	ctx := t.Context()
	if err := c.UpdateContext(ctx, "n", 3); err != nil {
		t.Fatal(err)
	}
	// Count down, deleting at zero.
	for range 3 {
		if _, err := c.Modify(ctx, "n", func(cur int, _ bool) (int, error) {
			if cur == 1 {
				return 0, contextd.DeleteKey
			}
			return cur - 1, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := c.Get(ctx, "n", contextd.Fresh()); ok {
		t.Fatal("Modify returning DeleteKey did not delete the key")
	}
	if err := c.UpdateContext(ctx, "m", 1); err != nil {
		t.Fatal(err)
	}
	e, _, _ := c.GetEntry(ctx, "m")
	calls := 0
	inc := func(cur int, _ bool) (int, error) { calls++; return cur + 1, nil }
	if _, err := c.Modify(ctx, "m", inc, contextd.IfRevision(e.Revision+1)); !errors.Is(err, contextd.ErrConflict) || calls != 0 {
		t.Fatalf("Modify IfRevision of another revision = %v after %d calls, want ErrConflict and no call", err, calls)
	}
	if v, err := c.Modify(ctx, "m", inc, contextd.IfRevision(e.Revision)); err != nil || v != 2 {
		t.Fatalf("Modify IfRevision of the current revision = %d, %v", v, err)
	}
}

func TestIteration(t *testing.T) {
	c := open[int](t, newMemory(t, nil), "ctx", nil)
	ctx := t.Context()
	if err := c.TransactionalUpdate(ctx, map[string]int{"user:a": 1, "user:b": 2, "x": 3}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if got := maps.Collect(c.All()); !maps.Equal(got, map[string]int{"user:a": 1, "user:b": 2}) {
		t.Fatalf("All = %v", got)
	}
	if got := maps.Collect(c.Prefix("user:b")); !maps.Equal(got, map[string]int{"user:b": 2}) {
		t.Fatalf("Prefix = %v", got)
	}
	if keys := slices.Sorted(c.Keys()); !slices.Equal(keys, []string{"user:a", "user:b"}) {
		t.Fatalf("Keys = %v", keys)
	}
	if n := c.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	// Iterating while writing sees one state, the one of the call.
	seen := 0
	for k := range c.All() {
		if err := c.UpdateContext(ctx, k+"-copy", 0); err != nil {
			t.Fatal(err)
		}
		seen++
	}
	if seen != 2 {
		t.Fatalf("iteration while writing yielded %d keys, want the 2 of the state it started from", seen)
	}
}
