package memory

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

// contextData is the stored state of one context: what a Redis flush
// loses. Values held here are private copies that are never modified in
// place, so they can be shared with the change log and a checkpoint and be
// copied for callers outside the lock.
type contextData struct {
	epoch    string
	revision uint64
	commit   string // id of the commit that made revision
	parent   string // id of the commit before it
	codec    string
	entries  map[string]storedEntry
	log      *changeLog // nil when the change log is switched off
}

func (d *contextData) head() backend.Head {
	return backend.Head{Epoch: d.epoch, Revision: d.revision, Commit: d.commit, Parent: d.parent}
}

type storedEntry struct {
	value    []byte
	revision uint64
	commit   string    // id of the commit that wrote it
	expires  time.Time // by Options.Clock; zero if it does not expire
}

// Load returns a consistent snapshot of context name. Entries are copies
// the caller owns, in no particular order.
func (b *Backend) Load(ctx context.Context, name string) (backend.Snapshot, error) {
	if err := begin(ctx, fmt.Sprintf("load %q", name)); err != nil {
		return backend.Snapshot{}, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return backend.Snapshot{}, errClosed(fmt.Sprintf("load %q", name))
	}
	var snap backend.Snapshot
	if sp := b.spaces[name]; sp != nil && sp.data != nil {
		d := sp.data
		snap.Head = d.head()
		snap.Codec = d.codec
		snap.Entries = make([]backend.Entry, 0, len(d.entries))
		for k, e := range d.entries {
			snap.Entries = append(snap.Entries, backend.Entry{Key: k, Value: e.value, Revision: e.revision, Commit: e.commit, Expires: e.expires})
		}
	}
	b.mu.Unlock()
	// Stored values are never modified in place, so copying them after
	// unlocking still gives the snapshot's bytes, and commits need not wait
	// for the copy of a large context.
	for i := range snap.Entries {
		snap.Entries[i].Value = cloneBytes(snap.Entries[i].Value)
	}
	return snap, nil
}

// Get returns a copy of one entry, or an error matching backend.ErrNotFound.
func (b *Backend) Get(ctx context.Context, name, key string) (backend.Entry, error) {
	op := fmt.Sprintf("get %q in %q", key, name)
	if err := begin(ctx, op); err != nil {
		return backend.Entry{}, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return backend.Entry{}, errClosed(op)
	}
	var (
		e  storedEntry
		ok bool
	)
	if sp := b.spaces[name]; sp != nil && sp.data != nil {
		e, ok = sp.data.entries[key]
	}
	b.mu.Unlock()
	if !ok {
		return backend.Entry{}, fmt.Errorf("memory: %s: %w", op, backend.ErrNotFound)
	}
	return backend.Entry{Key: key, Value: cloneBytes(e.value), Revision: e.revision, Commit: e.commit, Expires: e.expires}, nil
}

// GetMany returns copies of the entries of those of keys that exist, in
// the order of keys, read at one moment (backend.MultiGetter).
func (b *Backend) GetMany(ctx context.Context, name string, keys []string) ([]backend.Entry, error) {
	op := fmt.Sprintf("get %d keys in %q", len(keys), name)
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	out := make([]backend.Entry, 0, len(keys))
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errClosed(op)
	}
	if sp := b.spaces[name]; sp != nil && sp.data != nil {
		for _, k := range keys {
			if e, ok := sp.data.entries[k]; ok {
				out = append(out, backend.Entry{Key: k, Value: e.value, Revision: e.revision, Commit: e.commit, Expires: e.expires})
			}
		}
	}
	b.mu.Unlock()
	// Stored values are never modified in place: copy them unlocked.
	for i := range out {
		out[i].Value = cloneBytes(out[i].Value)
	}
	return out, nil
}

