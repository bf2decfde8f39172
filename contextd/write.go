package contextd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

// UpdateContext sets key to value (the original's updateContext). The write
// is atomic, waits while another holder has key locked (up to
// Options.MaxRetries pauses of Options.RetryDelay, or ctx), and is visible
// to this instance's reads when UpdateContext returns. With IfRevision or
// IfAbsent it is conditional; with WithTTL the key expires.
//
// On a backend with atomic publishing and lock-aware commits (Redis, memory)
// it costs one round trip when key is not locked.
func (c *Context[T]) UpdateContext(ctx context.Context, key string, value T, opts ...WriteOption) error {
	_, err := c.traced(ctx, 1, func(ctx context.Context) (uint64, error) {
		return c.commitOps(ctx, []txnOp[T]{{key: key, value: value}}, nil, writeOptionsOf(opts))
	})
	if err != nil {
		return c.errorf("update %q", err, key)
	}
	return nil
}

// Create sets key to value if it does not exist yet, and returns the
// revision it committed at; if key exists it fails with an error matching
// ErrConflict. It is UpdateContext with IfAbsent (as NATS KV's Create and
// Redisson's putIfAbsent).
func (c *Context[T]) Create(ctx context.Context, key string, value T, opts ...WriteOption) (uint64, error) {
	o := writeOptionsOf(opts)
	if o.ifSet && o.ifRevision != 0 {
		return 0, c.errorf("create %q", invalid("IfRevision(%d) with Create, which requires the key absent", o.ifRevision), key)
	}
	o.ifSet, o.ifRevision = true, 0
	rev, err := c.traced(ctx, 1, func(ctx context.Context) (uint64, error) {
		return c.commitOps(ctx, []txnOp[T]{{key: key, value: value}}, nil, o)
	})
	if err != nil {
		return 0, c.errorf("create %q", err, key)
	}
	return rev, nil
}

// TransactionalUpdate sets several keys in one atomic step (the original's
// transactionalUpdate): other instances see all of the changes or none.
// The keys are treated as one unit for locking: it waits while any of them
// is locked by another holder; where the backend has no lock-aware commits
// it takes their locks in sorted key order, so two transactions never
// deadlock. An empty map writes nothing. IfRevision and IfAbsent apply to
// every key, WithTTL to every key; Txn mixes puts, deletes and per-key
// conditions.
func (c *Context[T]) TransactionalUpdate(ctx context.Context, values map[string]T, opts ...WriteOption) error {
	ops := make([]txnOp[T], 0, len(values))
	for k, v := range values {
		ops = append(ops, txnOp[T]{key: k, value: v})
	}
	_, err := c.traced(ctx, len(ops), func(ctx context.Context) (uint64, error) {
		return c.commitOps(ctx, ops, nil, writeOptionsOf(opts))
	})
	if err != nil {
		return c.errorf("transactional update of %d keys", err, len(values))
	}
	return nil
}

// Delete removes key; a key that does not exist is fine. It waits for
// locks like UpdateContext, and takes WithLock (a holder deletes its own
// locked key) and IfRevision. Txn deletes several keys at once.
func (c *Context[T]) Delete(ctx context.Context, key string, opts ...WriteOption) error {
	o := writeOptionsOf(opts)
	_, err := c.traced(ctx, 1, func(ctx context.Context) (uint64, error) {
		if o.ttlSet {
			return 0, invalid("WithTTL on a delete")
		}
		return c.commitOps(ctx, []txnOp[T]{{key: key, del: true}}, nil, o)
	})
	if err != nil {
		return c.errorf("delete %q", err, key)
	}
	return nil
}

// traced runs a write between the Trace's WriteStart hook and its done.
func (c *Context[T]) traced(ctx context.Context, keys int, write func(context.Context) (uint64, error)) (uint64, error) {
	if c == nil {
		return write(ctx)
	}
	ctx, done := c.opts.Trace.writeStart(ctx, keys)
	rev, err := write(ctx)
	if done != nil {
		done(rev, err)
	}
	return rev, err
}

