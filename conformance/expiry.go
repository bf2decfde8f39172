package conformance

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
)

// minKeyTTL is the shortest TTL the expiry tests give keys: a test must
// make its next call (an Expire that finds nothing due yet, a rewrite)
// within the TTL, and a call to a database server on a loaded machine under
// the race detector can take far longer than the 50 ms of lock tests.
const minKeyTTL = time.Second

// putTTL is a put that expires after ttl.
func putTTL(key, value string, ttl time.Duration) backend.Op {
	return backend.Op{Key: key, Value: []byte(value), TTL: ttl}
}

// entryOf returns the entry of key in snap.
func entryOf(snap backend.Snapshot, key string) (backend.Entry, bool) {
	for _, e := range snap.Entries {
		if e.Key == key {
			return e, true
		}
	}
	return backend.Entry{}, false
}

// testExpiry checks the Expiry capability: puts with a TTL expire, by an
// ordinary revisioned delete, per key; a rewrite without TTL keeps the key,
// one with a TTL sets a new deadline; Expire is idempotent.
func testExpiry(t *testing.T, h Harness) {
	expirer := func(t *testing.T, b backend.Backend) backend.Expirer {
		t.Helper()
		x, ok := b.(backend.Expirer)
		if !ok {
			t.Fatalf("Expiry is declared, but %T does not implement backend.Expirer", b)
		}
		return x
	}
	ttl, margin := max(h.shortTTL(), minKeyTTL), h.expiryMargin()
	// pastTTL waits until ttl (plus a margin for the store's clock) has
	// passed since committed, when the commit had returned (a store that
	// reads its clock on its server reads it before that, but maybe well
	// after the call began): time must pass, there is nothing to wait for.
	pastTTL := func(committed time.Time) { time.Sleep(time.Until(committed.Add(ttl + margin))) }

	t.Run("Recorded", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		before := time.Now()
		mustCommit(t, s, name, batch(putTTL("k", "v", longTTL), put("forever", "v")))
		after := time.Now()
		snap := mustLoad(t, s, name)
		e, _ := entryOf(snap, "k")
		// Same-machine clocks; a second of slack for the store's.
		if e.Expires.Before(before.Add(longTTL-time.Second)) || e.Expires.After(after.Add(longTTL+time.Second)) {
			t.Errorf("Load: k expires at %v, want about %v after the commit (%v)", e.Expires, longTTL, before)
		}
		if f, _ := entryOf(snap, "forever"); !f.Expires.IsZero() {
			t.Errorf("Load: a key put without TTL expires at %v, want never", f.Expires)
		}
		if g, err := s.Get(t.Context(), name, "k"); err != nil || !g.Expires.Equal(e.Expires) {
			t.Errorf("Get: k expires at %v (%v), Load says %v", g.Expires, err, e.Expires)
		}
		if mg, ok := s.(backend.MultiGetter); ok {
			if es, err := mg.GetMany(t.Context(), name, []string{"k"}); err != nil || len(es) != 1 || !es[0].Expires.Equal(e.Expires) {
				t.Errorf("GetMany: k = %+v (%v), want it to expire at %v as Load says", es, err, e.Expires)
			}
		}
	})

	t.Run("ExpireDeletes", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		x := expirer(t, s)
		before := time.Now()
		h1 := mustCommit(t, s, name, batch(putTTL("k", "v", ttl), put("j", "v"), putTTL("late", "v", longTTL)))
		committed := time.Now()
		if ev, _, _, err := x.Expire(t.Context(), name, ""); err != nil || ev.Revision != 0 {
			// A slow machine may take longer than ttl to get here: k
			// may be due then, but no sooner.
			if err != nil || ev.Revision != h1.Revision+1 || time.Since(before) < ttl-margin {
				t.Fatalf("Expire before any deadline = %+v, %v; want no commit", ev.Head, err)
			}
			t.Skipf("the machine took %v, more than the TTL of %v, to commit and call Expire", time.Since(before), ttl)
		}
		pastTTL(committed)
		ev, next, now, err := x.Expire(t.Context(), name, "")
		if err != nil {
			t.Fatalf("Expire: %v", err)
		}
		if ev.Revision != h1.Revision+1 || len(ev.Changes) != 1 || ev.Changes[0].Key != "k" || !ev.Changes[0].Deleted {
			t.Fatalf("Expire after k's TTL = %s; want a delete of k at revision %d", fmtEvent(ev), h1.Revision+1)
		}
		if now.IsZero() || next.Before(now.Add(longTTL/2)) {
			t.Errorf("Expire: next deadline %v, store clock %v; want late's deadline about %v ahead", next, now, longTTL)
		}
		wantEntries(t, "Load after k expired", mustLoad(t, s, name).Entries, entry("j", "v", h1.Revision), entry("late", "v", h1.Revision))
		if again, _, _, err := x.Expire(t.Context(), name, ""); err != nil || again.Revision != 0 {
			t.Errorf("a second Expire = %+v, %v; want nothing (expiring is idempotent)", again.Head, err)
		}
		if log, ok := s.(backend.ChangeLog); ok && h.Capabilities.ChangeLog {
			evs, err := log.ChangesSince(t.Context(), name, h1.Epoch, h1.Revision)
			if err != nil || len(evs) != 1 || evs[0].Revision != ev.Revision || !evs[0].Changes[0].Deleted {
				t.Errorf("the change log after the expiry = %s, %v; want the delete", fmtEvents(evs), err)
			}
		}
	})

	t.Run("RewriteKeepsRefreshExtends", func(t *testing.T) {
		t.Parallel()
		s := h.NewBackend(t)
		x := expirer(t, s)
		// The rewrite must come before the short TTL has passed, or the
		// store rightly expires all three keys first (a revision in
		// between): on a slow machine, try again with a fresh context.
		var name string
		var h2 backend.Head
		for attempt := 1; ; attempt++ {
			name = uniqueName(t)
			h1 := mustCommit(t, s, name, batch(putTTL("kept", "1", ttl), putTTL("refreshed", "1", ttl), putTTL("gone", "1", ttl)))
			h2 = mustCommit(t, s, name, batch(put("kept", "2"), putTTL("refreshed", "2", longTTL)))
			if h2.Revision == h1.Revision+1 {
				break
			}
			if attempt == 5 {
				t.Skipf("in %d attempts the store expired the keys before the rewrite that followed their commit: the machine is slower than the TTL of %v", attempt, ttl)
			}
		}
		pastTTL(time.Now())
		ev, _, _, err := x.Expire(t.Context(), name, "")
		if err != nil || len(ev.Changes) != 1 || ev.Changes[0].Key != "gone" {
			t.Fatalf("Expire = %s, %v; want only gone deleted (kept was rewritten without TTL, refreshed with a longer one)", fmtEvent(ev), err)
		}
		snap := mustLoad(t, s, name)
		wantEntries(t, "Load", snap.Entries, entry("kept", "2", h2.Revision), entry("refreshed", "2", h2.Revision))
		if e, _ := entryOf(snap, "kept"); !e.Expires.IsZero() {
			t.Errorf("kept, rewritten without TTL, expires at %v", e.Expires)
		}
	})

	t.Run("ConditionsSeeExpiredKeysReaped", func(t *testing.T) {
		t.Parallel()
		s, name := h.NewBackend(t), uniqueName(t)
		h1 := mustCommit(t, s, name, batch(putTTL("k", "v", ttl), put("j", "v")))
		pastTTL(time.Now())
		// A condition on k's revision fails now that k has expired, and
		// that refusal observed k gone: the store must have reaped it, or
		// a later read would find k again, after a commit saw it absent
		// (not linearizable).
		refused := batch(put("j", "w"))
		refused.Conditions = []backend.Condition{{Key: "k", Revision: h1.Revision}}
		if _, err := s.Commit(t.Context(), name, refused); !errors.Is(err, backend.ErrConflict) {
			t.Fatalf("a commit conditional on the revision of expired k: %v; want ErrConflict", err)
		}
		if e, err := s.Get(t.Context(), name, "k"); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Get(k) after a refusal that saw k expired = %+v, %v; want ErrNotFound", e, err)
		}
		snap := mustLoad(t, s, name)
		wantEntries(t, "Load after the refusal", snap.Entries, entry("j", "v", h1.Revision))
		if snap.Revision != h1.Revision+1 {
			t.Errorf("Load after the refusal: revision %d; want %d, the reap of k", snap.Revision, h1.Revision+1)
		}

		// A condition that k is absent holds once it has expired: the
		// reap goes first, a revision of its own, then the batch.
		name = uniqueName(t)
		h1 = mustCommit(t, s, name, batch(putTTL("k", "v", ttl)))
		pastTTL(time.Now())
		create := batch(put("k", "again"))
		create.Conditions = []backend.Condition{{Key: "k"}}
		h2, err := s.Commit(t.Context(), name, create)
		if err != nil {
			t.Fatalf("a commit conditional on expired k being absent: %v", err)
		}
		if h2.Revision != h1.Revision+2 {
			t.Errorf("the commit after k expired: revision %d; want %d (the reap at %d first)", h2.Revision, h1.Revision+2, h1.Revision+1)
		}
		wantEntries(t, "Load after the create", mustLoad(t, s, name).Entries, entry("k", "again", h2.Revision))
	})

	t.Run("WithoutTheWriter", func(t *testing.T) { testExpiryWithoutTheWriter(t, h) })

	t.Run("PublishedAndDeletedForEveryInstance", func(t *testing.T) {
		t.Parallel()
		name := uniqueName(t)
		cs := instances[string](t, h, name, 2, nil)
		ctx := t.Context()
		watch := cs[1].Watch(ctx)
		if err := cs[0].UpdateContext(ctx, "session", "alice", contextd.WithTTL(ttl)); err != nil {
			t.Fatal(err)
		}
		put := nextChange(t, watch)
		if put.Key != "session" || put.Deleted || put.Expires.IsZero() {
			t.Errorf("the put as watched by another instance: %+v; want session with its Expires", put)
		}
		// Nobody writes: an instance notices the deadline and the key
		// goes for both, by a revisioned delete that Watch sees.
		del := nextChange(t, watch)
		if del.Key != "session" || !del.Deleted || del.Revision != put.Revision+1 {
			t.Fatalf("after the TTL the watcher saw %+v; want the delete of session at revision %d", del, put.Revision+1)
		}
		waitRevision(t, del.Revision, cs...)
		for i, c := range cs {
			if _, ok, err := c.Get(ctx, "session"); ok || err != nil {
				t.Errorf("instance %d still has the expired key (%v)", i, err)
			}
		}
	})
}