// Revision returns the head of context name: an empty Epoch and revision 0
// if it has no data.
func (b *Backend) Revision(ctx context.Context, name string) (backend.Head, error) {
	op := fmt.Sprintf("revision of %q", name)
	if err := begin(ctx, op); err != nil {
		return backend.Head{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return backend.Head{}, errClosed(op)
	}
	if sp := b.spaces[name]; sp != nil && sp.data != nil {
		return sp.data.head(), nil
	}
	return backend.Head{}, nil
}

// Commit applies batch bt to context name atomically, as described on
// backend.Store.Commit. Unless Options.DisableLockAwareCommit is set it
// also refuses the batch with locker.ErrNotHeld if one of its leases is no
// longer held, and with backend.ErrLocked if it writes a key that another
// holder has locked. On any error nothing is written.
func (b *Backend) Commit(ctx context.Context, name string, bt backend.Batch) (backend.Head, error) {
	return b.commit(ctx, name, bt, "", false)
}

// CommitAndPublish commits like Commit and, in the same step, publishes the
// commit's event (backend.EncodeEvent of backend.EventFromBatch) on channel
// to this Backend's subscribers. Because both happen under one lock, a
// context's events are published in revision order and none is lost
// between commit and publish. It fails with an error matching
// errors.ErrUnsupported if Options.DisableAtomicPublish is set.
func (b *Backend) CommitAndPublish(ctx context.Context, name string, bt backend.Batch, channel string) (backend.Head, error) {
	if b.opts.DisableAtomicPublish {
		return backend.Head{}, unsupported(fmt.Sprintf("commit and publish to %q", name), "DisableAtomicPublish")
	}
	return b.commit(ctx, name, bt, channel, true)
}

func (b *Backend) commit(ctx context.Context, name string, bt backend.Batch, channel string, publish bool) (backend.Head, error) {
	op := fmt.Sprintf("commit to %q", name)
	if err := begin(ctx, op); err != nil {
		return backend.Head{}, err
	}
	if err := validateBatch(bt); err != nil {
		return backend.Head{}, fmt.Errorf("memory: %s: %w", op, err)
	}
	// Copy on the way in, before taking the lock: the caller may reuse its
	// slices as soon as Commit returns.
	bt.Ops = cloneOps(bt.Ops)

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return backend.Head{}, errClosed(op)
	}
	if b.opts.DisableExpiry && hasTTL(bt) {
		return backend.Head{}, unsupported(op, "DisableExpiry")
	}
	sp := b.space(name)
	now := b.opts.Clock()
	// Keys whose time has come go first, in a commit of their own: the
	// batch sees them gone, as every reader will.
	if _, err := b.reap(sp, now, channel, publish); err != nil {
		return backend.Head{}, fmt.Errorf("memory: %s: %w", op, err)
	}
	d := sp.data
	if d == nil {
		d = &contextData{}
	}
	if err := b.check(sp, d, bt); err != nil {
		return backend.Head{}, fmt.Errorf("memory: %s: %w", op, err)
	}
	ev, err := b.apply(sp, backend.Batch{Ops: bt.Ops, Codec: bt.Codec, Origin: bt.Origin, EventValueLimit: bt.EventValueLimit}, now, channel, publish)
	if err != nil {
		return backend.Head{}, fmt.Errorf("memory: %s: %w", op, err)
	}
	b.served(name, sp, bt)
	return ev.Head, nil
}

// apply writes bt's ops to the context of sp as its next revision, at
// now, appends the event to the change log and publishes it. Nothing is
// written if it fails. b.mu must be held.
func (b *Backend) apply(sp *space, bt backend.Batch, now time.Time, channel string, publish bool) (backend.Event, error) {
	d := sp.data
	if d == nil {
		d = &contextData{}
	}
	head := backend.Head{Epoch: d.epoch, Revision: d.revision + 1, Commit: randomID(), Parent: d.commit}
	if head.Epoch == "" {
		head.Epoch = randomID()
	}
	event := backend.EventFromBatch(head, bt)
	event.ExpiresAt(bt, now)
	var payload []byte
	if publish {
		b.subMu.Lock()
		defer b.subMu.Unlock()
		// Encoded only for someone: a Context alone on its channel skips
		// its own echoes (SkipOwnEchoes). The ids EncodeEvent checks are
		// this store's own, always short enough, so skipping it refuses
		// nothing it would have accepted.
		if b.receives(channel, bt.Origin) {
			var err error
			if payload, err = backend.EncodeEvent(event); err != nil {
				return backend.Event{}, err
			}
		}
	}
	if sp.data == nil {
		sp.data = &contextData{entries: make(map[string]storedEntry)}
		if !b.opts.DisableChangeLog {
			sp.data.log = newChangeLog(b.opts.ChangeLogSize)
		}
		d = sp.data
	}
	if d.codec == "" {
		d.codec = bt.Codec
	}
	d.epoch, d.revision, d.commit, d.parent = head.Epoch, head.Revision, head.Commit, head.Parent
	for _, o := range bt.Ops {
		switch {
		case o.Delete:
			delete(d.entries, o.Key)
		case o.TTL > 0:
			d.entries[o.Key] = storedEntry{value: o.Value, revision: head.Revision, commit: head.Commit, expires: now.Add(o.TTL)}
		default:
			d.entries[o.Key] = storedEntry{value: o.Value, revision: head.Revision, commit: head.Commit}
		}
	}
	if d.log != nil {
		d.log.append(event)
	}
	if payload != nil {
		// payload was encoded for this delivery alone (b.subMu is held).
		b.deliver(channel, payload, true, bt.Origin)
	}
	return event, nil
}

