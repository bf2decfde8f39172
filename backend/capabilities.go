package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/locker"
)

// Backend is the storage, locking and broadcasting a Context runs on.
type Backend interface {
	Store
	locker.Locker
	broadcaster.Broadcaster
}

// Capabilities lists the optional capabilities described in the package
// documentation.
type Capabilities struct {
	AtomicPublish   bool
	LockAwareCommit bool
	ChangeLog       bool
	ReleaseNotify   bool
	// FairLocks: the locker queues waiters and serves them in arrival
	// order (locker.FairLocker); with LockAwareCommit too, commits join
	// the same queues (Batch.Waiter).
	FairLocks bool
	// Expiry: puts may carry a TTL (Op.TTL); expired keys are deleted by
	// revisioned commits (Expirer).
	Expiry bool
}

// String lists the capabilities that are on, joined by "+", or "none".
func (c Capabilities) String() string {
	var on []string
	for _, f := range []struct {
		name string
		on   bool
	}{
		{"AtomicPublish", c.AtomicPublish}, {"LockAwareCommit", c.LockAwareCommit}, {"ChangeLog", c.ChangeLog},
		{"ReleaseNotify", c.ReleaseNotify}, {"FairLocks", c.FairLocks}, {"Expiry", c.Expiry},
	} {
		if f.on {
			on = append(on, f.name)
		}
	}
	if len(on) == 0 {
		return "none"
	}
	return strings.Join(on, "+")
}

// Capable is implemented by a Backend that offers optional capabilities.
// Only the capabilities it reports are used, so one type can implement the
// methods and still switch a capability off (for tests of the generic path).
type Capable interface {
	Capabilities() Capabilities
}

// AtomicPublisher is a Store that can commit and publish in one atomic step.
type AtomicPublisher interface {
	// CommitAndPublish commits like Store.Commit and, in the same atomic
	// step, publishes the commit's event (EncodeEvent of EventFromBatch)
	// on channel of the backend's own Broadcaster. Events of one context
	// are published in revision order.
	CommitAndPublish(ctx context.Context, name string, b Batch, channel string) (Head, error)
}

// TurnFollower is an optional capability of a backend that is a
// locker.TurnWatcher with lock-aware commits (Capabilities.LockAwareCommit)
// and fair queues: a commit that leaves a key's queue hands the turn on to
// the next waiter, and TurnFollower tells that waiter the commit's
// revision. A woken waiter that reads its local copy before it tries
// again (Modify) can then wait, briefly, for the copy to have that commit:
// the wake-up can overtake the event it follows on its way into the copy,
// and a try from the older copy would be refused. It is checked with a
// type assertion, as io.WriterTo is.
type TurnFollower interface {
	// WatchTurnAfter is locker.TurnWatcher's WatchTurn; in addition, before
	// it notifies w of a turn handed on by a commit, it calls after with
	// that commit's revision, and before it notifies w of a turn handed on
	// to w by name otherwise (a lock release, a waiter that left), it
	// calls after with 0. A wake-up that names nobody calls no after.
	// after must not block.
	WatchTurnAfter(ctx context.Context, name string, w locker.Waiter, after func(rev uint64), keys ...string) (notify <-chan struct{}, stop func(), err error)
}

// ChangeLog is a Store that keeps the recent events of a context.
type ChangeLog interface {
	// ChangesSince returns the events of the context with revisions above
	// after, in revision order, up to the current head. It returns an error
	// matching ErrLogTruncated if the log no longer holds revision after+1,
	// if the context's epoch is not epoch, or if after is above the
	// current revision (the store went back in time): in each case only a
	// snapshot can tell the caller what the store holds.
	ChangesSince(ctx context.Context, name, epoch string, after uint64) ([]Event, error)
}

// MultiGetter is a Store that reads many keys in one call, so a receiver
// of an event that omitted many values (a large transaction) fetches them
// in bulk instead of one round trip per key. It is an optional interface,
// checked with a type assertion where it is needed, as io.WriterTo is:
// without it, callers use Store.Get per key.
type MultiGetter interface {
	// GetMany returns the entries of those of keys that exist, in the
	// order of keys; a key that does not exist is left out, and a key
	// given twice is returned twice. Each entry is as Get would return
	// it, read at one moment for all keys or, for very many keys, in a
	// few consistent parts. A damaged entry (see ErrCorrupt) is returned
	// with Revision 0 rather than failing the whole call.
	GetMany(ctx context.Context, name string, keys []string) ([]Entry, error)
}

// Expirer is a Store that expires keys (Capabilities.Expiry).
//
// A put with Op.TTL records when its key expires, by the store's clock
// (Entry.Expires); a later put of the key without TTL clears it, a delete
// drops it. Keys whose time has come are deleted by an ordinary commit: a
// new revision whose event carries the deletes, in the change log like
// any other. Expire makes that commit; a store may also make it itself
// before another commit of the context (then that commit's own revision
// follows). Expiring is idempotent: keys already deleted stay deleted.
type Expirer interface {
	// Expire deletes the context's keys that have expired by now, in one
	// commit, and returns its event (with a zero Head if nothing had
	// expired); with channel set, a store with AtomicPublish publishes the
	// event in the same step (else the caller publishes it). It also
	// returns when the next key expires and the time now, both by the
	// store's clock (next is zero if no key will), so the caller can tell
	// how long to wait.
	Expire(ctx context.Context, name, channel string) (ev Event, next, now time.Time, err error)
}

// NoTTL returns an error matching errors.ErrUnsupported if a put of b has
// a TTL: what a store without expiry answers, so a TTL is never silently
// ignored.
func NoTTL(b Batch) error {
	for _, op := range b.Ops {
		if !op.Delete && op.TTL != 0 {
			return fmt.Errorf("key %q has a TTL, and this store does not expire keys: %w", op.Key, errors.ErrUnsupported)
		}
	}
	return nil
}

// CapabilitiesOf reports the capabilities b offers and can back with the
// methods they need; a capability reported without its methods is not
// offered.
func CapabilitiesOf(b Backend) Capabilities {
	var c Capabilities
	if cb, ok := b.(Capable); ok {
		c = cb.Capabilities()
	}
	if _, ok := b.(AtomicPublisher); !ok {
		c.AtomicPublish = false
	}
	if _, ok := b.(ChangeLog); !ok {
		c.ChangeLog = false
	}
	if _, ok := b.(locker.ReleaseWatcher); !ok {
		c.ReleaseNotify = false
	}
	if _, ok := b.(locker.FairLocker); !ok {
		c.FairLocks = false
	}
	if _, ok := b.(Expirer); !ok {
		c.Expiry = false
	}
	return c
}
