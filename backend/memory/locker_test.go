package memory_test

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/locker"
)

func TestTryAcquireIsExclusiveUntilRelease(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	l, err := b.TryAcquire(ctx, "c", "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if l.Name != "c" || l.Key != "k" || l.TTL != time.Minute || !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(l.Token) {
		t.Fatalf("lease = %+v", l)
	}
	if _, err := b.TryAcquire(ctx, "c", "k", time.Minute); !errors.Is(err, locker.ErrNotAcquired) {
		t.Fatalf("second TryAcquire = %v, want ErrNotAcquired", err)
	}
	// Other keys and other contexts are separate locks.
	if _, err := b.TryAcquire(ctx, "c", "k2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryAcquire(ctx, "c2", "k", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx, l); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("second Release = %v, want ErrNotHeld", err)
	}
	if _, err := b.TryAcquire(ctx, "c", "k", time.Minute); err != nil {
		t.Fatalf("TryAcquire after Release: %v", err)
	}
}

func TestTryAcquireRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := b.TryAcquire(ctx, "c", "k", ttl); err == nil || errors.Is(err, locker.ErrNotAcquired) {
			t.Errorf("TryAcquire(ttl %v) = %v, want a validation error", ttl, err)
		}
	}
	if _, err := b.TryAcquire(ctx, "c", "", time.Second); err == nil || errors.Is(err, locker.ErrNotAcquired) {
		t.Errorf("TryAcquire(empty key) = %v, want a validation error", err)
	}
}

func TestOnlyTheTokenHolderReleasesOrExtends(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	l, err := b.TryAcquire(ctx, "c", "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	forged := l
	forged.Token = "0000000000000000"
	if err := b.Release(ctx, forged); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("Release with another token = %v, want ErrNotHeld", err)
	}
	if err := b.Extend(ctx, forged, time.Minute); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("Extend with another token = %v, want ErrNotHeld", err)
	}
	if err := b.Release(ctx, locker.Lease{}); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("Release of a zero lease = %v, want ErrNotHeld", err)
	}
	if err := b.Release(ctx, l); err != nil {
		t.Fatalf("Release by the holder: %v", err)
	}
}

// waitUntil polls cond until it holds or a deadline passes.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLockExpiresAfterTTL(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	const ttl = 30 * time.Millisecond
	start := time.Now()
	l, err := b.TryAcquire(ctx, "c", "k", ttl)
	if err != nil {
		t.Fatal(err)
	}
	var l2 locker.Lease
	waitUntil(t, 2*time.Second, "lock expiry", func() bool {
		l2, err = b.TryAcquire(ctx, "c", "k", time.Minute)
		return err == nil
	})
	if elapsed := time.Since(start); elapsed < ttl {
		t.Fatalf("lock taken over after %v, before its ttl %v", elapsed, ttl)
	}
	if err := b.Release(ctx, l); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("Release of the expired lease = %v, want ErrNotHeld", err)
	}
	if err := b.Extend(ctx, l, time.Minute); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("Extend of the expired lease = %v, want ErrNotHeld", err)
	}
	if err := b.Release(ctx, l2); err != nil {
		t.Fatalf("new holder cannot release: %v", err)
	}
}

func TestExpiredLeaseIsNotHeldEvenUnclaimed(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	const ttl = 30 * time.Millisecond
	l, err := b.TryAcquire(ctx, "c", "k", ttl)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody takes the lock over; the passing of the ttl alone must end
	// the holding. (Polling with Extend would keep renewing it.)
	time.Sleep(ttl + 10*time.Millisecond)
	if err := b.Extend(ctx, l, time.Minute); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("Extend after the ttl = %v, want ErrNotHeld", err)
	}
	if err := b.Release(ctx, l); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("Release after the ttl = %v, want ErrNotHeld", err)
	}
	bt := put("other", "v")
	bt.Leases = []locker.Lease{l}
	if _, err := b.Commit(ctx, "c", bt); !errors.Is(err, locker.ErrNotHeld) {
		t.Fatalf("Commit with the expired lease = %v, want ErrNotHeld", err)
	}
}

