package backend

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/locker"
)

// Compose makes a Backend of parts that may come from different backends,
// for example a Redis store and locker with another broadcaster.
//
// The composed backend offers ChangeLog if the store does, and ReleaseNotify
// and FairLocks if the locker does (commits join the lock queues only when
// the store is also the locker, as for LockAwareCommit, and only then are
// TurnFollower's revisions forwarded). AtomicPublish and LockAwareCommit span two parts, so
// they are offered only when the store is also the broadcaster, or the
// locker, respectively (the same value) and offers them.
//
// Compose returns an error if a part is nil.
func Compose(s Store, l locker.Locker, b broadcaster.Broadcaster) (Backend, error) {
	if s == nil || l == nil || b == nil {
		return nil, errors.New("backend: Compose needs a store, a locker and a broadcaster")
	}
	c := &composed{store: s, locker: l, bcast: b}
	sc := partCapabilities(s)
	if _, ok := s.(ChangeLog); ok && sc.ChangeLog {
		c.caps.ChangeLog = true
	}
	if _, ok := l.(locker.ReleaseWatcher); ok && partCapabilities(l).ReleaseNotify {
		c.caps.ReleaseNotify = true
	}
	if _, ok := l.(locker.FairLocker); ok && partCapabilities(l).FairLocks {
		c.caps.FairLocks = true
	}
	if _, ok := s.(Expirer); ok && sc.Expiry {
		c.caps.Expiry = true
	}
	if _, ok := s.(AtomicPublisher); ok && sc.AtomicPublish && same(s, b) {
		c.caps.AtomicPublish = true
	}
	if sc.LockAwareCommit && same(s, l) {
		c.caps.LockAwareCommit = true
	}
	return c, nil
}

// partCapabilities reports what a part declares; a part that is not Capable
// is taken at its method set.
func partCapabilities(part any) Capabilities {
	if cb, ok := part.(Capable); ok {
		return cb.Capabilities()
	}
	return Capabilities{AtomicPublish: true, ChangeLog: true, ReleaseNotify: true, FairLocks: true, Expiry: true}
}

// same reports whether a and b are the same value, without panicking on
// types that cannot be compared.
func same(a, b any) bool {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta != nil && ta.Comparable() && a == b
}

type composed struct {
	store  Store
	locker locker.Locker
	bcast  broadcaster.Broadcaster
	caps   Capabilities
}

var (
	_ Backend               = (*composed)(nil)
	_ Capable               = (*composed)(nil)
	_ AtomicPublisher       = (*composed)(nil)
	_ ChangeLog             = (*composed)(nil)
	_ MultiGetter           = (*composed)(nil)
	_ locker.ReleaseWatcher = (*composed)(nil)
	_ locker.TurnWatcher    = (*composed)(nil)
	_ TurnFollower          = (*composed)(nil)
	_ locker.FairLocker     = (*composed)(nil)
	_ Expirer               = (*composed)(nil)
)

func (c *composed) Capabilities() Capabilities { return c.caps }

func (c *composed) Load(ctx context.Context, name string) (Snapshot, error) {
	return c.store.Load(ctx, name)
}

func (c *composed) Get(ctx context.Context, name, key string) (Entry, error) {
	return c.store.Get(ctx, name, key)
}

// GetMany uses the store's GetMany, or Get per key when the store has
// none.
func (c *composed) GetMany(ctx context.Context, name string, keys []string) ([]Entry, error) {
	if mg, ok := c.store.(MultiGetter); ok {
		return mg.GetMany(ctx, name, keys)
	}
	return getEach(ctx, c.store, name, keys)
}

func (c *composed) Commit(ctx context.Context, name string, b Batch) (Head, error) {
	return c.store.Commit(ctx, name, b)
}

func (c *composed) Revision(ctx context.Context, name string) (Head, error) {
	return c.store.Revision(ctx, name)
}

func (c *composed) CommitAndPublish(ctx context.Context, name string, b Batch, channel string) (Head, error) {
	if !c.caps.AtomicPublish {
		return Head{}, fmt.Errorf("backend: composed store cannot publish atomically: %w", errors.ErrUnsupported)
	}
	return c.store.(AtomicPublisher).CommitAndPublish(ctx, name, b, channel)
}

func (c *composed) ChangesSince(ctx context.Context, name, epoch string, after uint64) ([]Event, error) {
	if !c.caps.ChangeLog {
		return nil, fmt.Errorf("backend: composed store has no change log: %w", errors.ErrUnsupported)
	}
	return c.store.(ChangeLog).ChangesSince(ctx, name, epoch, after)
}

