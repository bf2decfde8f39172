package conformance

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

// testFairLocks checks the FairLocks capability: waiters are served in the
// order they were first refused, nobody jumps the queue, a waiter that
// stops trying stops blocking after its Hold, and (with LockAwareCommit)
// commits wait in the same queues.
func testFairLocks(t *testing.T, h Harness) {
	fairOf := func(t *testing.T, b backend.Backend) locker.FairLocker {
		t.Helper()
		f, ok := b.(locker.FairLocker)
		if !ok {
			t.Fatalf("FairLocks is declared, but %T does not implement locker.FairLocker", b)
		}
		return f
	}
	waiter := func(hold time.Duration) locker.Waiter { return locker.NewWaiter(hold) }
	refused := func(t *testing.T, f locker.FairLocker, name, key string, w locker.Waiter, what string) {
		t.Helper()
		if l, err := f.TryAcquireQueued(t.Context(), name, key, longTTL, w); !errors.Is(err, locker.ErrNotAcquired) {
			t.Fatalf("%s: TryAcquireQueued = %+v, %v; want an error matching locker.ErrNotAcquired", what, l, err)
		}
	}
	acquired := func(t *testing.T, f locker.FairLocker, name, key string, w locker.Waiter, what string) locker.Lease {
		t.Helper()
		l, err := f.TryAcquireQueued(t.Context(), name, key, longTTL, w)
		if err != nil {
			t.Fatalf("%s: TryAcquireQueued = %v; want the lock", what, err)
		}
		return l
	}
	release := func(t *testing.T, l locker.Locker, lease locker.Lease) {
		t.Helper()
		if err := l.Release(t.Context(), lease); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}

	t.Run("ArrivalOrder", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		f1, f2 := fairOf(t, b1), fairOf(t, b2)
		held := mustAcquire(t, b1, name, "k", longTTL)
		ws := make([]locker.Waiter, 5)
		for i := range ws {
			ws[i] = waiter(longTTL)
			refused(t, []locker.FairLocker{f1, f2}[i%2], name, "k", ws[i], "a waiter while the lock is held")
		}
		release(t, b1, held)
		for i := range ws {
			// Everyone queued after ws[i], and a caller not queued at all,
			// is refused the free lock: it is ws[i]'s turn.
			for j := len(ws) - 1; j > i; j-- {
				refused(t, f2, name, "k", ws[j], "a waiter queued later than the first")
			}
			expectNotAcquired(t, b2, name, "k", "TryAcquire while waiters are queued (jumping the queue)")
			lease := acquired(t, []locker.FairLocker{f1, f2}[i%2], name, "k", ws[i], "the waiter first in the queue")
			release(t, b1, lease)
		}
		mustAcquire(t, b2, name, "k", longTTL) // the queue is empty again
	})

	t.Run("HoldRunsOut", func(t *testing.T) {
		t.Parallel()
		b, name := h.NewBackend(t), uniqueName(t)
		f := fairOf(t, b)
		held := mustAcquire(t, b, name, "k", longTTL)
		shortTTL, expiryMargin := h.shortTTL(), h.expiryMargin()
		gone, patient := waiter(shortTTL), waiter(longTTL)
		refused(t, f, name, "k", gone, "a waiter that will stop trying")
		queued := time.Now()
		refused(t, f, name, "k", patient, "a patient waiter")
		release(t, b, held)
		// The first waiter never tries again: after its hold it no longer
		// blocks the one behind it.
		time.Sleep(time.Until(queued.Add(shortTTL + expiryMargin)))
		acquired(t, f, name, "k", patient, "the waiter behind one whose hold ran out")
	})

	t.Run("Dequeue", func(t *testing.T) {
		t.Parallel()
		b, name := h.NewBackend(t), uniqueName(t)
		f := fairOf(t, b)
		held := mustAcquire(t, b, name, "k", longTTL)
		leaving, next := waiter(longTTL), waiter(longTTL)
		refused(t, f, name, "k", leaving, "a waiter that will give up")
		refused(t, f, name, "k", next, "the waiter behind it")
		release(t, b, held)
		var notify <-chan struct{}
		if h.Capabilities.ReleaseNotify {
			ch, stop, err := releaseWatcher(t, b).WatchRelease(t.Context(), name, "k")
			if err != nil {
				t.Fatalf("WatchRelease: %v", err)
			}
			defer stop()
			notify = ch
		}
		if err := f.Dequeue(t.Context(), name, leaving, "k"); err != nil {
			t.Fatalf("Dequeue: %v", err)
		}
		if notify != nil {
			select {
			case <-notify:
			case <-time.After(waitLimit):
				t.Fatal("the first waiter left the queue of a free lock, but the waiters behind it were not woken (ReleaseNotify)")
			}
		}
		acquired(t, f, name, "k", next, "the waiter behind one that left")
		if err := f.Dequeue(t.Context(), name, waiter(longTTL), "k", "other"); err != nil {
			t.Errorf("Dequeue of a waiter that is not queued = %v, want nil", err)
		}
	})

	t.Run("OneTicketForSeveralKeys", func(t *testing.T) {
		t.Parallel()
		b, name := h.NewBackend(t), uniqueName(t)
		f := fairOf(t, b)
		h1, h2 := mustAcquire(t, b, name, "k1", longTTL), mustAcquire(t, b, name, "k2", longTTL)
		early, late := waiter(longTTL), waiter(longTTL)
		refused(t, f, name, "k1", early, "the early waiter on k1")
		refused(t, f, name, "k2", late, "the late waiter on k2")
		refused(t, f, name, "k1", late, "the late waiter on k1")
		// The early waiter comes to k2 after the late one, yet keeps the
		// place its first refusal gave it: otherwise each would wait for
		// the other on one of the keys.
		refused(t, f, name, "k2", early, "the early waiter on k2")
		release(t, b, h1)
		release(t, b, h2)
		refused(t, f, name, "k2", late, "the late waiter on k2, queued before the early one came")
		refused(t, f, name, "k1", late, "the late waiter on k1")
		e1 := acquired(t, f, name, "k1", early, "the early waiter on k1")
		e2 := acquired(t, f, name, "k2", early, "the early waiter on k2")
		release(t, b, e1)
		release(t, b, e2)
		acquired(t, f, name, "k1", late, "the late waiter on k1 after the early one")
		acquired(t, f, name, "k2", late, "the late waiter on k2 after the early one")
	})

	if !h.Capabilities.LockAwareCommit {
		return
	}
	t.Run("CommitsWaitInTheQueue", func(t *testing.T) {
		t.Parallel()
		b, other, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		mustCommit(t, b, name, batch(put("k", "0")))
		held := mustAcquire(t, b, name, "k", longTTL)
		w := waiter(longTTL)
		queued := batch(put("k", "queued"))
		queued.Waiter = &w
		if _, err := other.Commit(t.Context(), name, queued); !errors.Is(err, backend.ErrLocked) {
			t.Fatalf("Commit with a waiter to a locked key = %v, want ErrLocked", err)
		}
		release(t, b, held)
		before := mustLoad(t, b, name)
		if _, err := b.Commit(t.Context(), name, batch(put("k", "newcomer"))); !errors.Is(err, backend.ErrLocked) {
			t.Fatalf("Commit without a waiter while a waiter is queued = %v, want ErrLocked (it jumped the queue)", err)
		}
		expectNotAcquired(t, b, name, "k", "TryAcquire while a commit's waiter is queued")
		assertUnchanged(t, b, name, before, "a Commit refused for a queued waiter")
		mustCommit(t, other, name, queued)
		mustCommit(t, b, name, batch(put("k", "newcomer"))) // the queue is empty again
	})

	t.Run("ConflictKeepsThePlace", func(t *testing.T) {
		t.Parallel()
		b, other, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		head := mustCommit(t, b, name, batch(put("k", "0")))
		w := waiter(longTTL)
		stale := batch(put("k", "1"))
		stale.Conditions = []backend.Condition{{Key: "k", Revision: head.Revision + 5}}
		stale.Waiter = &w
		if _, err := other.Commit(t.Context(), name, stale); !errors.Is(err, backend.ErrConflict) {
			t.Fatalf("Commit with a failing condition = %v, want ErrConflict", err)
		}
		// The loser of the race keeps its place for the retry: a newcomer
		// waits.
		if _, err := b.Commit(t.Context(), name, batch(put("k", "newcomer"))); !errors.Is(err, backend.ErrLocked) {
			t.Fatalf("Commit without a waiter after a waiter's conflict = %v, want ErrLocked", err)
		}
		retry := batch(put("k", "1"))
		retry.Conditions = []backend.Condition{{Key: "k", Revision: head.Revision}}
		retry.Waiter = &w
		mustCommit(t, other, name, retry)
		mustCommit(t, b, name, batch(put("k", "newcomer")))
	})

	t.Run("ReleaseGoesToTheQueue", func(t *testing.T) {
		t.Parallel()
		b, name := h.NewBackend(t), uniqueName(t)
		f := fairOf(t, b)
		held := mustAcquire(t, b, name, "k", longTTL)
		w := waiter(longTTL)
		refused(t, f, name, "k", w, "a waiter for the lock")
		release(t, b, held)
		ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
		defer cancel()
		if _, err := b.Commit(ctx, name, batch(put("k", "x"))); !errors.Is(err, backend.ErrLocked) {
			t.Fatalf("Commit of a free key with a lock waiter queued = %v, want ErrLocked", err)
		}
		acquired(t, f, name, "k", w, "the lock waiter")
	})
}