// Modify replaces the value of key by fn's result, read-modify-write, and
// never loses an update: if another write got in between, fn is called
// again with the newer value, so fn may run several times and should have no
// side effects. fn gets the current value and whether the key exists; if fn
// returns an error, nothing is written and Modify returns it, except
// DeleteKey, which makes Modify delete the key. Modify waits for locks like
// UpdateContext and accepts the same options: with IfRevision it runs fn
// only if the key is at that revision, and fails with ErrConflict instead
// of trying again; WithTTL makes the new value expire. Modify returns the
// value written; with an error, the value is meaningless (it may be what
// fn returned on an attempt that was not committed).
//
// Concurrent Modify calls of the same key on one Context, made without
// options, are combined into one commit: their functions run one after
// the other, in the order the calls arrived, each on the value the one
// before it returned (as encoded and decoded, as a Modify of its own would
// see it), and the last value is written once for all of them — the calls
// are linearized at that commit in arrival order. Each call still has its
// own outcome: the value its fn returned, or fn's error (the function
// after it gets the value from before it), and a panic in fn is raised
// again in the caller's goroutine. A call whose ctx ends while it waits
// leaves without writing, unless a commit carrying it is already on its
// way: then it reports that commit's outcome. Stats.ModifyJoined counts
// the calls that joined another's commit. So fn, which should have no
// side effects anyway, must not call Modify of the same key on the same
// Context: that call would join the commit that waits for fn, and wait
// until its ctx ends. Nor may fn call runtime.Goexit (t.FailNow, say):
// it may run in the goroutine of another call, which would end.
func (c *Context[T]) Modify(ctx context.Context, key string, fn func(cur T, ok bool) (T, error), opts ...WriteOption) (T, error) {
	var v T
	_, err := c.traced(ctx, 1, func(ctx context.Context) (uint64, error) {
		var rev uint64
		var err error
		v, rev, err = c.modify(ctx, key, fn, opts)
		return rev, err
	})
	if err != nil {
		return v, c.errorf("modify %q", err, key)
	}
	return v, nil
}

// DeleteKey, returned by the function of Modify, makes Modify delete the
// key instead of writing a value (as filepath.SkipDir steers a walk).
//
//lint:ignore ST1012 a signal, not an error, named as filepath.SkipDir is
var DeleteKey = errors.New("contextd: delete the key")

