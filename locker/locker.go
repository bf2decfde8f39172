// Package locker defines the per-key distributed lock that contextd writes
// respect, and holds the lock logic that is the same for every backend:
// waiting with retries and jittered backoff (Wait, Acquire), early wake-up on
// release notifications, and automatic renewal (KeepAlive).
//
// A backend implements only Locker — single attempts, no retries, no
// sleeping — and optionally ReleaseWatcher. Everything that waits lives here,
// once, so every backend waits the same way.
//
// Locks are named by a context name and a key inside that context, so a
// backend can keep a context's locks next to its data (the Redis backend
// keeps them under the context's hash tag so its commit script can check
// them).
package locker

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNotAcquired is returned when a lock is held by someone else: by
	// TryAcquire at once, and by Acquire once its retries are exhausted.
	ErrNotAcquired = errors.New("locker: lock not acquired")

	// ErrNotHeld is returned by Release and Extend when the lease is no
	// longer held by its owner: it expired, or someone else holds the lock
	// now. A write carrying such a lease is refused with it too.
	ErrNotHeld = errors.New("locker: lock not held")
)

// Lease is one holding of a lock.
type Lease struct {
	// Name is the context the lock belongs to.
	Name string
	// Key is the context key the lock guards.
	Key string
	// Token is a random value that identifies this holding; only the holder
	// of the token can release or extend the lock.
	Token string
	// Fence is a fencing token: it strictly increases with every
	// acquisition of any lock of the context, so a store can refuse writes
	// from a holder whose lock has since been taken over.
	Fence uint64
	// TTL is the time the lock lives without being extended.
	TTL time.Duration
}

// Locker takes and gives back locks, one attempt per call.
//
// Implementations must be safe for concurrent use, must not retry or sleep,
// and must return ctx errors and backend errors wrapped with %w.
type Locker interface {
	// TryAcquire takes the lock on key of the context name for ttl, or
	// returns an error matching ErrNotAcquired if someone else holds it.
	TryAcquire(ctx context.Context, name, key string, ttl time.Duration) (Lease, error)

	// Release gives the lock back. It returns an error matching ErrNotHeld
	// if the lease is no longer held.
	Release(ctx context.Context, l Lease) error

	// Extend resets the lock's time to live to ttl. It returns an error
	// matching ErrNotHeld if the lease is no longer held.
	Extend(ctx context.Context, l Lease, ttl time.Duration) error
}

// ReleaseWatcher is an optional capability of a Locker: it tells waiters
// when a lock is released, so they need not sleep a whole retry delay.
type ReleaseWatcher interface {
	// WatchRelease arms a notification for releases of the locks on keys
	// of context name. Once WatchRelease returns, every later release of
	// one of those locks sends a value on the returned channel (without
	// blocking: the channel has room for one pending notification). A
	// notification is a hint that a retry may now succeed, not a promise.
	// stop must be called to disarm; it is idempotent.
	WatchRelease(ctx context.Context, name string, keys ...string) (notify <-chan struct{}, stop func(), err error)
}

// TurnWatcher is an optional capability of a ReleaseWatcher whose locker is
// also a FairLocker: it wakes only the waiter whose turn it is, instead of
// every waiter of a key. With N waiters queued for a key, WatchRelease
// wakes all N on each release and N-1 of them try in vain; WatchTurn
// wakes one.
//
// Retry uses it when the policy has a Queue; a TurnWatcher that cannot
// serve a call (say, a composed backend whose locker lacks it) returns an
// error matching errors.ErrUnsupported, and Retry falls back to
// WatchRelease.
type TurnWatcher interface {
	// WatchTurn is WatchRelease for waiter w of the fair queues of keys
	// of context name: a release of one of those locks, or the departure
	// of the waiter first in one of their queues, notifies w if w is then
	// first in that key's queue or no live waiter is queued for the key.
	// A waiter further back is not woken: its turn comes with a later
	// notification — or, if that one is lost (the waiter before it died
	// without leaving, a message was dropped), with its next retry, so a
	// lost notification costs at most a retry delay.
	WatchTurn(ctx context.Context, name string, w Waiter, keys ...string) (notify <-chan struct{}, stop func(), err error)
}

// Held is a lock that is held now, as a Lister reports it.
type Held struct {
	// Key is the context key the lock guards.
	Key string
	// Token identifies the holding (Lease.Token): who holds the lock, as
	// far as the backend knows.
	Token string
	// Fence is the holding's fencing token (Lease.Fence).
	Fence uint64
	// Expires is when the lock expires unless it is extended.
	Expires time.Time
}

// Lister is an optional capability of a Locker: it lists the locks of a
// context held now, for operators (the contextd command's locks). It is
// not on any write path; a listing may cost a pass over the backend's
// keys. Checked with a type assertion, as io.WriterTo is.
type Lister interface {
	// ListLocks returns the unexpired locks of context name, sorted by
	// key. A lock released or expired while the list is made may or may
	// not be in it.
	ListLocks(ctx context.Context, name string) ([]Held, error)
}
