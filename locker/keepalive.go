package locker

import (
	"context"
	"errors"
	"sync"
	"time"
)

// KeepAlive renews lease every TTL/3 in a goroutine of its own, until stop
// is called.
//
// If a renewal fails with ErrNotHeld, or renewals keep failing (the backend
// is unreachable) until the lease must be presumed expired, KeepAlive calls
// lost once with the cause and stops renewing: from then on the holder must
// assume someone else may hold the lock. Transient failures are retried
// every TTL/10 meanwhile.
//
// stop ends the renewals and waits for the goroutine to exit; it is
// idempotent and does not release the lock.
func KeepAlive(l Locker, lease Lease, lost func(error)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		keepAlive(ctx, l, lease, lost)
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}
}

func keepAlive(ctx context.Context, l Locker, lease Lease, lost func(error)) {
	ttl := lease.TTL
	if ttl <= 0 {
		return
	}
	// The lease was taken just before KeepAlive was called; counting its
	// life from now would be optimistic, so count from a third earlier.
	expires := time.Now().Add(ttl - ttl/3)
	wait := ttl / 3
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		started := time.Now()
		attemptCtx, cancel := context.WithDeadline(ctx, expires)
		err := l.Extend(attemptCtx, lease, ttl)
		cancel()
		switch {
		case err == nil:
			expires = started.Add(ttl)
			wait = ttl / 3
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrNotHeld) || !time.Now().Before(expires):
			lost(err)
			return
		default:
			wait = min(ttl/10, time.Until(expires))
		}
		timer.Reset(wait)
	}
}
