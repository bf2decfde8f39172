package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

// Load returns a consistent snapshot, read by one statement.
func (b *Backend) Load(ctx context.Context, name string) (backend.Snapshot, error) {
	op := fmt.Sprintf("load %q", name)
	if err := b.begin(ctx, op); err != nil {
		return backend.Snapshot{}, err
	}
	if err := checkName(name); err != nil {
		return backend.Snapshot{}, fmt.Errorf("postgres: %s: %w", op, err)
	}
	rows, err := b.pool.Query(ctx, b.sql.load, []byte(name))
	if err != nil {
		return backend.Snapshot{}, wrap(ctx, op, err)
	}
	defer rows.Close()
	var snap backend.Snapshot
	var (
		meta                bool
		epoch, codec        string
		rev                 int64
		commit, parent      string
		key, value          []byte
		expires             *time.Time
		haveMeta, haveEntry bool
	)
	for rows.Next() {
		if err := rows.Scan(&meta, &epoch, &rev, &codec, &commit, &parent, &key, &value, &expires); err != nil {
			return backend.Snapshot{}, wrap(ctx, op, err)
		}
		if meta {
			haveMeta = true
			snap.Head = backend.Head{Epoch: epoch, Revision: uint64(rev), Commit: commit, Parent: parent}
			snap.Codec = codec
			continue
		}
		haveEntry = true
		// Scan reuses nothing across rows for []byte targets of a
		// binary column, but the copy makes ownership plain.
		snap.Entries = append(snap.Entries, backend.Entry{Key: string(key), Value: append([]byte{}, value...), Revision: uint64(rev), Commit: commit, Expires: timeOf(expires)})
	}
	if err := rows.Err(); err != nil {
		return backend.Snapshot{}, wrap(ctx, op, err)
	}
	if haveEntry && !haveMeta {
		return backend.Snapshot{}, fmt.Errorf("postgres: %s: entries without a context row", op)
	}
	return snap, nil
}

// Get reads one entry.
func (b *Backend) Get(ctx context.Context, name, key string) (backend.Entry, error) {
	op := fmt.Sprintf("get %q of %q", key, name)
	if err := b.begin(ctx, op); err != nil {
		return backend.Entry{}, err
	}
	if err := checkName(name); err != nil {
		return backend.Entry{}, fmt.Errorf("postgres: %s: %w", op, err)
	}
	e := backend.Entry{Key: key}
	var rev int64
	var expires *time.Time
	err := b.pool.QueryRow(ctx, b.sql.get, []byte(name), []byte(key)).Scan(&e.Value, &rev, &e.Commit, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return backend.Entry{}, fmt.Errorf("postgres: %s: %w", op, backend.ErrNotFound)
	}
	if err != nil {
		return backend.Entry{}, wrap(ctx, op, err)
	}
	if e.Value == nil {
		e.Value = []byte{}
	}
	e.Revision = uint64(rev)
	e.Expires = timeOf(expires)
	return e, nil
}