func (c *Context[T]) modify(ctx context.Context, key string, fn func(T, bool) (T, error), opts []WriteOption) (T, uint64, error) {
	var result T
	if err := c.usable(); err != nil {
		return result, 0, err
	}
	if key == "" {
		return result, 0, errEmptyKey
	}
	if fn == nil {
		return result, 0, invalid("nil function")
	}
	o := writeOptionsOf(opts)
	if o.ttlSet && o.ttl <= 0 {
		return result, 0, invalid("WithTTL(%v): not positive", o.ttl)
	}
	if o.ttlSet && !c.caps.Expiry {
		return result, 0, fmt.Errorf("WithTTL: the backend does not expire keys: %w", errors.ErrUnsupported)
	}
	if ctx == nil {
		return result, 0, invalid("nil ctx")
	}
	call := &modCall[T]{fn: fn, ctx: ctx}
	shared := combinable(o)
	var g *modGroup[T] // nil for a call that is not combined
	if shared {
		var lead bool
		if g, lead = c.join(key, call); !lead && !c.await(g, call) {
			return call.outcome()
		}
	}
	var (
		head    backend.Head
		taken   []*modCall[T] // the calls of the latest attempt
		outs    []modOutcome[T]
		cur     T
		rev     uint64
		commit  string
		ok      bool
		curErr  error
		backoff conflictBackoff
	)
	// Each attempt starts from the local copy as it is then — after a wait
	// for a lock, events have usually brought it up to date, which saves a
	// conflict and a read — unless the store reported something newer.
	fromCopy := func() {
		e, exists := c.cache.current().entries.Get(key)
		if !exists || e.rev < rev {
			return
		}
		cur, rev, commit, ok, curErr = e.value, e.rev, e.commit, !e.deleted(), e.err()
		if !ok {
			rev, commit = 0, ""
		}
	}
	o.turns = c.newTurnNotes()
	// A key refused a moment ago is likely busy still: queue the first
	// attempt (locker.Policy.Contended), which saves the refused attempt
	// an unqueued one would make first. Only where Modify's attempts
	// queue (a fair, lock-aware store).
	o.contended = c.queue != nil && c.caps.LockAwareCommit && c.contention.recent(key)
	// A place the previous contended call took for this one: wait for
	// its turn, with no attempt before it.
	var claimed *reservation
	if shared && o.contended {
		if claimed = c.claim(key); claimed != nil {
			o.turns, o.queued = claimed.notes, &claimed.w
			defer claimed.drop()
		}
	}
	ended := false // end ran to its end for this call
	if shared {
		// A panic (or runtime.Goexit) in this goroutine outside the
		// functions — in a hook, the backend — must not leave the group
		// without a leader: its calls would wait for it until their ctx
		// ends. The commit may have been made: they are told so.
		defer func() {
			if ended {
				return
			}
			r := recover()
			c.end(key, g, shared, call, taken, 0, fmt.Errorf("modify %q: the goroutine committing it stopped (the write may have been made): panic %v", key, r))
			if r != nil {
				panic(r)
			}
		}()
	}
	err := c.write(ctx, []string{key}, o, func(ctx context.Context, leases []locker.Lease, w *locker.Waiter) error {
		// Handed the turn by a commit, wait (briefly) for the copy to
		// have it: its event came before the wake-up, but reaches the
		// copy through the Context's goroutine, and a try from the older
		// copy would be refused.
		if r := o.turns.take(); r != 0 && w != nil {
			c.awaitTurn(ctx, key, r)
		}
		fromCopy()
		for {
			// Every call of the group waiting now rides on this attempt
			// (combine.go).
			taken = c.take(g, shared, call, taken)
			if o.ifSet && rev != o.ifRevision && curErr == nil {
				return fmt.Errorf("key %q is at revision %d, not %d: %w", key, rev, o.ifRevision, ErrConflict)
			}
			var (
				op    backend.Op
				up    update[T]
				write bool
			)
			op, up, write, outs = c.apply(key, taken, cur, ok, curErr, o, outs)
			if !c.mark(shared, taken, outs) {
				continue // a call left while the functions ran: without it
			}
			if !write {
				return errNothingToWrite
			}
			batch := backend.Batch{
				Ops:        []backend.Op{op},
				Conditions: []backend.Condition{{Key: key, Revision: rev, Commit: commit}},
				Leases:     leases,
				Waiter:     w,
			}
			// A commit that carries other calls is not given up halfway
			// because the leader's ctx ended: their outcome must be known.
			cctx, stop := ctx, func() {}
			if len(taken) > 1 {
				// ... but it is, once no call it carries waits for it.
				cctx, stop = whileAnyWaits(ctx, taken)
			}
			// A queued writer of a combinable call takes its place for
			// the next call of the key now, if others are still queued
			// after it (turn.go).
			var next *reservation
			if w != nil && shared {
				if next = c.reserve(ctx, key); next != nil {
					batch.Requeue = &backend.Requeue{Waiter: next.w}
				}
			}
			var err error
			head, err = c.commit(cctx, batch, []update[T]{up})
			stop()
			switch {
			case next == nil:
			case err == nil && batch.Requeue.Queued:
				c.keep(next)
			case err == nil || errors.Is(err, backend.ErrConflict) || errors.Is(err, backend.ErrLocked):
				// Not queued: refused before, or nobody else waits.
				next.state.Store(reserveGone)
				next.stop()
			default:
				// The commit may have queued it.
				if next.state.CompareAndSwap(reserveOpen, reserveGone) {
					c.giveUp(next)
				}
			}
			if err == nil {
				return nil
			}
			if !errors.Is(err, backend.ErrConflict) && !errors.Is(err, backend.ErrLocked) {
				// The commit may have been made: the calls it carried
				// stay carried, and end gives them all err.
				return err
			}
			c.contention.mark(key)
			c.untake(g, shared, call, taken)
			if !errors.Is(err, backend.ErrConflict) || o.ifSet {
				return err
			}
			// A fair store queued the waiter on the conflict: its next
			// attempt is served in turn. A first attempt has no waiter
			// yet: after a re-read it ends as a lock wait would, so that
			// the next one is queued. Without queues, back off so that
			// contenders do not retry in lockstep.
			lostRace := w == nil && c.queue != nil && c.caps.LockAwareCommit
			if w == nil && !lostRace {
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
			if lostRace {
				return errLostRace
			}
		}
	})
	// On errNothingToWrite every call has its own outcome already, the
	// leader's among them; head.Revision counts only without an error.
	c.end(key, g, shared, call, taken, head.Revision, err)
	ended = true
	return call.outcome()
}

// errLostRace ends a first, unqueued attempt of Modify that lost a race on
// a fair store: it counts as a lock wait, so the next attempt carries a
// waiter and is served in turn.
var errLostRace = fmt.Errorf("lost a race for the key: %w", backend.ErrLocked)

// write runs attempt under the backend's locking discipline for keys:
//   - lock-aware store: the store checks locks in the commit; attempt is
//     retried while a key is locked by another holder, as the options allow;
//   - otherwise: the locks of keys not held through WithLock are taken in
//     sorted order first and released after, and the WithLock leases are
//     renewed to prove they are still held.
func (c *Context[T]) write(ctx context.Context, keys []string, wo writeOptions, attempt func(context.Context, []locker.Lease, *locker.Waiter) error) error {
	held, err := c.heldLeases(wo.locks)
	if err != nil {
		return err
	}
	leases := make([]locker.Lease, len(held))
	for i, l := range held {
		leases[i] = l.currentLease()
	}
	err = c.writeLocked(ctx, keys, held, leases, wo, attempt)
	if errors.Is(err, locker.ErrNotHeld) {
		for _, l := range held {
			l.checkLost(ctx)
		}
	}
	return err
}

func (c *Context[T]) writeLocked(ctx context.Context, keys []string, held []*Lock, leases []locker.Lease, wo writeOptions, attempt func(context.Context, []locker.Lease, *locker.Waiter) error) error {
	policy := c.lockPolicy(c.opts.RetryDelay, c.opts.MaxRetries, keys[0])
	if wo.turns != nil {
		policy.Watcher = wo.turns
	}
	policy.Contended = wo.contended
	policy.Queued = wo.queued
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
func (c *Context[T]) commit(ctx context.Context, b backend.Batch, ups []update[T]) (backend.Head, error) {
	b.Codec = c.opts.Codec.Name()
	b.Origin = c.id
	b.EventValueLimit = c.opts.EventValueLimit
	var head backend.Head
	var err error
	// Without echoes (skipEchoes) there is no echo to beat the reply.
	noEcho := c.noEcho.Load()
	var seq uint64
	if !noEcho {
		seq = c.addInflight(b.Ops, ups)
	}
	c.ownPending.Add(1)
	if c.atomicPub != nil {
		head, err = c.atomicPub.CommitAndPublish(ctx, c.name, b, c.opts.Channel)
	} else {
		head, err = c.store.Commit(ctx, c.name, b)
		if err == nil {
			c.publish(ctx, head, b)
		}
	}
	if err != nil {
		c.removeInflight(seq)
		c.ownPending.Add(-1)
		// Its echo may be held (hushEchoes), the only carrier of the
		// write if the commit was made after all.
		c.wakeHeld(true)
		if noEcho && inDoubt(err) {
			// Without an echo (skipEchoes) nothing else brings in this
			// commit if it was made after all: the change log does.
			c.background(func(ctx context.Context) { _ = c.catchUp(ctx, viaLog) })
		}
		return backend.Head{}, err
	}
	v := c.cache.applyOwn(head, c.id, ups)
	// Only now: an echo that finds the commit gone from inflight finds it
	// in the copy (prepare).
	c.removeInflight(seq)
	c.ownPending.Add(-1)
	// An echo held above the copy now is another commit's (hushEchoes).
	c.wakeHeld(v == applied && c.cache.current().applied < head.Revision)
	c.sawExpiries(ups)
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
	return head, nil
}

// inDoubt reports whether a commit that failed with err may have been
// made: anything but a store's refusal.
func inDoubt(err error) bool {
	return !errors.Is(err, backend.ErrConflict) && !errors.Is(err, backend.ErrLocked) && !errors.Is(err, locker.ErrNotHeld)
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

// ownWrite is a commit of this instance awaiting its reply: its ops and
// their decoded values (update i is op i).
type ownWrite[T any] struct {
	seq uint64
	ops []backend.Op
	ups []update[T]
}

// addInflight records a commit about to be sent; removeInflight(seq) ends
// it (seq is never 0).
func (c *Context[T]) addInflight(ops []backend.Op, ups []update[T]) uint64 {
	c.inflightMu.Lock()
	defer c.inflightMu.Unlock()
	c.inflightN++
	c.inflight = append(c.inflight, ownWrite[T]{seq: c.inflightN, ops: ops, ups: ups})
	return c.inflightN
}

func (c *Context[T]) removeInflight(seq uint64) {
	if seq == 0 {
		return // none was added
	}
	c.inflightMu.Lock()
	defer c.inflightMu.Unlock()
	for i := range c.inflight {
		if c.inflight[i].seq == seq {
			c.inflight = slices.Delete(c.inflight, i, i+1)
			return
		}
	}
}

// ownUpdates returns the decoded values of a commit in flight whose event
// ev is (the echo of an own commit that beat its reply): the same keys
// with the same value bytes in the same order, which decode to the same
// values. An expiry time the event carries (the store's clock) replaces
// the writer's estimate. ok is false if no commit in flight matches; then
// the event is decoded as any other. Without such a time the commit's
// own slice is returned: it is only read, here and by the commit.
func (c *Context[T]) ownUpdates(ev backend.Event) ([]update[T], bool) {
	c.inflightMu.Lock()
	defer c.inflightMu.Unlock()
	for _, w := range c.inflight {
		if !sameOps(w.ops, ev.Changes) {
			continue
		}
		if !slices.ContainsFunc(ev.Changes, func(ch backend.Change) bool { return !ch.Expires.IsZero() }) {
			return w.ups, true
		}
		ups := make([]update[T], len(w.ups))
		for i, u := range w.ups {
			if exp := ev.Changes[i].Expires; !exp.IsZero() {
				u.expires = milliOf(exp)
			}
			ups[i] = u
		}
		return ups, true
	}
	return nil, false
}

// sameOps reports whether an event's changes are exactly ops, values
// included (an omitted value is never the same).
func sameOps(ops []backend.Op, changes []backend.Change) bool {
	if len(ops) != len(changes) {
		return false
	}
	for i, ch := range changes {
		o := ops[i]
		if ch.Key != o.Key || ch.Deleted != o.Delete || ch.Omitted || !ch.Deleted && !bytes.Equal(ch.Value, o.Value) {
			return false
		}
	}
	return true
}

// whileAnyWaits returns a context, with ctx's values, that ends once the
// ctx of every call ended.
func whileAnyWaits[T any](ctx context.Context, calls []*modCall[T]) (context.Context, func()) {
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var left atomic.Int32
	left.Store(int32(len(calls)))
	stops := make([]func() bool, 0, len(calls))
	for _, call := range calls {
		stops = append(stops, context.AfterFunc(call.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		}))
	}
	return cctx, func() {
		for _, s := range stops {
			s()
		}
		cancel()
	}
}
