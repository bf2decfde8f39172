package conformance

import (
	"testing"
	"time"

	"github.com/contextd-go/contextd/locker"
)

// testListLocks checks locker.Lister where the harness declares it, and its
// absence where it does not.
func testListLocks(t *testing.T, h Harness) {
	if !h.ListLocks {
		t.Run("Absent", func(t *testing.T) {
			t.Parallel()
			if b, ok := h.NewBackend(t).(locker.Lister); ok {
				t.Errorf("%T implements locker.Lister, but the harness does not declare ListLocks", b)
			}
		})
		return
	}
	shortTTL, expiryMargin := h.shortTTL(), h.expiryMargin()
	lister := func(t *testing.T) locker.Lister {
		b := h.NewBackend(t)
		l, ok := b.(locker.Lister)
		if !ok {
			t.Fatalf("the harness declares ListLocks, but %T does not implement locker.Lister", b)
		}
		return l
	}
	t.Run("HeldLocks", func(t *testing.T) {
		t.Parallel()
		holder, name := h.NewBackend(t), uniqueName(t)
		// Another backend over the same storage lists them: another
		// process, as the contextd command is.
		ls := lister(t)
		if got, err := ls.ListLocks(t.Context(), name); err != nil || len(got) != 0 {
			t.Fatalf("ListLocks of a context without locks = %v, %v; want none", got, err)
		}
		before := time.Now()
		b := mustAcquire(t, holder, name, "b", longTTL)
		a := mustAcquire(t, holder, name, "a*[x]", longTTL) // glob characters stay literal
		other := mustAcquire(t, holder, uniqueName(t), "a", longTTL)
		got, err := ls.ListLocks(t.Context(), name)
		if err != nil {
			t.Fatalf("ListLocks: %v", err)
		}
		if len(got) != 2 {
			t.Fatalf("ListLocks with locks %q and %q held = %+v; want those two, sorted by key", a.Key, b.Key, got)
		}
		for i, want := range []locker.Lease{a, b} {
			g := got[i]
			if g.Key != want.Key || g.Token != want.Token || g.Fence != want.Fence {
				t.Errorf("ListLocks[%d] = %+v; want key %q, token %q, fence %d", i, g, want.Key, want.Token, want.Fence)
			}
			// Clocks of machines differ a little: a second of slack.
			if g.Expires.Before(before.Add(longTTL-time.Second)) || g.Expires.After(time.Now().Add(longTTL+time.Second)) {
				t.Errorf("ListLocks[%d].Expires = %v; want about %v from now", i, g.Expires, longTTL)
			}
		}
		if err := holder.Release(t.Context(), a); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if err := holder.Release(t.Context(), other); err != nil {
			t.Fatalf("Release: %v", err)
		}
		got, err = ls.ListLocks(t.Context(), name)
		if err != nil || len(got) != 1 || got[0].Key != "b" {
			t.Errorf("ListLocks after releasing %q = %+v, %v; want only %q", a.Key, got, err, "b")
		}
	})
	t.Run("ExpiredLocksLeave", func(t *testing.T) {
		t.Parallel()
		holder, name := h.NewBackend(t), uniqueName(t)
		ls := lister(t)
		mustAcquire(t, holder, name, "k", shortTTL)
		acquired := time.Now()                                        // the TTL runs from a moment before this
		time.Sleep(time.Until(acquired.Add(shortTTL + expiryMargin))) // the TTL must pass
		if got, err := ls.ListLocks(t.Context(), name); err != nil || len(got) != 0 {
			t.Errorf("ListLocks after the only lock expired = %+v, %v; want none", got, err)
		}
	})
}