func TestExtendKeepsTheLock(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	l, err := b.TryAcquire(ctx, "c", "k", 30*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Extend(ctx, l, time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // past the first ttl, well within the extended one
	if _, err := b.TryAcquire(ctx, "c", "k", time.Minute); !errors.Is(err, locker.ErrNotAcquired) {
		t.Fatalf("TryAcquire after Extend = %v, want ErrNotAcquired", err)
	}
	if err := b.Extend(ctx, l, 0); err == nil {
		t.Fatal("Extend with ttl 0 succeeded")
	}
}

func TestFenceStrictlyIncreases(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	var last uint64
	check := func(l locker.Lease) {
		t.Helper()
		if l.Fence <= last {
			t.Fatalf("fence %d after %d, want strictly increasing", l.Fence, last)
		}
		last = l.Fence
	}
	for _, key := range []string{"a", "b", "a", "c"} {
		l, err := b.TryAcquire(ctx, "c", key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		check(l)
		if err := b.Release(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	// Losing the data does not reset fencing.
	mustCommit(t, b, "c", put("k", "v"))
	b.Wipe("c")
	l, err := b.TryAcquire(ctx, "c", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	check(l)
}

func TestConcurrentTryAcquireHasOneWinner(t *testing.T) {
	const n = 32
	b := newBackend(t, nil)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []locker.Lease
		refused int
	)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			l, err := b.TryAcquire(context.Background(), "c", "k", time.Minute)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners = append(winners, l)
			case errors.Is(err, locker.ErrNotAcquired):
				refused++
			default:
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(winners) != 1 || refused != n-1 {
		t.Fatalf("%d winners, %d refused; want 1 and %d", len(winners), refused, n-1)
	}
}

func TestWatchReleaseNotifiesOnRelease(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	la, _ := b.TryAcquire(ctx, "c", "a", time.Minute)
	lb, _ := b.TryAcquire(ctx, "c", "b", time.Minute)
	lz, _ := b.TryAcquire(ctx, "c", "z", time.Minute)

	notify, stop, err := b.WatchRelease(ctx, "c", "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if cap(notify) != 1 {
		t.Fatalf("notify has capacity %d, want 1", cap(notify))
	}

	if err := b.Release(ctx, lz); err != nil { // not watched
		t.Fatal(err)
	}
	select {
	case <-notify:
		t.Fatal("notified of a key not watched")
	default:
	}

	// Two releases before the reader looks: one pending notification,
	// and Release did not block.
	if err := b.Release(ctx, la); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx, lb); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notify:
	default:
		t.Fatal("no notification after release")
	}

	// After stop, releases no longer notify; stop is idempotent.
	stop()
	stop()
	la, _ = b.TryAcquire(ctx, "c", "a", time.Minute)
	if err := b.Release(ctx, la); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notify:
		t.Fatal("notified after stop")
	default:
	}
}

func TestWatchReleaseWakesAWaiter(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	l, err := b.TryAcquire(ctx, "c", "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// With a retry delay far beyond the test's patience, the waiter can
	// only succeed in time by being woken by the release.
	got := make(chan error, 1)
	go func() {
		_, err := locker.Acquire(ctx, b, "c", "k", time.Minute, locker.Policy{RetryDelay: time.Hour, MaxRetries: 1, Watcher: b})
		got <- err
	}()
	waitUntil(t, 5*time.Second, "waiter armed", func() bool { return b.ReleaseWatchers("c", "k") == 1 })
	if err := b.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Acquire = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken by the release")
	}
	waitUntil(t, 5*time.Second, "watcher disarmed", func() bool { return b.ReleaseWatchers("c", "k") == 0 })
}
