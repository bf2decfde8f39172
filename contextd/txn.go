package contextd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

// Txn is a transaction: puts and deletes of several keys, with conditions
// on any keys, committed by Commit as one revision, atomically, or not at
// all (as etcd's Txn, Consul's transaction or Redisson's RTransaction).
//
// Make one with Context.Txn. Its methods record what to do and return the
// Txn, for chaining; mistakes (an empty key, a key written twice, a value
// that does not encode) are reported by Commit. A Txn is used once, from
// one goroutine.
type Txn[T any] struct {
	c     *Context[T]
	ops   []txnOp[T]
	conds []txnCond
	err   error
}

// txnOp is one put or delete of a write.
type txnOp[T any] struct {
	key   string
	value T
	del   bool
	ttl   time.Duration
}

// txnCond requires key to be at rev (0: absent).
type txnCond struct {
	key string
	rev uint64
}

// Txn returns a new transaction on the context.
func (c *Context[T]) Txn() *Txn[T] { return &Txn[T]{c: c} }

// Put sets key to value. Of the options only WithTTL applies here.
func (t *Txn[T]) Put(key string, value T, opts ...WriteOption) *Txn[T] {
	o := writeOptionsOf(opts)
	if len(o.locks) > 0 || o.ifSet {
		t.fail(invalid("Txn.Put takes no WithLock or condition (give locks to Commit, conditions with IfRevision)"))
	}
	t.ops = append(t.ops, txnOp[T]{key: key, value: value, ttl: o.ttl})
	if o.ttlSet && o.ttl <= 0 {
		t.fail(invalid("WithTTL(%v) for %q: not positive", o.ttl, key))
	}
	return t
}

// Delete removes key; a key that does not exist is fine.
func (t *Txn[T]) Delete(key string) *Txn[T] {
	t.ops = append(t.ops, txnOp[T]{key: key, del: true})
	return t
}

// IfRevision makes the transaction conditional on key being at revision
// rev (0: absent) when it commits; key need not be written by it.
func (t *Txn[T]) IfRevision(key string, rev uint64) *Txn[T] {
	t.conds = append(t.conds, txnCond{key: key, rev: rev})
	return t
}

// IfAbsent makes the transaction conditional on key being absent.
func (t *Txn[T]) IfAbsent(key string) *Txn[T] { return t.IfRevision(key, 0) }

func (t *Txn[T]) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// Commit applies the transaction and returns the revision it committed at.
// It fails with an error matching ErrConflict, writing nothing, if a
// condition does not hold. It waits for locks like UpdateContext; of the
// options, WithLock applies (conditions belong to IfRevision, expiry to
// Put). An empty transaction (conditions only, or nothing) writes nothing
// and returns the copy's revision; its conditions are not checked.
func (t *Txn[T]) Commit(ctx context.Context, opts ...WriteOption) (uint64, error) {
	o := writeOptionsOf(opts)
	if t.err == nil && (o.ifSet || o.ttlSet) {
		t.fail(invalid("Txn.Commit takes only WithLock (use Txn.IfRevision and Put's WithTTL)"))
	}
	rev, err := t.c.traced(ctx, len(t.ops), func(ctx context.Context) (uint64, error) {
		if t.err != nil {
			return 0, t.err
		}
		return t.c.commitOps(ctx, t.ops, t.conds, o)
	})
	if err != nil {
		return 0, t.c.errorf("transaction of %d writes", err, len(t.ops))
	}
	return rev, nil
}

// writeOptionsOf applies opts.
func writeOptionsOf(opts []WriteOption) writeOptions {
	if len(opts) == 0 {
		// Most writes have no options: return without o, which the calls
		// below make escape to the heap.
		return writeOptions{}
	}
	var o writeOptions
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o
}

// commitOps is every write but Modify: ops (puts and deletes) and conds
// checked and committed in one revision, waiting for locks as the options
// and the backend say. It returns the revision committed.
func (c *Context[T]) commitOps(ctx context.Context, ops []txnOp[T], conds []txnCond, o writeOptions) (uint64, error) {
	if err := c.usable(); err != nil {
		return 0, err
	}
	if len(ops) == 0 {
		return c.Revision(), ctx.Err()
	}
	if len(ops) > 1 {
		// Sorted for the lock order, in a copy: the caller's slice (a
		// Txn's) keeps its order.
		ops = slices.Clone(ops)
		slices.SortFunc(ops, func(a, b txnOp[T]) int { return strings.Compare(a.key, b.key) })
	}
	var (
		keys []string
		bops []backend.Op
		ups  []update[T]
	)
	if len(ops) == 1 {
		// Most writes are of one key: one allocation instead of three.
		one := new(struct {
			key [1]string
			op  [1]backend.Op
			up  [1]update[T]
		})
		keys, bops, ups = one.key[:], one.op[:], one.up[:]
	} else {
		keys = make([]string, len(ops))
		bops = make([]backend.Op, len(ops))
		ups = make([]update[T], len(ops))
	}
	for i, op := range ops {
		if op.key == "" {
			return 0, errEmptyKey
		}
		if i > 0 && op.key == ops[i-1].key {
			return 0, invalid("key %q written twice", op.key)
		}
		keys[i] = op.key
		ups[i] = update[T]{key: op.key, deleted: op.del}
		if op.del {
			bops[i] = backend.Op{Key: op.key, Delete: true}
			continue
		}
		ttl := op.ttl
		if o.ttlSet {
			ttl = o.ttl
		}
		if ttl != 0 && !c.caps.Expiry {
			return 0, fmt.Errorf("WithTTL: the backend does not expire keys: %w", errors.ErrUnsupported)
		}
		var b []byte
		var err error
		if c.marshalRef {
			// Through a pointer to the update, which is on the heap
			// already: op.value itself would be copied there to fit the
			// codec's argument.
			ups[i].value = op.value
			b, err = c.encode(op.key, &ups[i].value)
		} else {
			b, err = c.encode(op.key, op.value)
		}
		if err != nil {
			return 0, err
		}
		bops[i] = backend.Op{Key: op.key, Value: b, TTL: ttl}
		ups[i].value, ups[i].err = c.local(op.key, op.value, b)
		ups[i].expires = c.expiresAfter(ttl)
	}
	if o.ttlSet && o.ttl <= 0 {
		return 0, invalid("WithTTL(%v): not positive", o.ttl)
	}
	var bconds []backend.Condition
	if o.ifSet {
		for _, k := range keys {
			bconds = append(bconds, c.condition(k, o.ifRevision))
		}
	}
	for _, cd := range conds {
		if cd.key == "" {
			return 0, invalid("condition on an empty key")
		}
		bconds = append(bconds, c.condition(cd.key, cd.rev))
	}
	var head backend.Head
	err := c.write(ctx, keys, o, func(ctx context.Context, leases []locker.Lease, w *locker.Waiter) (err error) {
		head, err = c.commit(ctx, backend.Batch{Ops: bops, Conditions: bconds, Leases: leases, Waiter: w}, ups)
		return err
	})
	return head.Revision, err
}

// condition requires key to be at rev (0: absent). When the local copy
// holds the key at rev, the condition also names the commit that wrote it,
// so a store that reused the revision after a failover is caught.
func (c *Context[T]) condition(key string, rev uint64) backend.Condition {
	cd := backend.Condition{Key: key, Revision: rev}
	if e, ok := c.cache.current().entries.Get(key); ok && rev != 0 && e.rev == rev && !e.deleted() {
		cd.Commit = e.commit
	}
	return cd
}