// timeOf returns *t, or the zero time for nil (NULL).
func timeOf(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// Revision returns the context's head.
func (b *Backend) Revision(ctx context.Context, name string) (backend.Head, error) {
	op := fmt.Sprintf("revision of %q", name)
	if err := b.begin(ctx, op); err != nil {
		return backend.Head{}, err
	}
	if err := checkName(name); err != nil {
		return backend.Head{}, fmt.Errorf("postgres: %s: %w", op, err)
	}
	var h backend.Head
	var rev int64
	err := b.pool.QueryRow(ctx, b.sql.revision, []byte(name)).Scan(&h.Epoch, &rev, &h.Commit, &h.Parent)
	if errors.Is(err, pgx.ErrNoRows) {
		return backend.Head{}, nil
	}
	if err != nil {
		return backend.Head{}, wrap(ctx, op, err)
	}
	h.Revision = uint64(rev)
	return h, nil
}

// Commit applies the batch in one transaction, without notifying.
func (b *Backend) Commit(ctx context.Context, name string, bt backend.Batch) (backend.Head, error) {
	return b.commit(ctx, name, bt, "")
}

// CommitAndPublish applies the batch and, in the same transaction, sends
// its event with NOTIFY, which PostgreSQL delivers when (and only if) the
// transaction commits.
func (b *Backend) CommitAndPublish(ctx context.Context, name string, bt backend.Batch, channel string) (backend.Head, error) {
	if b.opts.DisableAtomicPublish {
		return backend.Head{}, fmt.Errorf("postgres: commit to %q: atomic publish is switched off: %w", name, errors.ErrUnsupported)
	}
	if channel == "" {
		return backend.Head{}, fmt.Errorf("postgres: commit to %q: empty channel", name)
	}
	return b.commit(ctx, name, bt, channel)
}

func (b *Backend) commit(ctx context.Context, name string, bt backend.Batch, channel string) (backend.Head, error) {
	op := fmt.Sprintf("commit to %q", name)
	if err := b.begin(ctx, op); err != nil {
		return backend.Head{}, err
	}
	if err := validBatch(name, bt); err != nil {
		return backend.Head{}, fmt.Errorf("postgres: %s: %w", op, err)
	}
	if b.opts.DisableExpiry {
		if err := backend.NoTTL(bt); err != nil {
			return backend.Head{}, fmt.Errorf("postgres: %s: %w (DisableExpiry)", op, err)
		}
	}
	checkLocks := !b.opts.DisableLockAwareCommit
	leases := bt.Leases
	if !checkLocks {
		leases = nil // a store that does not check locks ignores leases
	}
	// Never nil slices: pgx sends a nil slice as NULL, not as an empty
	// array.
	putKeys, putValues, putTTLs := make([][]byte, 0, len(bt.Ops)), make([][]byte, 0, len(bt.Ops)), make([]int64, 0, len(bt.Ops))
	delKeys, opKeys := make([][]byte, 0), make([][]byte, 0, len(bt.Ops))
	for _, o := range bt.Ops {
		opKeys = append(opKeys, []byte(o.Key))
		if o.Delete {
			delKeys = append(delKeys, []byte(o.Key))
			continue
		}
		v := o.Value
		if v == nil {
			v = []byte{}
		}
		putKeys = append(putKeys, []byte(o.Key))
		putValues = append(putValues, v)
		putTTLs = append(putTTLs, micros(o.TTL))
	}
	condKeys, condRevs, condCommits := make([][]byte, 0, len(bt.Conditions)), make([]int64, 0, len(bt.Conditions)), make([]string, 0, len(bt.Conditions))
	for _, c := range bt.Conditions {
		condKeys = append(condKeys, []byte(c.Key))
		condRevs = append(condRevs, int64(c.Revision))
		condCommits = append(condCommits, c.Commit)
	}
	leaseKeys, leaseTokens, leaseFences := make([][]byte, 0, len(leases)), make([]string, 0, len(leases)), make([]int64, 0, len(leases))
	for _, l := range leases {
		leaseKeys = append(leaseKeys, []byte(l.Key))
		leaseTokens = append(leaseTokens, l.Token)
		leaseFences = append(leaseFences, int64(l.Fence))
	}
	body := backend.EncodeEventBody(bt.Origin, backend.EventFromBatch(backend.Head{}, bt).Changes)
	var pgch string
	if channel != "" {
		pgch = pgChannel(b.opts.Schema, channel)
	}
	id := b.newID() // the commit's id; a new context's epoch is another
	var (
		conflict           *int32
		epoch, cmt, parent *string
		rev                *int64
	)
	err := b.pool.QueryRow(ctx, b.sql.commit,
		[]byte(name), bt.Codec, b.newID(), id,
		putKeys, putValues, delKeys, opKeys,
		condKeys, condRevs, condCommits,
		checkLocks, leaseKeys, leaseTokens, leaseFences,
		body, !b.opts.DisableChangeLog, b.opts.ChangeLogLength, pgch, maxNotifyPayload,
		putTTLs, b.newID(),
	).Scan(&conflict, &epoch, &rev, &cmt, &parent)
	if err != nil {
		return backend.Head{}, commitError(ctx, op, bt, leases, err)
	}
	if conflict != nil {
		// Returned rather than raised, so that the reap the conditions
		// saw was committed.
		key := "?"
		if i := int(*conflict); i >= 0 && i < len(bt.Conditions) {
			key = bt.Conditions[i].Key
		}
		return backend.Head{}, fmt.Errorf("postgres: %s: key %q changed: %w", op, key, backend.ErrConflict)
	}
	if epoch == nil || rev == nil || cmt == nil || parent == nil {
		return backend.Head{}, fmt.Errorf("postgres: %s: the commit function returned no head", op)
	}
	return backend.Head{Epoch: *epoch, Revision: uint64(*rev), Commit: *cmt, Parent: *parent}, nil
}

// commitError translates a refusal the commit function raised. A failed
// condition is not raised but returned (commitSQL).
func commitError(ctx context.Context, op string, bt backend.Batch, leases []locker.Lease, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return wrap(ctx, op, err)
	}
	i, _ := strconv.Atoi(pgErr.Message)
	at := func(n int, key func(int) string) string {
		if i >= 0 && i < n {
			return key(i)
		}
		return "?"
	}
	switch pgErr.Code {
	case "CDX01":
		return fmt.Errorf("postgres: %s: the context is encoded with %q, not %q: %w", op, pgErr.Message, bt.Codec, backend.ErrCodecMismatch)
	case "CDN01":
		key := at(len(leases), func(i int) string { return leases[i].Key })
		return fmt.Errorf("postgres: %s: lock on %q: %w", op, key, locker.ErrNotHeld)
	case "CDL01":
		key := at(len(bt.Ops), func(i int) string { return bt.Ops[i].Key })
		return fmt.Errorf("postgres: %s: key %q: %w", op, key, backend.ErrLocked)
	}
	return wrap(ctx, op, err)
}

