package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

func testLocker(t *testing.T, h Harness) {
	shortTTL, expiryMargin := h.shortTTL(), h.expiryMargin()
	t.Run("TryAcquireFree", func(t *testing.T) {
		t.Parallel()
		l, name := h.NewBackend(t), uniqueName(t)
		lease, err := l.TryAcquire(t.Context(), name, "k", longTTL)
		if err != nil {
			t.Fatalf("TryAcquire of a free lock: %v", err)
		}
		if lease.Name != name || lease.Key != "k" || lease.Token == "" || lease.Fence == 0 || lease.TTL != longTTL {
			t.Errorf("TryAcquire of a free lock = %+v; want Name %q, Key %q, a non-empty Token, Fence > 0, TTL %v", lease, name, "k", longTTL)
		}
	})

	t.Run("HeldByAnother", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		mustAcquire(t, b1, name, "k", longTTL)
		// Many instances share one backend value, so a second TryAcquire
		// through the same backend is another holder too.
		expectNotAcquired(t, b1, name, "k", "a second TryAcquire through the same backend")
		expectNotAcquired(t, b2, name, "k", "TryAcquire through another backend")
	})

	t.Run("OneWinner", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		lockers := []locker.Locker{b1, b2}
		start := make(chan struct{})
		errs := make([]error, contenders)
		var wg sync.WaitGroup
		for i := range contenders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = lockers[i%2].TryAcquire(t.Context(), name, "k", longTTL)
			}()
		}
		close(start)
		wg.Wait()
		winners := 0
		for i, err := range errs {
			switch {
			case err == nil:
				winners++
			case !errors.Is(err, locker.ErrNotAcquired):
				t.Errorf("contender %d: TryAcquire = %v, want nil or an error matching locker.ErrNotAcquired", i, err)
			}
		}
		if winners != 1 {
			t.Errorf("%d of %d concurrent TryAcquire calls on one free lock succeeded, want exactly 1", winners, contenders)
		}
	})

	t.Run("Expiry", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		ctx := t.Context()
		start := time.Now()
		old := mustAcquire(t, b1, name, "k", shortTTL)
		var lease locker.Lease
		for {
			var err error
			lease, err = b2.TryAcquire(ctx, name, "k", longTTL)
			if err == nil {
				if time.Now().Before(start.Add(shortTTL)) {
					t.Errorf("TryAcquire succeeded %v after the lock was taken with TTL %v; want ErrNotAcquired until the TTL passes", time.Since(start), shortTTL)
				}
				break
			}
			if !errors.Is(err, locker.ErrNotAcquired) {
				t.Fatalf("TryAcquire of a lock that is held or expired: %v, want nil or an error matching locker.ErrNotAcquired", err)
			}
			if time.Since(start) > shortTTL+waitLimit {
				t.Fatalf("a lock taken with TTL %v is still held after %v", shortTTL, time.Since(start))
			}
			time.Sleep(pollInterval) // waiting for the TTL to pass
		}
		if lease.Fence <= old.Fence {
			t.Errorf("fence after the expiry is %d, want more than the expired lease's %d", lease.Fence, old.Fence)
		}
		if err := b1.Release(ctx, old); !errors.Is(err, locker.ErrNotHeld) {
			t.Errorf("Release of an expired lease whose lock was taken again = %v, want an error matching locker.ErrNotHeld", err)
		}
		if err := b1.Extend(ctx, old, longTTL); !errors.Is(err, locker.ErrNotHeld) {
			t.Errorf("Extend of an expired lease whose lock was taken again = %v, want an error matching locker.ErrNotHeld", err)
		}
		expectNotAcquired(t, b1, name, "k", "TryAcquire after the old holder's Release and Extend failed")
		if err := b2.Release(ctx, lease); err != nil {
			t.Errorf("Release by the new holder: %v", err)
		}
	})

	t.Run("ExpiredLease", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		ctx := t.Context()
		lease := mustAcquire(t, b1, name, "k", shortTTL)
		time.Sleep(shortTTL + expiryMargin) // the TTL must pass
		if err := b1.Extend(ctx, lease, longTTL); !errors.Is(err, locker.ErrNotHeld) {
			t.Errorf("Extend after the lease's TTL (%v) passed = %v, want an error matching locker.ErrNotHeld", shortTTL, err)
		}
		if err := b1.Release(ctx, lease); !errors.Is(err, locker.ErrNotHeld) {
			t.Errorf("Release after the lease's TTL (%v) passed = %v, want an error matching locker.ErrNotHeld", shortTTL, err)
		}
		mustAcquire(t, b2, name, "k", longTTL)
	})

	t.Run("OnlyHolder", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		ctx := t.Context()
		lease := mustAcquire(t, b1, name, "k", longTTL)
		for _, token := range []string{lease.Token + "x", ""} {
			wrong := lease
			wrong.Token = token
			if err := b2.Release(ctx, wrong); !errors.Is(err, locker.ErrNotHeld) {
				t.Errorf("Release with token %q of a lock held with token %q = %v, want an error matching locker.ErrNotHeld", token, lease.Token, err)
			}
			if err := b2.Extend(ctx, wrong, longTTL); !errors.Is(err, locker.ErrNotHeld) {
				t.Errorf("Extend with token %q of a lock held with token %q = %v, want an error matching locker.ErrNotHeld", token, lease.Token, err)
			}
		}
		expectNotAcquired(t, b2, name, "k", "TryAcquire after Release and Extend with wrong tokens")
		if err := b1.Release(ctx, lease); err != nil {
			t.Errorf("Release by the holder after others' attempts: %v", err)
		}
	})

	t.Run("ReleaseThenAcquire", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		ctx := t.Context()
		first := mustAcquire(t, b1, name, "k", longTTL)
		if err := b1.Release(ctx, first); err != nil {
			t.Fatalf("Release by the holder: %v", err)
		}
		second := mustAcquire(t, b2, name, "k", longTTL)
		if err := b1.Release(ctx, first); !errors.Is(err, locker.ErrNotHeld) {
			t.Errorf("second Release of a lease (the lock now has another holder) = %v, want an error matching locker.ErrNotHeld", err)
		}
		expectNotAcquired(t, b1, name, "k", "TryAcquire after a stale lease's Release failed")
		if err := b2.Release(ctx, second); err != nil {
			t.Fatalf("Release by the second holder: %v", err)
		}
		if err := b2.Release(ctx, second); !errors.Is(err, locker.ErrNotHeld) {
			t.Errorf("second Release of a released lock nobody holds = %v, want an error matching locker.ErrNotHeld", err)
		}
	})

	t.Run("Extend", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		ctx := t.Context()
		// Extend must reach the store within the short TTL, which a loaded
		// machine does not promise: an attempt whose Extend returned only
		// after the TTL proves nothing and is made again.
		var (
			lease    locker.Lease
			acquired time.Time
		)
		for attempt := 1; ; attempt++ {
			start := time.Now()
			lease = mustAcquire(t, b1, name, "k", shortTTL)
			acquired = time.Now()
			err := b1.Extend(ctx, lease, longTTL)
			if err == nil {
				break
			}
			if time.Since(start) < shortTTL {
				t.Fatalf("Extend of a live lease %v after taking it with TTL %v: %v", time.Since(acquired), shortTTL, err)
			}
			if attempt == 20 {
				t.Fatalf("Extend of a lease taken with TTL %v returned after the TTL in 20 attempts; last: %v", shortTTL, err)
			}
			t.Logf("attempt %d: Extend returned %v after the lock was taken with TTL %v (%v); again", attempt, time.Since(start), shortTTL, err)
			_ = b1.Release(ctx, lease)
		}
		time.Sleep(time.Until(acquired.Add(shortTTL + expiryMargin))) // past the original TTL
		expectNotAcquired(t, b2, name, "k", "TryAcquire after the original TTL of an extended lock")
		if err := b1.Release(ctx, lease); err != nil {
			t.Errorf("Release of an extended lock after its original TTL = %v, want nil", err)
		}
	})

	t.Run("Fences", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		ctx := t.Context()
		var last uint64
		acquire := func(l locker.Locker, key, what string) locker.Lease {
			t.Helper()
			lease := mustAcquire(t, l, name, key, longTTL)
			if lease.Fence <= last {
				t.Errorf("%s: fence %d, want more than the previous acquisition's %d", what, lease.Fence, last)
			}
			last = lease.Fence
			return lease
		}
		release := func(l locker.Locker, lease locker.Lease) {
			t.Helper()
			if err := l.Release(ctx, lease); err != nil {
				t.Fatalf("Release of %q: %v", lease.Key, err)
			}
		}
		a := acquire(b1, "a", "first acquisition of a")
		release(b1, a)
		a = acquire(b2, "a", "second acquisition of a, through another backend")
		b := acquire(b1, "b", "acquisition of b while a is held")
		acquire(b2, "c", "acquisition of c")
		release(b1, b)
		acquire(b2, "b", "second acquisition of b")
		release(b2, a)
		acquire(b1, "a", "third acquisition of a")
	})

	t.Run("ConcurrentFences", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		lockers := []locker.Locker{b1, b2}
		before := mustAcquire(t, b1, name, "before", longTTL)
		leases := make([]locker.Lease, contenders)
		errs := make([]error, contenders)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range contenders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				leases[i], errs[i] = lockers[i%2].TryAcquire(t.Context(), name, fmt.Sprint("k", i), longTTL)
			}()
		}
		close(start)
		wg.Wait()
		after := mustAcquire(t, b2, name, "after", longTTL)
		seen := make(map[uint64]int)
		for i, err := range errs {
			if err != nil {
				t.Errorf("TryAcquire of free key k%d: %v", i, err)
				continue
			}
			f := leases[i].Fence
			if j, dup := seen[f]; dup {
				t.Errorf("concurrent acquisitions of k%d and k%d got the same fence %d; fences must strictly increase with every acquisition", j, i, f)
			}
			seen[f] = i
			if f <= before.Fence || f >= after.Fence {
				t.Errorf("fence of k%d is %d, want between %d (taken before) and %d (taken after), exclusive", i, f, before.Fence, after.Fence)
			}
		}
	})

	t.Run("Independent", func(t *testing.T) {
		t.Parallel()
		b1, b2 := h.NewBackend(t), h.NewBackend(t)
		name, other := uniqueName(t), uniqueName(t)
		ctx := t.Context()
		mustAcquire(t, b1, name, "k", longTTL)
		sameKey := mustAcquire(t, b2, other, "k", longTTL)
		otherKey := mustAcquire(t, b2, name, "k2", longTTL)
		expectNotAcquired(t, b2, name, "k", "TryAcquire of the held lock")
		for _, lease := range []locker.Lease{sameKey, otherKey} {
			if err := b2.Release(ctx, lease); err != nil {
				t.Fatalf("Release of %q in %q: %v", lease.Key, lease.Name, err)
			}
		}
		expectNotAcquired(t, b2, name, "k", "TryAcquire after releasing the same key of another context and another key of this one")
	})

	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		cancelled, cancel := context.WithCancel(t.Context())
		cancel()
		if lease, err := b1.TryAcquire(cancelled, name, "k", longTTL); !errors.Is(err, context.Canceled) {
			t.Errorf("TryAcquire with a cancelled ctx = %+v, %v; want an error matching context.Canceled", lease, err)
		}
		lease := mustAcquire(t, b2, name, "k", longTTL)
		if err := b2.Extend(cancelled, lease, longTTL); !errors.Is(err, context.Canceled) {
			t.Errorf("Extend with a cancelled ctx = %v, want an error matching context.Canceled", err)
		}
		if err := b2.Release(cancelled, lease); !errors.Is(err, context.Canceled) {
			t.Errorf("Release with a cancelled ctx = %v, want an error matching context.Canceled", err)
		}
		expectNotAcquired(t, b1, name, "k", "TryAcquire after a Release with a cancelled ctx")
	})

	t.Run("AcquireWaitsForRelease", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		holder := mustAcquire(t, b1, name, "k", longTTL)
		waiter := newAttemptLocker(b2)
		res := goAcquire(t, t.Context(), waiter, name, "k",
			locker.Policy{RetryDelay: 5 * time.Millisecond, MaxRetries: int(waitLimit / (5 * time.Millisecond))})
		waiter.awaitFailures(t, 1)
		if err := b1.Release(t.Context(), holder); err != nil {
			t.Fatalf("Release by the holder: %v", err)
		}
		r := awaitAcquire(t, res, waitLimit, "locker.Acquire waiting for a released lock")
		if r.err != nil {
			t.Fatalf("locker.Acquire of a lock released while it waited: %v", r.err)
		}
		if r.lease.Fence <= holder.Fence {
			t.Errorf("locker.Acquire got fence %d, want more than the previous holder's %d", r.lease.Fence, holder.Fence)
		}
		expectNotAcquired(t, b1, name, "k", "TryAcquire after locker.Acquire took the lock")
	})

	t.Run("AcquireGivesUp", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		mustAcquire(t, b1, name, "k", longTTL)
		waiter := newAttemptLocker(b2)
		const retries = 3
		lease, err := locker.Acquire(t.Context(), waiter, name, "k", longTTL, locker.Policy{RetryDelay: time.Millisecond, MaxRetries: retries})
		if !errors.Is(err, locker.ErrNotAcquired) {
			t.Errorf("locker.Acquire of a held lock with MaxRetries %d = %+v, %v; want an error matching locker.ErrNotAcquired", retries, lease, err)
		}
		if n := waiter.attempts.Load(); n != retries+1 {
			t.Errorf("locker.Acquire with MaxRetries %d made %d attempts, want %d", retries, n, retries+1)
		}
	})

	t.Run("AcquireCancelled", func(t *testing.T) {
		t.Parallel()
		b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		mustAcquire(t, b1, name, "k", longTTL)
		waiter := newAttemptLocker(b2)
		ctx, cancel := context.WithCancel(t.Context())
		res := goAcquire(t, ctx, waiter, name, "k", locker.Policy{RetryDelay: 10 * time.Second, MaxRetries: 5})
		waiter.awaitFailures(t, 1)
		cancel()
		r := awaitAcquire(t, res, waitLimit, "locker.Acquire after its ctx was cancelled")
		if !errors.Is(r.err, context.Canceled) || !errors.Is(r.err, locker.ErrNotAcquired) {
			t.Errorf("locker.Acquire whose ctx was cancelled while waiting = %+v, %v; want an error matching context.Canceled and locker.ErrNotAcquired", r.lease, r.err)
		}
	})

	if h.Capabilities.ReleaseNotify {
		t.Run("WatchRelease", func(t *testing.T) {
			t.Parallel()
			b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
			w := releaseWatcher(t, b2)
			ctx := t.Context()
			l1 := mustAcquire(t, b1, name, "k1", longTTL)
			l2 := mustAcquire(t, b1, name, "k2", longTTL)
			notify, stop, err := w.WatchRelease(ctx, name, "k1", "k2")
			if err != nil {
				t.Fatalf("WatchRelease: %v", err)
			}
			defer stop()
			for _, lease := range []locker.Lease{l2, l1} {
				if err := b1.Release(ctx, lease); err != nil {
					t.Fatalf("Release of %q: %v", lease.Key, err)
				}
				select {
				case <-notify:
				case <-time.After(waitLimit):
					t.Fatalf("no notification %v after releasing watched lock %q through another backend", waitLimit, lease.Key)
				}
			}
			stop()
			stop() // idempotent
		})

		t.Run("AcquireWokenByRelease", func(t *testing.T) {
			t.Parallel()
			b1, b2, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
			holder := mustAcquire(t, b1, name, "k", longTTL)
			waiter := newAttemptLocker(b2)
			// Every pause lasts at least RetryDelay/2, so a return well
			// before that must come from the notification.
			const delay, within = 10 * time.Second, 3 * time.Second
			res := goAcquire(t, t.Context(), waiter, name, "k",
				locker.Policy{RetryDelay: delay, MaxRetries: 1, Watcher: releaseWatcher(t, b2)})
			// The first attempt, then the one right after arming the watch.
			waiter.awaitFailures(t, 2)
			if err := b1.Release(t.Context(), holder); err != nil {
				t.Fatalf("Release by the holder: %v", err)
			}
			r := awaitAcquire(t, res, within, fmt.Sprintf("locker.Acquire with RetryDelay %v and a Watcher, after a release", delay))
			if r.err != nil {
				t.Errorf("locker.Acquire woken by a release: %v, want the lock", r.err)
			}
		})
	}
}

