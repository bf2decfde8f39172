package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

// Load returns a consistent snapshot: the head and the entries are read in
// one read transaction, so they show one state of the file.
func (b *Backend) Load(ctx context.Context, name string) (backend.Snapshot, error) {
	op := fmt.Sprintf("load %q", name)
	if err := b.begin(ctx, op); err != nil {
		return backend.Snapshot{}, err
	}
	var snap backend.Snapshot
	err := b.readTx(ctx, func(ctx context.Context, c *dbConn) error {
		snap = backend.Snapshot{}
		found, err := readHead(ctx, c, name, &snap.Head, &snap.Codec)
		if err != nil || !found {
			return err
		}
		rows, err := c.query(ctx, sqlEntries, name)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e backend.Entry
			var rev int64
			var expires sql.NullInt64
			if err := rows.Scan(&e.Key, &e.Value, &rev, &e.Commit, &expires); err != nil {
				return err
			}
			e.Revision = uint64(rev)
			e.Expires = msTime(expires)
			if e.Value == nil {
				e.Value = []byte{}
			}
			snap.Entries = append(snap.Entries, e)
		}
		return rows.Err()
	})
	if err != nil {
		return backend.Snapshot{}, b.wrap(ctx, op, err)
	}
	return snap, nil
}

// readHead reads the head and codec of context name into h and codec. It
// reports false, and leaves h zero, when the context has no row or no
// epoch (it has only taken locks): such a context reads as never written.
func readHead(ctx context.Context, conn *dbConn, name string, h *backend.Head, codec *string) (bool, error) {
	var epoch, commit, parent, c string
	var rev int64
	err := conn.scan(ctx, sqlHead, []any{name}, &epoch, &rev, &commit, &parent, &c)
	if errors.Is(err, sql.ErrNoRows) || err == nil && epoch == "" {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	*h = backend.Head{Epoch: epoch, Revision: uint64(rev), Commit: commit, Parent: parent}
	*codec = c
	return true, nil
}

// Get reads one entry with one statement.
func (b *Backend) Get(ctx context.Context, name, key string) (backend.Entry, error) {
	op := fmt.Sprintf("get %q of %q", key, name)
	if err := b.begin(ctx, op); err != nil {
		return backend.Entry{}, err
	}
	e := backend.Entry{Key: key}
	var rev int64
	var expires sql.NullInt64
	err := b.read(ctx, func(c *dbConn) error {
		return c.scan(ctx, sqlGet, []any{name, key}, &e.Value, &rev, &e.Commit, &expires)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return backend.Entry{}, fmt.Errorf("sqlite: %s: %w", op, backend.ErrNotFound)
	}
	if err != nil {
		return backend.Entry{}, b.wrap(ctx, op, err)
	}
	e.Revision = uint64(rev)
	e.Expires = msTime(expires)
	if e.Value == nil {
		e.Value = []byte{}
	}
	return e, nil
}

// Revision returns the context's head with one statement.
func (b *Backend) Revision(ctx context.Context, name string) (backend.Head, error) {
	op := fmt.Sprintf("revision of %q", name)
	if err := b.begin(ctx, op); err != nil {
		return backend.Head{}, err
	}
	var h backend.Head
	var codec string
	err := b.read(ctx, func(c *dbConn) error {
		h = backend.Head{}
		_, err := readHead(ctx, c, name, &h, &codec)
		return err
	})
	if err != nil {
		return backend.Head{}, b.wrap(ctx, op, err)
	}
	return h, nil
}

// Commit applies the batch in one write transaction, without publishing.
func (b *Backend) Commit(ctx context.Context, name string, bt backend.Batch) (backend.Head, error) {
	return b.commit(ctx, name, bt, "")
}

// CommitAndPublish applies the batch and appends its event to the message
// log of channel in the same write transaction: subscribers of channel in
// every process read it from there, so the event is published if and only
// if the commit happened, and events of one context are published in
// revision order. It fails with an error matching errors.ErrUnsupported if
// Options.DisableAtomicPublish is set.
func (b *Backend) CommitAndPublish(ctx context.Context, name string, bt backend.Batch, channel string) (backend.Head, error) {
	if b.opts.DisableAtomicPublish {
		return backend.Head{}, unsupported(fmt.Sprintf("commit to %q", name), "DisableAtomicPublish")
	}
	if channel == "" {
		return backend.Head{}, fmt.Errorf("sqlite: commit to %q: empty channel", name)
	}
	return b.commit(ctx, name, bt, channel)
}

// commit checks and applies bt in one write transaction and, if channel is
// not empty, publishes its event there in the same transaction.
func (b *Backend) commit(ctx context.Context, name string, bt backend.Batch, channel string) (backend.Head, error) {
	op := fmt.Sprintf("commit to %q", name)
	if err := b.begin(ctx, op); err != nil {
		return backend.Head{}, err
	}
	if err := validateBatch(bt); err != nil {
		return backend.Head{}, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	if b.opts.DisableExpiry {
		if err := backend.NoTTL(bt); err != nil {
			return backend.Head{}, fmt.Errorf("sqlite: %s: %w (switched off by Options.DisableExpiry)", op, err)
		}
	}
	// The event body does not depend on the head: build it before the
	// write lock is taken.
	body := backend.EncodeEventBody(bt.Origin, backend.EventFromBatch(backend.Head{}, bt).Changes)
	id := b.newCommitID()
	var head backend.Head
	// refusal is a conflict found after a reap that was kept: the write
	// transaction commits the reap, and the batch is refused.
	var refusal error
	// A condition that fails now makes the commit fail now: checked on a
	// read connection first, so that writers who lost a race (Modify's
	// retries) do not queue for the write lock only to fail there.
	err := b.precheck(ctx, name, bt.Conditions)
	if err == nil {
		err = b.writeTx(ctx, func(ctx context.Context, c *dbConn, now int64) error {
			refusal = nil
			var cur backend.Head
			var codec string
			if _, err := readHead(ctx, c, name, &cur, &codec); err != nil {
				return err
			}
			// Keys due by now go first, in a commit of their own: the
			// batch (and its conditions) sees them gone, as every
			// reader will.
			ev, err := b.reap(ctx, c, name, &cur, now, channel)
			if err != nil {
				return err
			}
			if err := b.check(ctx, c, name, bt, codec, now); err != nil {
				// A condition judged the reaped keys absent: the reap
				// stays, or a read after this refusal would find them
				// again. Other refusals saw nothing of it and take it
				// back with the rest.
				if ev.Revision != 0 && errors.Is(err, backend.ErrConflict) {
					refusal = err
					return nil
				}
				return err
			}
			head = backend.Head{Epoch: cur.Epoch, Revision: cur.Revision + 1, Commit: id, Parent: cur.Commit}
			fresh := cur.Epoch == ""
			if fresh {
				head = backend.Head{Epoch: randomID(), Revision: 1, Commit: id}
			}
			rev := int64(head.Revision)
			if _, err := c.exec(ctx, sqlSetHead, name, head.Epoch, rev, head.Commit, head.Parent, bt.Codec); err != nil {
				return err
			}
			for _, o := range bt.Ops {
				var err error
				if o.Delete {
					_, err = c.exec(ctx, sqlDelete, name, o.Key)
				} else {
					_, err = c.exec(ctx, sqlPut, name, o.Key, blob(o.Value), rev, id, expiresMs(now, o.TTL))
				}
				if err != nil {
					return err
				}
			}
			if b.opts.DisableChangeLog && channel == "" {
				return nil
			}
			event, err := backend.FrameEvent(head, body)
			if err != nil {
				return err
			}
			if !b.opts.DisableChangeLog {
				if err := b.logChange(ctx, c, name, head.Revision, event, fresh); err != nil {
					return err
				}
			}
			if channel != "" {
				return b.appendMessage(ctx, c, channel, event)
			}
			return nil
		})
	}
	if err == nil && refusal != nil {
		if channel != "" {
			b.poll.kick() // the kept reap's event
		}
		err = refusal
	}
	if err != nil {
		if refused(err) {
			return backend.Head{}, fmt.Errorf("sqlite: %s: %w", op, err)
		}
		return backend.Head{}, b.wrap(ctx, op, err)
	}
	if channel != "" {
		b.poll.kick()
	}
	return head, nil
}

// precheck returns a conflict if one of conds does not hold now, read in
// one read transaction. A conflict is an answer the commit may give at any
// moment of its call at which the condition does not hold, so this one is
// exact; conditions that hold are checked again under the write lock, and
// so are those on a key that is due and would hold once it is reaped
// (checkCondition): only the write transaction reaps, and a refusal that
// judged a key absent must leave it reaped.
func (b *Backend) precheck(ctx context.Context, name string, conds []backend.Condition) error {
	if len(conds) == 0 {
		return nil
	}
	now := time.Now().UnixMilli()
	check := func(ctx context.Context, c *dbConn) error {
		for _, cond := range conds {
			if err := checkCondition(ctx, c, name, cond, now); err != nil {
				return err
			}
		}
		return nil
	}
	if len(conds) == 1 {
		return b.read(ctx, func(c *dbConn) error { return check(context.WithoutCancel(ctx), c) })
	}
	return b.readTx(ctx, check)
}

// checkCondition reads the key of cond and returns a conflict if cond does
// not hold at now. A key that is due by then but not reaped yet (only the
// precheck sees one: the write transaction reaps first) is present until
// its reap and absent after, so cond fails only if it fails in both
// states: a refusal made here reaps nothing, and is linearizable at this
// read, where the key is present.
func checkCondition(ctx context.Context, c *dbConn, name string, cond backend.Condition, now int64) error {
	var rev int64
	var commit string
	var due bool
	err := c.scan(ctx, sqlWritten, []any{name, cond.Key, now}, &rev, &commit, &due)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if due && cond.Revision == 0 {
		return nil // holds once the key is reaped
	}
	if have := uint64(rev); have != cond.Revision {
		return fmt.Errorf("key %q is at revision %d, condition wants %d: %w", cond.Key, have, cond.Revision, backend.ErrConflict)
	}
	if cond.Commit != "" && cond.Revision != 0 && commit != cond.Commit {
		return fmt.Errorf("key %q was written at revision %d by commit %q, condition wants %q: %w", cond.Key, rev, commit, cond.Commit, backend.ErrConflict)
	}
	return nil
}

// check reports why bt cannot commit to context name, whose recorded codec
// is codec: a codec mismatch, a condition that does not hold, and (for a
// lock-aware store) a lease no longer held or a key locked by another
// holder. It runs in the commit's write transaction.
func (b *Backend) check(ctx context.Context, c *dbConn, name string, bt backend.Batch, codec string, now int64) error {
	if codec != "" && bt.Codec != "" && bt.Codec != codec {
		return fmt.Errorf("batch codec %q, context codec %q: %w", bt.Codec, codec, backend.ErrCodecMismatch)
	}
	for _, cond := range bt.Conditions {
		if err := checkCondition(ctx, c, name, cond, now); err != nil {
			return err
		}
	}
	if b.opts.DisableLockAwareCommit {
		return nil
	}
	// One statement reads every live lock of the context: usually none.
	live, err := liveLocks(ctx, c, name, now)
	if err != nil {
		return err
	}
	tokens := make(map[string]bool, len(bt.Leases))
	for _, l := range bt.Leases {
		if l.Token == "" || live[l.Key] != l.Token {
			return fmt.Errorf("lease on key %q (fence %d): %w", l.Key, l.Fence, locker.ErrNotHeld)
		}
		tokens[l.Token] = true
	}
	for _, o := range bt.Ops {
		if token, locked := live[o.Key]; locked && !tokens[token] {
			return fmt.Errorf("key %q: %w", o.Key, backend.ErrLocked)
		}
	}
	return nil
}

// liveLocks returns the token of every live lock of context name, by key.
func liveLocks(ctx context.Context, c *dbConn, name string, now int64) (map[string]string, error) {
	rows, err := c.query(ctx, sqlLiveTokens, name, now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var live map[string]string
	for rows.Next() {
		var key, token string
		if err := rows.Scan(&key, &token); err != nil {
			return nil, err
		}
		if live == nil {
			live = make(map[string]string)
		}
		live[key] = token
	}
	return live, rows.Err()
}

// lockHolder returns the token of the live lock on key, or "" if the key is
// free.
func lockHolder(ctx context.Context, c *dbConn, name, key string, now int64) (string, error) {
	var token string
	err := c.scan(ctx, sqlLockHolder, []any{name, key, now}, &token)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return token, err
}

// refused reports whether err is a commit's refusal rather than a failure
// of the database.
func refused(err error) bool {
	for _, target := range []error{backend.ErrConflict, backend.ErrLocked, backend.ErrCodecMismatch, locker.ErrNotHeld} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
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

// blob returns p as a value SQLite stores as a blob: never nil, which the
// driver would bind as NULL.
func blob(p []byte) []byte {
	if p == nil {
		return []byte{}
	}
	return p
}
