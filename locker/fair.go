package locker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Waiter is one waiting call as a fair locker queues it: a caller that was
// refused a lock (or, on a store with lock-aware commits, a write) keeps a
// place in the key's queue, and the lock goes to the waiter queued first.
type Waiter struct {
	// ID identifies the waiting call: random and unique.
	ID string
	// Hold is how long the waiter keeps its place without a new attempt.
	// A waiter whose process died stops blocking the others after Hold.
	Hold time.Duration
}

// FairLocker is an optional capability of a Locker (FairLocks): it serves
// waiters roughly in arrival order, so a waiter's wait is bounded by the
// work queued before it, not by how lucky its retries are.
//
// A fair locker never lets a caller jump the queue: TryAcquire, and
// TryAcquireQueued for a waiter not at the front, refuse a free lock while
// a live waiter is queued for it. Each key has its own queue; a waiter gets
// one ticket (its place) per waiting call, shared by every key it waits
// for, so callers waiting for several keys cannot deadlock each other.
type FairLocker interface {
	// TryAcquireQueued is TryAcquire for waiter w: it takes the lock if it
	// is free and no live waiter was queued for it before w. Otherwise it
	// queues w (a waiter keeps the place it got first, and each attempt
	// renews its Hold) and returns an error matching ErrNotAcquired. A
	// successful acquisition removes w from the queue.
	TryAcquireQueued(ctx context.Context, name, key string, ttl time.Duration, w Waiter) (Lease, error)

	// Dequeue removes w from the queues of keys of context name, when it
	// stops waiting. If w was first in a queue, the next waiter is woken
	// (ReleaseWatcher). Dequeuing a waiter that is not queued is fine.
	Dequeue(ctx context.Context, name string, w Waiter, keys ...string) error
}

// NewWaiter returns a Waiter with a random ID that keeps its place for
// hold between attempts.
func NewWaiter(hold time.Duration) Waiter {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return Waiter{ID: hex.EncodeToString(b[:]), Hold: hold}
}

// NewWaiter returns a Waiter for a wait under p, as Retry makes them: it
// keeps its place for a few retry delays, and at least two seconds, so
// that a waiter on a loaded machine (whose next attempt runs late) does
// not lose its place, while one whose process died stops blocking the
// queue soon.
func (p Policy) NewWaiter() Waiter {
	return NewWaiter(max(4*p.RetryDelay, 2*time.Second))
}
