package contextd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

// UpdateContext sets key to value (the original's updateContext). The write
// is atomic, waits while another holder has key locked (up to
// Options.MaxRetries pauses of Options.RetryDelay, or ctx), and is visible
// to this instance's reads when UpdateContext returns.
//
// On a backend with atomic publishing and lock-aware commits (Redis, memory)
// it costs one round trip when key is not locked.
func (c *Context[T]) UpdateContext(ctx context.Context, key string, value T, opts ...WriteOption) error {
	err := c.put(ctx, map[string]T{key: value}, opts)
	if err != nil {
		return c.errorf("update %q", err, key)
	}
	return nil
}

// TransactionalUpdate sets several keys in one atomic step (the original's
// transactionalUpdate): other instances see all of the changes or none.
// The keys are treated as one unit for locking: it waits while any of them
// is locked by another holder; where the backend has no lock-aware commits
// it takes their locks in sorted key order, so two transactions never
// deadlock. An empty map writes nothing.
func (c *Context[T]) TransactionalUpdate(ctx context.Context, values map[string]T, opts ...WriteOption) error {
	if err := c.put(ctx, values, opts); err != nil {
		return c.errorf("transactional update of %d keys", err, len(values))
	}
	return nil
}

// Delete removes keys in one atomic step. Keys that do not exist are fine.
func (c *Context[T]) Delete(ctx context.Context, keys ...string) error {
	if err := c.remove(ctx, keys); err != nil {
		return c.errorf("delete %q", err, keys)
	}
	return nil
}