// hasTTL reports whether a batch puts a key with a TTL.
func hasTTL(bt backend.Batch) bool {
	return slices.ContainsFunc(bt.Ops, func(o backend.Op) bool { return !o.Delete && o.TTL != 0 })
}

// reap deletes the keys of sp's context that have expired by now, in one
// commit (with no origin: the store made it), and returns its event; the
// zero Event if none had. b.mu must be held.
func (b *Backend) reap(sp *space, now time.Time, channel string, publish bool) (backend.Event, error) {
	d := sp.data
	if d == nil {
		return backend.Event{}, nil
	}
	var expired []backend.Op
	for k, e := range d.entries {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			expired = append(expired, backend.Op{Key: k, Delete: true})
		}
	}
	if len(expired) == 0 {
		return backend.Event{}, nil
	}
	slices.SortFunc(expired, func(a, b backend.Op) int { return strings.Compare(a.Key, b.Key) })
	return b.apply(sp, backend.Batch{Ops: expired, Codec: d.codec}, now, channel, publish)
}

// Expire deletes the keys of context name that have expired by the store's
// clock (Options.Clock) in one commit, published on channel when atomic
// publishing is on, as backend.Expirer describes. It fails with an error
// matching errors.ErrUnsupported if Options.DisableExpiry is set.
func (b *Backend) Expire(ctx context.Context, name, channel string) (backend.Event, time.Time, time.Time, error) {
	op := fmt.Sprintf("expire keys of %q", name)
	if b.opts.DisableExpiry {
		return backend.Event{}, time.Time{}, time.Time{}, unsupported(op, "DisableExpiry")
	}
	if err := begin(ctx, op); err != nil {
		return backend.Event{}, time.Time{}, time.Time{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return backend.Event{}, time.Time{}, time.Time{}, errClosed(op)
	}
	sp := b.space(name)
	now := b.opts.Clock()
	publish := channel != "" && !b.opts.DisableAtomicPublish
	ev, err := b.reap(sp, now, channel, publish)
	if err != nil {
		return backend.Event{}, time.Time{}, time.Time{}, fmt.Errorf("memory: %s: %w", op, err)
	}
	var next time.Time
	if d := sp.data; d != nil {
		for _, e := range d.entries {
			if !e.expires.IsZero() && (next.IsZero() || e.expires.Before(next)) {
				next = e.expires
			}
		}
	}
	return ev, next, now, nil
}

// check reports why bt cannot commit to the context of sp, whose data is d
// (empty if it has none). b.mu must be held. Lock checks come before the
// conditions, so a writer that must wait for a lock or its turn is told
// to wait (ErrLocked) rather than to re-read (ErrConflict). On a refusal a
// fair, lock-aware store queues the batch's Waiter on the keys concerned.
func (b *Backend) check(sp *space, d *contextData, bt backend.Batch) error {
	if d.codec != "" && bt.Codec != "" && bt.Codec != d.codec {
		return fmt.Errorf("batch codec %q, context codec %q: %w", bt.Codec, d.codec, backend.ErrCodecMismatch)
	}
	lockAware := !b.opts.DisableLockAwareCommit
	fair := lockAware && !b.opts.DisableFairLocks
	now := b.opts.Clock()
	leased := make(map[string]bool, len(bt.Leases))
	if lockAware {
		tokens := make(map[string]bool, len(bt.Leases))
		for _, l := range bt.Leases {
			if !sp.holds(l.Key, l.Token, now) {
				return fmt.Errorf("lease on key %q (fence %d): %w", l.Key, l.Fence, locker.ErrNotHeld)
			}
			tokens[l.Token] = true
			leased[l.Key] = true
		}
		var blocked error
		for _, o := range bt.Ops {
			if leased[o.Key] {
				continue
			}
			var why string
			switch lk := sp.liveLock(o.Key, now); {
			case lk != nil && !tokens[lk.token]:
				why = "locked"
			case fair && sp.queuedBefore(o.Key, bt.Waiter, now):
				why = "another waiter's turn"
			default:
				continue
			}
			if fair && bt.Waiter != nil {
				sp.enqueue(o.Key, *bt.Waiter, now)
			}
			if blocked == nil {
				blocked = fmt.Errorf("key %q (%s): %w", o.Key, why, backend.ErrLocked)
			}
		}
		if blocked != nil {
			return blocked
		}
	}
	for _, c := range bt.Conditions {
		var have uint64
		var commit string
		e, exists := d.entries[c.Key]
		if exists {
			have, commit = e.revision, e.commit
		}
		// The refusal carries the key's entry, so the writer need not
		// read it again (backend.ConflictError).
		conflict := &backend.ConflictError{Key: c.Key, Exists: exists, Current: backend.Entry{Key: c.Key}}
		if exists {
			conflict.Current = backend.Entry{Key: c.Key, Value: cloneBytes(e.value), Revision: e.revision, Commit: e.commit}
		}
		var err error
		switch {
		case have != c.Revision:
			err = fmt.Errorf("key %q is at revision %d, condition wants %d: %w", c.Key, have, c.Revision, conflict)
		case c.Commit != "" && c.Revision != 0 && commit != c.Commit:
			err = fmt.Errorf("key %q was written at revision %d by commit %q, condition wants %q: %w", c.Key, have, commit, c.Commit, conflict)
		default:
			continue
		}
		if fair && bt.Waiter != nil {
			// The writer lost a race: keep its place for the retry.
			for _, o := range bt.Ops {
				if !leased[o.Key] {
					sp.enqueue(o.Key, *bt.Waiter, now)
				}
			}
		}
		return err
	}
	return nil
}

// served removes a committed batch's waiter from the queues of its keys,
// and wakes the next waiter where it was first. b.mu must be held.
func (b *Backend) served(name string, sp *space, bt backend.Batch) {
	if bt.Waiter == nil || b.opts.DisableLockAwareCommit || b.opts.DisableFairLocks {
		return
	}
	for _, o := range bt.Ops {
		if sp.leave(o.Key, bt.Waiter.ID) {
			b.notifyRelease(name, o.Key)
		}
	}
}

// validateBatch rejects batches no store could apply.
func validateBatch(bt backend.Batch) error {
	if len(bt.Ops) == 0 {
		return errors.New("batch has no ops")
	}
	seen := make(map[string]bool, len(bt.Ops))
	for _, o := range bt.Ops {
		if o.Key == "" {
			return errors.New("batch has an op with an empty key")
		}
		if seen[o.Key] {
			return fmt.Errorf("batch writes key %q twice", o.Key)
		}
		seen[o.Key] = true
	}
	for _, c := range bt.Conditions {
		if c.Key == "" {
			return errors.New("batch has a condition with an empty key")
		}
	}
	return nil
}

// cloneOps copies ops and their values, so the store holds bytes no caller
// can reach.
func cloneOps(ops []backend.Op) []backend.Op {
	ops = slices.Clone(ops)
	for i := range ops {
		if ops[i].Delete {
			ops[i].Value = nil
		} else {
			ops[i].Value = cloneBytes(ops[i].Value)
		}
	}
	return ops
}