// testExpiryWithoutTheWriter checks that an instance learns a key's
// deadline from the writer's event: when the writer is gone and nobody
// writes, the key still expires for the others.
func testExpiryWithoutTheWriter(t *testing.T, h Harness) {
	t.Parallel()
	name := uniqueName(t)
	cs := instances[string](t, h, name, 2, nil)
	ctx := t.Context()
	watch := cs[1].Watch(ctx)
	if err := cs[0].UpdateContext(ctx, "session", "alice", contextd.WithTTL(max(h.shortTTL(), minKeyTTL))); err != nil {
		t.Fatal(err)
	}
	if put := nextChange(t, watch); put.Key != "session" || put.Deleted {
		t.Fatalf("the watcher saw %+v; want the put of session", put)
	}
	if err := cs[0].Close(); err != nil {
		t.Fatal(err)
	}
	del := nextChange(t, watch)
	if del.Key != "session" || !del.Deleted {
		t.Fatalf("after the TTL, with the writer closed, the watcher saw %+v; want the delete of session", del)
	}
	if _, ok, err := cs[1].Get(ctx, "session"); ok || err != nil {
		t.Errorf("the remaining instance still has the expired key (%v)", err)
	}
}

// nextChange returns the next change of a watch that is not a Reset, failing
// the test after waitTimeout.
func nextChange[T any](t *testing.T, w <-chan contextd.Change[T]) contextd.Change[T] {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		select {
		case ch, ok := <-w:
			if !ok {
				t.Fatal("watch closed")
			}
			if ch.Reset {
				continue
			}
			return ch
		case <-timer.C:
			t.Fatalf("no change within %v", waitTimeout)
		}
	}
}

// testNoExpiry checks that a store without Expiry refuses a TTL rather than
// keep the key for good.
func testNoExpiry(t *testing.T, h Harness) {
	t.Parallel()
	s, name := h.NewBackend(t), uniqueName(t)
	if _, err := s.Commit(t.Context(), name, batch(putTTL("k", "v", time.Minute))); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Commit of a put with a TTL on a store without Expiry = %v; want an error matching errors.ErrUnsupported", err)
	}
	c := instances[string](t, h, name, 1, nil)[0]
	if err := c.UpdateContext(context.Background(), "k", "v", contextd.WithTTL(time.Minute)); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("UpdateContext WithTTL on a backend without Expiry = %v; want errors.ErrUnsupported", err)
	}
}