func (c *Context[T]) put(ctx context.Context, values map[string]T, opts []WriteOption) error {
	if err := c.usable(); err != nil {
		return err
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		if k == "" {
			return errEmptyKey
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	ops := make([]backend.Op, len(keys))
	ups := make([]update[T], len(keys))
	for i, k := range keys {
		b, err := c.encode(k, values[k])
		if err != nil {
			return err
		}
		ops[i] = backend.Op{Key: k, Value: b}
		// The copy holds what other instances will decode, not the
		// caller's value, which the caller may go on changing.
		ups[i] = update[T]{key: k}
		ups[i].value, ups[i].err = c.decode(k, b)
	}
	if len(ops) == 0 {
		return ctx.Err()
	}
	return c.write(ctx, keys, opts, func(ctx context.Context, leases []locker.Lease, w *locker.Waiter) error {
		return c.commit(ctx, backend.Batch{Ops: ops, Leases: leases, Waiter: w}, ups)
	})
}

func (c *Context[T]) remove(ctx context.Context, keys []string) error {
	if err := c.usable(); err != nil {
		return err
	}
	keys = slices.Clone(keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	ops := make([]backend.Op, len(keys))
	ups := make([]update[T], len(keys))
	for i, k := range keys {
		if k == "" {
			return errEmptyKey
		}
		ops[i] = backend.Op{Key: k, Delete: true}
		ups[i] = update[T]{key: k, deleted: true}
	}
	if len(ops) == 0 {
		return ctx.Err()
	}
	return c.write(ctx, keys, nil, func(ctx context.Context, leases []locker.Lease, w *locker.Waiter) error {
		return c.commit(ctx, backend.Batch{Ops: ops, Leases: leases, Waiter: w}, ups)
	})
}

// Modify replaces the value of key by fn's result, read-modify-write, and
// never loses an update: if another write got in between, fn is called
// again with the newer value, so fn may run several times and should have no
// side effects. fn gets the current value and whether the key exists; if fn
// returns an error, nothing is written and Modify returns it. Modify waits
// for locks like UpdateContext and accepts the same options.
func (c *Context[T]) Modify(ctx context.Context, key string, fn func(cur T, ok bool) (T, error), opts ...WriteOption) (T, error) {
	v, err := c.modify(ctx, key, fn, opts)
	if err != nil {
		return v, c.errorf("modify %q", err, key)
	}
	return v, nil
}

func (c *Context[T]) modify(ctx context.Context, key string, fn func(T, bool) (T, error), opts []WriteOption) (T, error) {
	var result T
	if err := c.usable(); err != nil {
		return result, err
	}
	if key == "" {
		return result, errEmptyKey
	}
	if fn == nil {
		return result, invalid("nil function")
	}
	// Start from the local copy; on a conflict, from what the store
	// reports or, if it does not, from a read.
	c.cache.mu.RLock()
	e, exists := c.cache.entries[key]
	c.cache.mu.RUnlock()
	cur, rev, commit, ok, curErr := e.value, e.rev, e.commit, exists && !e.deleted, e.err
	if !ok {
		rev, commit = 0, ""
	}
	var backoff conflictBackoff
	err := c.write(ctx, []string{key}, opts, func(ctx context.Context, leases []locker.Lease, w *locker.Waiter) error {
		for {
			if curErr != nil {
				return curErr
			}
			next, err := fn(cur, ok)
			if err != nil {
				return err
			}
			b, err := c.encode(key, next)
			if err != nil {
				return err
			}
			up := update[T]{key: key}
			up.value, up.err = c.decode(key, b)
			batch := backend.Batch{
				Ops:        []backend.Op{{Key: key, Value: b}},
				Conditions: []backend.Condition{{Key: key, Revision: rev, Commit: commit}},
				Leases:     leases,
				Waiter:     w,
			}
			err = c.commit(ctx, batch, []update[T]{up})
			if !errors.Is(err, backend.ErrConflict) {
				result = up.value
				return err
			}
			// A fair store queued the waiter on the conflict: its next
			// attempt is served in turn. Elsewhere, back off so that
			// contenders do not retry in lockstep.
			if w == nil {
				if err := backoff.wait(ctx, c.opts.RetryDelay); err != nil {
					return err
				}
			}
			// A store that says what the key holds now in its refusal
			// (backend.ConflictError) saves the read.
			var fresh backend.Entry
			var ce *backend.ConflictError
			if errors.As(err, &ce) && ce.Key == key {
				fresh, err = ce.Current, nil
				if !ce.Exists {
					err = backend.ErrNotFound
				}
			} else {
				fresh, err = c.store.Get(ctx, c.name, key)
			}
			var freshRev uint64
			var freshCommit string
			switch {
			case errors.Is(err, backend.ErrNotFound):
				var zero T
				cur, ok, curErr = zero, false, nil
			case err != nil:
				return err
			case fresh.Revision == 0:
				return damaged(key)
			default:
				cur, curErr = c.decode(key, fresh.Value)
				freshRev, freshCommit, ok = fresh.Revision, fresh.Commit, true
			}
			if freshRev != 0 && freshRev == rev && freshCommit == commit {
				// The store refused a condition that its own read says
				// holds: retrying could never meet it. (An absent key
				// carries no revision: it may have come and gone.)
				return fmt.Errorf("key %q: the store refuses revision %d, which it reports: %w", key, rev, ErrCorrupt)
			}
			rev, commit = freshRev, freshCommit
		}
	})
	return result, err
}

// write runs attempt under the backend's locking discipline for keys:
//   - lock-aware store: the store checks locks in the commit; attempt is
//     retried while a key is locked by another holder, as the options allow;
//   - otherwise: the locks of keys not held through WithLock are taken in
//     sorted order first and released after, and the WithLock leases are
//     renewed to prove they are still held.
func (c *Context[T]) write(ctx context.Context, keys []string, opts []WriteOption, attempt func(context.Context, []locker.Lease, *locker.Waiter) error) error {
	var wo writeOptions
	for _, o := range opts {
		o(&wo)
	}
	held, err := c.heldLeases(wo.locks)
	if err != nil {
		return err
	}
	leases := make([]locker.Lease, len(held))
	for i, l := range held {
		leases[i] = l.currentLease()
	}
	err = c.writeLocked(ctx, keys, held, leases, attempt)
	if errors.Is(err, locker.ErrNotHeld) {
		for _, l := range held {
			l.checkLost(ctx)
		}
	}
	return err
}

func (c *Context[T]) writeLocked(ctx context.Context, keys []string, held []*Lock, leases []locker.Lease, attempt func(context.Context, []locker.Lease, *locker.Waiter) error) error {
	policy := c.lockPolicy(c.opts.RetryDelay, c.opts.MaxRetries)
	if c.caps.LockAwareCommit {
		err := locker.Retry(ctx, c.name, keys, policy, func(ctx context.Context, w *locker.Waiter) error {
			return attempt(ctx, leases, w)
		}, func(err error) bool { return errors.Is(err, backend.ErrLocked) })
		if errors.Is(err, backend.ErrLocked) {
			return fmt.Errorf("%w: %w", ErrLockNotAcquired, err)
		}
		return err
	}
	for _, l := range held {
		if err := l.extend(ctx, 0); err != nil {
			return fmt.Errorf("lock %q: %w", l.Key(), err)
		}
	}
	var taken []locker.Lease
	defer func() {
		// Release even if ctx was cancelled: the locks must not linger
		// for their whole TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for i := len(taken) - 1; i >= 0; i-- {
			_ = c.lock.Release(rctx, taken[i])
		}
	}()
	for _, k := range keys {
		if slices.ContainsFunc(leases, func(l locker.Lease) bool { return l.Key == k }) {
			continue
		}
		l, err := locker.Acquire(ctx, c.lock, c.name, k, c.opts.LockTimeout, policy)
		if err != nil {
			return fmt.Errorf("lock %q: %w", k, err)
		}
		taken = append(taken, l)
	}
	return attempt(ctx, append(leases, taken...), nil)
}

// heldLeases checks the locks given with WithLock.
func (c *Context[T]) heldLeases(locks []*Lock) ([]*Lock, error) {
	for _, l := range locks {
		switch {
		case l == nil:
			return nil, invalid("WithLock(nil)")
		case l.owner != any(c):
			return nil, invalid("WithLock: lock %q belongs to another Context", l.Key())
		case l.isLost():
			return nil, fmt.Errorf("lock %q: %w", l.Key(), ErrLockLost)
		}
	}
	return locks, nil
}

// commit writes one batch, publishes its event and applies it locally.
func (c *Context[T]) commit(ctx context.Context, b backend.Batch, ups []update[T]) error {
	b.Codec = c.opts.Codec.Name()
	b.Origin = c.id
	b.EventValueLimit = c.opts.EventValueLimit
	var head backend.Head
	var err error
	if c.atomicPub != nil {
		head, err = c.atomicPub.CommitAndPublish(ctx, c.name, b, c.opts.Channel)
	} else {
		head, err = c.store.Commit(ctx, c.name, b)
		if err == nil {
			c.publish(ctx, head, b)
		}
	}
	if err != nil {
		return err
	}
	v := c.cache.applyOwn(head, c.id, ups)
	if v != applied && v != duplicate {
		c.opts.Logger.Debug("contextd: own commit does not apply", "context", c.name, "epoch", head.Epoch, "revision", head.Revision,
			"commit", head.Commit, "parent", head.Parent, "verdict", v.String())
	}
	switch v {
	case resync:
		// Another epoch: catch up, so that this write is visible when the
		// call returns.
		_ = c.catchUp(ctx, viaSnapshot)
	case diverged:
		// The store has another history than the copy (a failover).
		_ = c.catchUp(ctx, replaceAll)
	}
	return nil
}

// publish sends a committed batch's event. The commit stands whatever
// happens here, so a failure is counted and logged, not returned; other
// instances find the revision on their next check.
func (c *Context[T]) publish(ctx context.Context, head backend.Head, b backend.Batch) {
	payload, err := backend.EncodeEvent(backend.EventFromBatch(head, b))
	if err == nil {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = c.bcast.Publish(pctx, c.opts.Channel, payload)
		cancel()
	}
	if err != nil {
		c.stats.publishErrors.Add(1)
		c.opts.Logger.Warn("contextd: publishing a committed change failed", "context", c.name, "revision", head.Revision, "error", err)
	}
}