func mustAcquire(t *testing.T, l locker.Locker, name, key string, ttl time.Duration) locker.Lease {
	t.Helper()
	lease, err := l.TryAcquire(t.Context(), name, key, ttl)
	if err != nil {
		t.Fatalf("TryAcquire(%q) of a free lock: %v", key, err)
	}
	return lease
}

// expectNotAcquired checks that the lock on key is held by someone else.
func expectNotAcquired(t *testing.T, l locker.Locker, name, key, what string) {
	t.Helper()
	if lease, err := l.TryAcquire(t.Context(), name, key, longTTL); !errors.Is(err, locker.ErrNotAcquired) {
		t.Errorf("%s: TryAcquire(%q) = %+v, %v; want an error matching locker.ErrNotAcquired (the lock is held)", what, key, lease, err)
	}
}

func releaseWatcher(t *testing.T, b backend.Backend) locker.ReleaseWatcher {
	t.Helper()
	w, ok := b.(locker.ReleaseWatcher)
	if !ok {
		t.Fatalf("ReleaseNotify is declared but the backend (%T) does not implement locker.ReleaseWatcher", b)
	}
	return w
}

// attemptLocker counts the TryAcquire calls made through it and signals
// each failed one, so a test can wait until locker.Acquire really waits.
type attemptLocker struct {
	locker.Locker
	attempts atomic.Int64
	failed   chan struct{}
}

