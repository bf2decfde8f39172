package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestExpiryWakesWatchers checks that a lock that expires (nobody releases
// it, nothing is written) wakes its watchers too: the poller looks again
// when a watched lock's expiry passes.
func TestExpiryWakesWatchers(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "w.db")
	holder, waiter := openBackend(t, path, nil), openBackend(t, path, nil)
	if _, err := holder.TryAcquire(ctx, "c", "k", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	notify, stop, err := waiter.WatchRelease(ctx, "c", "k")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	select {
	case <-notify:
	case <-time.After(waitLimit):
		t.Fatal("no notification after the watched lock expired")
	}
	if _, err := waiter.TryAcquire(ctx, "c", "k", time.Minute); err != nil {
		t.Fatalf("TryAcquire after the expiry notification: %v", err)
	}
}

// TestLockLivesItsWholeTTL checks expiry in whole milliseconds never cuts
// a lock short: it is held until its TTL has passed on the wall clock.
func TestLockLivesItsWholeTTL(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "w.db")
	b := openBackend(t, path, nil)
	const ttl = 20 * time.Millisecond
	for i := range 5 {
		key := string(rune('a' + i))
		start := time.Now()
		if _, err := b.TryAcquire(ctx, "c", key, ttl); err != nil {
			t.Fatal(err)
		}
		for {
			_, err := b.TryAcquire(ctx, "c", key, ttl)
			if err == nil {
				if time.Since(start) < ttl {
					t.Fatalf("lock with TTL %v taken again after %v", ttl, time.Since(start))
				}
				break
			}
			if time.Since(start) > waitLimit {
				t.Fatalf("lock with TTL %v still held after %v", ttl, waitLimit)
			}
		}
	}
}
