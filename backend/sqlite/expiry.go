package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/contextd-go/contextd/backend"
)

// Key expiry. There is no server, so the clock that judges expiry is that
// of the process that writes: the time a transaction holding the write
// lock reads (see writeTx). The processes sharing a file share one
// machine, and so one clock; a jump of the machine's clock moves every
// deadline with it.

// reap deletes the keys of context name that are due at now, as one commit
// after head (which it advances): no origin, the deletes in byte order of
// the keys, logged and, with channel set, published like any commit. It
// returns that commit's event, with a zero Head if nothing was due. It runs
// in a write transaction; a context without an epoch has no keys.
func (b *Backend) reap(ctx context.Context, c *dbConn, name string, head *backend.Head, now int64, channel string) (backend.Event, error) {
	if head.Epoch == "" {
		return backend.Event{}, nil
	}
	rows, err := c.query(ctx, sqlDue, name, now)
	if err != nil {
		return backend.Event{}, err
	}
	var changes []backend.Change
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			rows.Close()
			return backend.Event{}, err
		}
		changes = append(changes, backend.Change{Key: key, Deleted: true})
	}
	if err := rows.Close(); err != nil {
		return backend.Event{}, err
	}
	if err := rows.Err(); err != nil || len(changes) == 0 {
		return backend.Event{}, err
	}
	if _, err := c.exec(ctx, sqlReap, name, now); err != nil {
		return backend.Event{}, err
	}
	next := backend.Head{Epoch: head.Epoch, Revision: head.Revision + 1, Commit: b.newCommitID(), Parent: head.Commit}
	// The codec is recorded already: '' keeps it.
	if _, err := c.exec(ctx, sqlSetHead, name, next.Epoch, int64(next.Revision), next.Commit, next.Parent, ""); err != nil {
		return backend.Event{}, err
	}
	ev := backend.Event{Head: next, Time: time.UnixMilli(now), Changes: changes}
	if !b.opts.DisableChangeLog || channel != "" {
		event, err := backend.FrameEvent(next, backend.EncodeEventBody("", changes))
		if err != nil {
			return backend.Event{}, err
		}
		if !b.opts.DisableChangeLog {
			if err := b.logChange(ctx, c, name, next.Revision, event, false); err != nil {
				return backend.Event{}, err
			}
		}
		if channel != "" {
			if err := b.appendMessage(ctx, c, channel, event); err != nil {
				return backend.Event{}, err
			}
		}
	}
	*head = next
	return ev, nil
}

// Expire deletes the keys of context name that are due by this process's
// clock in one write transaction, as one commit with no origin, logged
// like any and, with channel set and atomic publishing on, appended to
// channel's message log in the same transaction, where every process's
// poller reads it (backend.Expirer). It returns that commit's event (with
// Event.Time, the moment of the deletes), when the next key expires and
// the time it judged by. A read finds first whether anything is due, so
// that an Expire with nothing to do never takes the write lock. It fails
// with an error matching errors.ErrUnsupported if Options.DisableExpiry is
// set.
func (b *Backend) Expire(ctx context.Context, name, channel string) (backend.Event, time.Time, time.Time, error) {
	op := fmt.Sprintf("expire keys of %q", name)
	if b.opts.DisableExpiry {
		return backend.Event{}, time.Time{}, time.Time{}, unsupported(op, "DisableExpiry")
	}
	if err := b.begin(ctx, op); err != nil {
		return backend.Event{}, time.Time{}, time.Time{}, err
	}
	if b.opts.DisableAtomicPublish {
		channel = "" // the caller publishes
	}
	var (
		ev   backend.Event
		next sql.NullInt64
		now  int64
		due  bool
	)
	err := b.readTx(ctx, func(ctx context.Context, c *dbConn) error {
		now = time.Now().UnixMilli()
		var key string
		err := c.scan(ctx, sqlDue, []any{name, now}, &key)
		if errors.Is(err, sql.ErrNoRows) {
			next = sql.NullInt64{}
			err = c.scan(ctx, sqlNextExpiry, []any{name}, &next)
			if errors.Is(err, sql.ErrNoRows) {
				err = nil
			}
			return err
		}
		due = err == nil
		return err
	})
	if err == nil && due {
		err = b.writeTx(ctx, func(ctx context.Context, c *dbConn, t int64) error {
			now, next = t, sql.NullInt64{}
			var head backend.Head
			var codec string
			if _, err := readHead(ctx, c, name, &head, &codec); err != nil {
				return err
			}
			var err error
			if ev, err = b.reap(ctx, c, name, &head, now, channel); err != nil {
				return err
			}
			err = c.scan(ctx, sqlNextExpiry, []any{name}, &next)
			if errors.Is(err, sql.ErrNoRows) {
				err = nil
			}
			return err
		})
	}
	if err != nil {
		return backend.Event{}, time.Time{}, time.Time{}, b.wrap(ctx, op, err)
	}
	if ev.Revision != 0 && channel != "" {
		b.poll.kick()
	}
	return ev, msTime(next), time.UnixMilli(now), nil
}

// expiresMs returns when a key put at now with ttl expires, in ms, for
// sqlPut: nil (NULL) without a TTL. A TTL is rounded up to a whole
// millisecond, so that a positive one stays one.
func expiresMs(now int64, ttl time.Duration) any {
	if ttl <= 0 {
		return nil
	}
	return now + int64((ttl+time.Millisecond-1)/time.Millisecond)
}

// msTime returns an expiry read from the tables: the zero time for NULL.
func msTime(ms sql.NullInt64) time.Time {
	if !ms.Valid {
		return time.Time{}
	}
	return time.UnixMilli(ms.Int64)
}