func (c *composed) TryAcquire(ctx context.Context, name, key string, ttl time.Duration) (locker.Lease, error) {
	return c.locker.TryAcquire(ctx, name, key, ttl)
}

func (c *composed) Release(ctx context.Context, l locker.Lease) error {
	return c.locker.Release(ctx, l)
}

func (c *composed) Extend(ctx context.Context, l locker.Lease, ttl time.Duration) error {
	return c.locker.Extend(ctx, l, ttl)
}

func (c *composed) WatchRelease(ctx context.Context, name string, keys ...string) (<-chan struct{}, func(), error) {
	if !c.caps.ReleaseNotify {
		return nil, nil, fmt.Errorf("backend: composed locker cannot notify releases: %w", errors.ErrUnsupported)
	}
	return c.locker.(locker.ReleaseWatcher).WatchRelease(ctx, name, keys...)
}

// WatchTurn forwards to the locker when it watches turns (and has fair
// queues and release notification); otherwise it fails with an error
// matching errors.ErrUnsupported, and waiters fall back to WatchRelease.
func (c *composed) WatchTurn(ctx context.Context, name string, w locker.Waiter, keys ...string) (<-chan struct{}, func(), error) {
	tw, ok := c.locker.(locker.TurnWatcher)
	if !ok || !c.caps.ReleaseNotify || !c.caps.FairLocks {
		return nil, nil, fmt.Errorf("backend: composed locker cannot watch turns: %w", errors.ErrUnsupported)
	}
	return tw.WatchTurn(ctx, name, w, keys...)
}

// WatchTurnAfter forwards to the locker when it follows turns and commits
// are lock-aware (the store is the locker); otherwise it fails with an
// error matching errors.ErrUnsupported, and waiters fall back to
// WatchRelease.
func (c *composed) WatchTurnAfter(ctx context.Context, name string, w locker.Waiter, after func(rev uint64), keys ...string) (<-chan struct{}, func(), error) {
	tf, ok := c.locker.(TurnFollower)
	if !ok || !c.caps.ReleaseNotify || !c.caps.FairLocks || !c.caps.LockAwareCommit {
		return nil, nil, fmt.Errorf("backend: composed locker cannot follow turns: %w", errors.ErrUnsupported)
	}
	return tf.WatchTurnAfter(ctx, name, w, after, keys...)
}

func (c *composed) TryAcquireQueued(ctx context.Context, name, key string, ttl time.Duration, w locker.Waiter) (locker.Lease, error) {
	if !c.caps.FairLocks {
		return locker.Lease{}, fmt.Errorf("backend: composed locker has no fair queues: %w", errors.ErrUnsupported)
	}
	return c.locker.(locker.FairLocker).TryAcquireQueued(ctx, name, key, ttl, w)
}

func (c *composed) Dequeue(ctx context.Context, name string, w locker.Waiter, keys ...string) error {
	if !c.caps.FairLocks {
		return fmt.Errorf("backend: composed locker has no fair queues: %w", errors.ErrUnsupported)
	}
	return c.locker.(locker.FairLocker).Dequeue(ctx, name, w, keys...)
}

func (c *composed) Expire(ctx context.Context, name, channel string) (Event, time.Time, time.Time, error) {
	if !c.caps.Expiry {
		return Event{}, time.Time{}, time.Time{}, fmt.Errorf("backend: composed store does not expire keys: %w", errors.ErrUnsupported)
	}
	if !c.caps.AtomicPublish {
		channel = "" // the caller publishes: the store is not the broadcaster
	}
	return c.store.(Expirer).Expire(ctx, name, channel)
}

func (c *composed) Publish(ctx context.Context, channel string, payload []byte) error {
	return c.bcast.Publish(ctx, channel, payload)
}

func (c *composed) Subscribe(ctx context.Context, channel string) (broadcaster.Subscription, error) {
	return c.bcast.Subscribe(ctx, channel)
}

// getEach is GetMany for a store without MultiGetter: one Get per key.
func getEach(ctx context.Context, s Store, name string, keys []string) ([]Entry, error) {
	out := make([]Entry, 0, len(keys))
	for _, k := range keys {
		e, err := s.Get(ctx, name, k)
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case errors.Is(err, ErrCorrupt):
			out = append(out, Entry{Key: k})
			continue
		case err != nil:
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}