// testTurns checks a backend that implements locker.TurnWatcher: a release
// wakes only the waiter first in the key's queue (and every WatchRelease
// watcher), and a waiter whose turn notification never comes — the
// waiter named before it died without leaving — still gets the lock by
// retrying.
func testTurns(t *testing.T, h Harness) {
	turns := func(t *testing.T, b backend.Backend) (locker.TurnWatcher, locker.FairLocker) {
		t.Helper()
		tw, ok := b.(locker.TurnWatcher)
		if !ok {
			t.Skipf("%T does not watch turns (locker.TurnWatcher)", b)
		}
		return tw, b.(locker.FairLocker)
	}
	await := func(t *testing.T, ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(waitLimit):
			t.Fatalf("%s: no notification within %v", what, waitLimit)
		}
	}
	watchTurn := func(t *testing.T, tw locker.TurnWatcher, name string, w locker.Waiter, keys ...string) <-chan struct{} {
		t.Helper()
		ch, stop, err := tw.WatchTurn(t.Context(), name, w, keys...)
		if errors.Is(err, errors.ErrUnsupported) {
			t.Skipf("WatchTurn: %v (waiters fall back to WatchRelease)", err)
		}
		if err != nil {
			t.Fatalf("WatchTurn: %v", err)
		}
		t.Cleanup(stop)
		return ch
	}

	t.Run("OnlyTheHeadWakes", func(t *testing.T) {
		t.Parallel()
		b, name := h.NewBackend(t), uniqueName(t)
		tw, f := turns(t, b)
		held := mustAcquire(t, b, name, "k", longTTL)
		marker := mustAcquire(t, b, name, "marker", longTTL)
		first, second := locker.NewWaiter(longTTL), locker.NewWaiter(longTTL)
		for _, w := range []locker.Waiter{first, second} {
			if _, err := f.TryAcquireQueued(t.Context(), name, "k", longTTL, w); !errors.Is(err, locker.ErrNotAcquired) {
				t.Fatalf("TryAcquireQueued of a held lock = %v, want ErrNotAcquired", err)
			}
		}
		n1, n2 := watchTurn(t, tw, name, first, "k"), watchTurn(t, tw, name, second, "k")
		all, stop, err := releaseWatcher(t, b).WatchRelease(t.Context(), name, "k")
		if err != nil {
			t.Fatalf("WatchRelease: %v", err)
		}
		defer stop()
		markers, stopMarkers, err := releaseWatcher(t, b).WatchRelease(t.Context(), name, "marker")
		if err != nil {
			t.Fatalf("WatchRelease: %v", err)
		}
		defer stopMarkers()
		if err := b.Release(t.Context(), held); err != nil {
			t.Fatalf("Release: %v", err)
		}
		// The marker's release is delivered after k's: once it is in,
		// every notification of k's release has been sent.
		if err := b.Release(t.Context(), marker); err != nil {
			t.Fatalf("Release: %v", err)
		}
		await(t, markers, "WatchRelease of the marker key")
		await(t, n1, "WatchTurn of the waiter first in the queue, after a release")
		await(t, all, "WatchRelease of the key, after a release")
		select {
		case <-n2:
			t.Fatal("a release woke the second waiter of the queue (WatchTurn), whose turn it is not")
		default:
		}
		lease, err := f.TryAcquireQueued(t.Context(), name, "k", longTTL, first)
		if err != nil {
			t.Fatalf("TryAcquireQueued of the first waiter = %v, want the lock", err)
		}
		if err := b.Release(t.Context(), lease); err != nil {
			t.Fatalf("Release: %v", err)
		}
		await(t, n2, "WatchTurn of the second waiter, after the first released the lock")
	})

	t.Run("CommitNamesItsRevision", func(t *testing.T) {
		t.Parallel()
		if !h.Capabilities.LockAwareCommit {
			t.Skip("commits do not hand turns on without LockAwareCommit")
		}
		b, name := h.NewBackend(t), uniqueName(t)
		_, f := turns(t, b)
		tf, ok := b.(backend.TurnFollower)
		if !ok {
			t.Skipf("%T does not name the commit that hands a turn on (backend.TurnFollower)", b)
		}
		held := mustAcquire(t, b, name, "k", longTTL)
		first, second := locker.NewWaiter(longTTL), locker.NewWaiter(longTTL)
		for _, w := range []locker.Waiter{first, second} {
			if _, err := f.TryAcquireQueued(t.Context(), name, "k", longTTL, w); !errors.Is(err, locker.ErrNotAcquired) {
				t.Fatalf("TryAcquireQueued of a held lock = %v, want ErrNotAcquired", err)
			}
		}
		// after is read only once the notification it precedes is in.
		var revs [2]atomic.Uint64
		watch := func(i int, w locker.Waiter) <-chan struct{} {
			ch, stop, err := tf.WatchTurnAfter(t.Context(), name, w, func(rev uint64) { revs[i].Store(rev) }, "k")
			if errors.Is(err, errors.ErrUnsupported) {
				t.Skipf("WatchTurnAfter: %v", err)
			}
			if err != nil {
				t.Fatalf("WatchTurnAfter: %v", err)
			}
			t.Cleanup(stop)
			return ch
		}
		n1, n2 := watch(0, first), watch(1, second)
		if err := b.Release(t.Context(), held); err != nil {
			t.Fatalf("Release: %v", err)
		}
		await(t, n1, "WatchTurnAfter of the waiter first in the queue, after a release")
		if rev := revs[0].Load(); rev != 0 {
			t.Fatalf("a lock release handed the turn on naming revision %d; want none (no commit)", rev)
		}
		served := batch(put("k", "first"))
		served.Waiter = &first
		head := mustCommit(t, b, name, served)
		await(t, n2, "WatchTurnAfter of the second waiter, after the first committed")
		if rev := revs[1].Load(); rev != head.Revision {
			t.Fatalf("the commit that handed the turn on named revision %d; want its own, %d", rev, head.Revision)
		}
	})

	t.Run("LostTurnCostsARetry", func(t *testing.T) {
		t.Parallel()
		b, name := h.NewBackend(t), uniqueName(t)
		tw, f := turns(t, b)
		held := mustAcquire(t, b, name, "k", longTTL)
		// ghost is queued first and never tries again: the release names
		// it, so the waiter behind it is not notified, and must find its
		// turn by retrying once ghost's hold has run out.
		ghost := locker.NewWaiter(h.shortTTL())
		if _, err := f.TryAcquireQueued(t.Context(), name, "k", longTTL, ghost); !errors.Is(err, locker.ErrNotAcquired) {
			t.Fatalf("TryAcquireQueued of a held lock = %v, want ErrNotAcquired", err)
		}
		delay := 20 * time.Millisecond
		res := goAcquire(t, t.Context(), b, name, "k", locker.Policy{
			RetryDelay: delay, MaxRetries: int(2 * waitLimit / delay),
			Watcher: tw.(locker.ReleaseWatcher), Queue: f,
		})
		if err := b.Release(t.Context(), held); err != nil {
			t.Fatalf("Release: %v", err)
		}
		r := awaitAcquire(t, res, 2*waitLimit, "a waiter behind one that died without leaving")
		if r.err != nil {
			t.Fatalf("locker.Acquire behind a waiter that died = %v, want the lock", r.err)
		}
	})
}
