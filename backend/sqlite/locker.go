package sqlite

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/contextd-go/contextd/locker"
)

// TryAcquire takes the lock on key of context name for ttl, with a random
// token and the context's next fencing token, in one write transaction. A
// lock whose expiry has passed is taken over. Expiry is judged by the wall
// clock of the machine, in milliseconds: every process sharing the file
// runs on it.
func (b *Backend) TryAcquire(ctx context.Context, name, key string, ttl time.Duration) (locker.Lease, error) {
	op := fmt.Sprintf("acquire lock on %q in %q", key, name)
	if err := b.begin(ctx, op); err != nil {
		return locker.Lease{}, err
	}
	if key == "" {
		return locker.Lease{}, fmt.Errorf("sqlite: %s: empty key", op)
	}
	if ttl <= 0 {
		return locker.Lease{}, fmt.Errorf("sqlite: %s: ttl %v is not positive", op, ttl)
	}
	token := randomID()
	var fence int64
	// A lock held now makes the attempt fail now: checked on a read
	// connection first, so that waiters woken by a release do not all
	// queue for the write lock only to find the lock taken again.
	err := b.read(ctx, func(c *dbConn) error {
		holder, err := lockHolder(context.WithoutCancel(ctx), c, name, key, time.Now().UnixMilli())
		if err == nil && holder != "" {
			err = locker.ErrNotAcquired
		}
		return err
	})
	if err == nil {
		err = b.writeTx(ctx, func(ctx context.Context, c *dbConn, _ int64) error {
			if err := c.scan(ctx, sqlNextFence, []any{name}, &fence); err != nil {
				return err
			}
			// The TTL starts as late as it can: at the write.
			now := time.Now().UnixMilli()
			res, err := c.exec(ctx, sqlSetLock, name, key, token, fence, expiry(now, ttl), now)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				// Held: rolling back returns the fence too.
				return cmp.Or(err, locker.ErrNotAcquired)
			}
			return nil
		})
	}
	if errors.Is(err, locker.ErrNotAcquired) {
		return locker.Lease{}, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	if err != nil {
		return locker.Lease{}, b.wrap(ctx, op, err)
	}
	return locker.Lease{Name: name, Key: key, Token: token, Fence: uint64(fence), TTL: ttl}, nil
}

// expiry returns the expiry of a lock taken at now (ms) for ttl: the last
// millisecond in which it is live, so it lives at least ttl.
func expiry(now int64, ttl time.Duration) int64 {
	return now + (ttl + time.Millisecond - 1).Milliseconds()
}

// Release deletes the lock if the lease holds it and it has not expired.
// It returns an error matching locker.ErrNotHeld otherwise.
func (b *Backend) Release(ctx context.Context, l locker.Lease) error {
	op := fmt.Sprintf("release lock on %q in %q", l.Key, l.Name)
	if err := b.begin(ctx, op); err != nil {
		return err
	}
	var n int64
	err := b.writeOne(ctx, func(ctx context.Context, c *dbConn) error {
		res, err := c.exec(ctx, sqlRelease, l.Name, l.Key, l.Token, time.Now().UnixMilli())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return b.wrap(ctx, op, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: %s: %w", op, locker.ErrNotHeld)
	}
	b.poll.kick() // this process's waiters need not wait for the next poll
	return nil
}

// Extend makes the lock of l expire ttl from now, if the lease holds it and
// it has not expired. It returns an error matching locker.ErrNotHeld
// otherwise.
func (b *Backend) Extend(ctx context.Context, l locker.Lease, ttl time.Duration) error {
	op := fmt.Sprintf("extend lock on %q in %q", l.Key, l.Name)
	if err := b.begin(ctx, op); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("sqlite: %s: ttl %v is not positive", op, ttl)
	}
	var n int64
	err := b.writeOne(ctx, func(ctx context.Context, c *dbConn) error {
		now := time.Now().UnixMilli()
		res, err := c.exec(ctx, sqlExtend, l.Name, l.Key, l.Token, now, expiry(now, ttl))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return b.wrap(ctx, op, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: %s: %w", op, locker.ErrNotHeld)
	}
	return nil
}

// WatchRelease arms a notification for the locks on keys of context name,
// as locker.ReleaseWatcher describes. The Backend's poller checks the
// watched locks whenever the file changed (another connection committed,
// or this Backend released a lock) and when a watched lock's expiry has
// passed; it notifies while one of the keys has no live lock. A
// notification is a hint that a retry may succeed. notify has room for one
// pending value and is never closed; stop disarms, and is idempotent.
// WatchRelease fails with an error matching errors.ErrUnsupported if
// Options.DisableReleaseNotify is set.
func (b *Backend) WatchRelease(ctx context.Context, name string, keys ...string) (<-chan struct{}, func(), error) {
	op := fmt.Sprintf("watch lock releases in %q", name)
	if b.opts.DisableReleaseNotify {
		return nil, nil, unsupported(op, "DisableReleaseNotify")
	}
	if err := b.begin(ctx, op); err != nil {
		return nil, nil, err
	}
	w := &releaseWatch{name: name, keys: make(map[string]bool, len(keys)), notify: make(chan struct{}, 1)}
	for _, k := range keys {
		w.keys[k] = true
	}
	if err := b.poll.watch(w); err != nil {
		return nil, nil, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { b.poll.unwatch(w) }) }
	return w.notify, stop, nil
}

// releaseWatch is one armed WatchRelease.
type releaseWatch struct {
	name   string
	keys   map[string]bool
	notify chan struct{}
}

// wake sends a notification without blocking.
func (w *releaseWatch) wake() {
	select {
	case w.notify <- struct{}{}:
	default: // one is pending; that is enough
	}
}