// validBatch refuses batches the commit must never see.
func validBatch(name string, bt backend.Batch) error {
	if err := checkName(name); err != nil {
		return err
	}
	if len(bt.Ops) == 0 {
		return errors.New("empty batch")
	}
	seen := make(map[string]struct{}, len(bt.Ops))
	for _, o := range bt.Ops {
		if err := checkKey(o.Key); err != nil {
			return err
		}
		if _, dup := seen[o.Key]; dup {
			return fmt.Errorf("key %q written twice", o.Key)
		}
		seen[o.Key] = struct{}{}
	}
	for _, c := range bt.Conditions {
		if err := checkKey(c.Key); err != nil {
			return fmt.Errorf("condition: %w", err)
		}
	}
	for _, l := range bt.Leases {
		if l.Key == "" || l.Token == "" {
			return errors.New("lease without key or token")
		}
	}
	if !printable(bt.Codec) {
		return fmt.Errorf("codec name %q is not printable text", bt.Codec)
	}
	return nil
}

// micros returns a TTL in whole microseconds, the server's resolution,
// rounded up so that a positive TTL stays one; 0 for none (0 or less).
func micros(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return int64((ttl + time.Microsecond - 1) / time.Microsecond)
}

// Expire deletes the keys of context name whose expiry has passed by the
// server's clock, in one commit with no origin that is logged and, with
// channel set and atomic publishing on, notified like any commit, and
// reads the next deadline, in one transaction (backend.Expirer). The
// returned event carries the deletes in byte order of the keys and
// Event.Time, the server's clock when it deleted them; with nothing due it
// has a zero Head. It fails with an error matching errors.ErrUnsupported if
// Options.DisableExpiry is set.
func (b *Backend) Expire(ctx context.Context, name, channel string) (backend.Event, time.Time, time.Time, error) {
	op := fmt.Sprintf("expire keys of %q", name)
	if b.opts.DisableExpiry {
		return backend.Event{}, time.Time{}, time.Time{}, fmt.Errorf("postgres: %s: expiry is switched off: %w", op, errors.ErrUnsupported)
	}
	if err := b.begin(ctx, op); err != nil {
		return backend.Event{}, time.Time{}, time.Time{}, err
	}
	if err := checkName(name); err != nil {
		return backend.Event{}, time.Time{}, time.Time{}, fmt.Errorf("postgres: %s: %w", op, err)
	}
	var pgch string
	if channel != "" && !b.opts.DisableAtomicPublish {
		pgch = pgChannel(b.opts.Schema, channel)
	}
	var (
		ev       backend.Event
		rev      *int64
		epoch    *string
		cmt, par *string
		keys     [][]byte
		now      time.Time
		next     *time.Time
	)
	err := b.pool.QueryRow(ctx, b.sql.expire, []byte(name), b.newID(), !b.opts.DisableChangeLog, b.opts.ChangeLogLength, pgch, maxNotifyPayload).
		Scan(&epoch, &rev, &cmt, &par, &keys, &now, &next)
	if err != nil {
		return backend.Event{}, time.Time{}, time.Time{}, wrap(ctx, op, err)
	}
	if len(keys) > 0 {
		ev.Head = backend.Head{Epoch: *epoch, Revision: uint64(*rev), Commit: *cmt, Parent: *par}
		ev.Time = now
		ev.Changes = make([]backend.Change, len(keys))
		for i, k := range keys {
			ev.Changes[i] = backend.Change{Key: string(k), Deleted: true}
		}
	}
	return ev, timeOf(next), now, nil
}