func newAttemptLocker(l locker.Locker) *attemptLocker {
	return &attemptLocker{Locker: l, failed: make(chan struct{}, 64)}
}

func (l *attemptLocker) TryAcquire(ctx context.Context, name, key string, ttl time.Duration) (locker.Lease, error) {
	lease, err := l.Locker.TryAcquire(ctx, name, key, ttl)
	l.attempts.Add(1)
	if errors.Is(err, locker.ErrNotAcquired) {
		select {
		case l.failed <- struct{}{}:
		default:
		}
	}
	return lease, err
}

// awaitFailures waits until n attempts have failed with ErrNotAcquired.
func (l *attemptLocker) awaitFailures(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(waitLimit)
	for i := range n {
		select {
		case <-l.failed:
		case <-timeout:
			t.Fatalf("locker.Acquire made %d failed attempts on a held lock within %v, want %d", i, waitLimit, n)
		}
	}
}

type acquireResult struct {
	lease locker.Lease
	err   error
}

// goAcquire runs locker.Acquire in a goroutine that is cancelled and waited
// for when the test ends.
func goAcquire(t *testing.T, ctx context.Context, l locker.Locker, name, key string, p locker.Policy) <-chan acquireResult {
	ctx, cancel := context.WithCancel(ctx)
	res := make(chan acquireResult, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lease, err := locker.Acquire(ctx, l, name, key, longTTL, p)
		res <- acquireResult{lease, err}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return res
}

func awaitAcquire(t *testing.T, res <-chan acquireResult, within time.Duration, what string) acquireResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(within):
		t.Fatalf("%s: still waiting after %v", what, within)
		return acquireResult{}
	}
}
