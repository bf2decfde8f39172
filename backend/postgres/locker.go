package postgres

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/contextd-go/contextd/locker"
)

// TryAcquire takes the lock, if it is free or expired, and draws a fencing
// token from the context's counter, in one statement. Expiry is judged by
// the server's clock.
//
// Attempts on one lock that overlap in time within one Backend share a
// round trip: while one is on its way to the server, the others wait for
// its answer and report ErrNotAcquired, whether it found the lock held or
// took it itself (either way someone else holds it). Only an attempt that
// failed for another reason (its ctx ended, the connection broke) lets a
// waiting one try on its own. So the waiters that a release wakes in one
// process cost one round trip, not one each.
func (b *Backend) TryAcquire(ctx context.Context, name, key string, ttl time.Duration) (locker.Lease, error) {
	op := fmt.Sprintf("acquire lock on %q in %q", key, name)
	if err := b.begin(ctx, op); err != nil {
		return locker.Lease{}, err
	}
	if err := checkLockArgs(name, key, ttl); err != nil {
		return locker.Lease{}, fmt.Errorf("postgres: %s: %w", op, err)
	}
	fk := flightKey{name, key}
	for {
		b.flightMu.Lock()
		f := b.flights[fk]
		if f == nil {
			f = &flight{done: make(chan struct{})}
			b.flights[fk] = f
			b.flightMu.Unlock()
			lease, err := b.tryAcquire(ctx, op, name, key, ttl)
			f.shared = err == nil || errors.Is(err, locker.ErrNotAcquired)
			b.flightMu.Lock()
			delete(b.flights, fk)
			b.flightMu.Unlock()
			close(f.done)
			return lease, err
		}
		b.flightMu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return locker.Lease{}, fmt.Errorf("postgres: %s: %w", op, ctx.Err())
		}
		if f.shared {
			return locker.Lease{}, fmt.Errorf("postgres: %s: %w", op, locker.ErrNotAcquired)
		}
	}
}

// flight is an attempt on one lock in progress; shared is set before done
// is closed and tells whether its outcome holds for the attempts that
// waited for it.
type flight struct {
	done   chan struct{}
	shared bool
}

type flightKey struct{ name, key string }

func (b *Backend) tryAcquire(ctx context.Context, op, name, key string, ttl time.Duration) (locker.Lease, error) {
	token := randomHex(16)
	var fence *int64
	err := b.pool.QueryRow(ctx, b.sql.acquire, []byte(name), []byte(key), token, ttl.Microseconds()).Scan(&fence)
	if err != nil {
		return locker.Lease{}, wrap(ctx, op, err)
	}
	if fence == nil {
		return locker.Lease{}, fmt.Errorf("postgres: %s: %w", op, locker.ErrNotAcquired)
	}
	return locker.Lease{Name: name, Key: key, Token: token, Fence: uint64(*fence), TTL: ttl}, nil
}

func checkLockArgs(name, key string, ttl time.Duration) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("ttl %v is below a millisecond", ttl)
	}
	return nil
}

// Release deletes the lock if the lease holds it and, in the same
// statement, notifies waiters (unless ReleaseNotify is switched off).
func (b *Backend) Release(ctx context.Context, l locker.Lease) error {
	op := fmt.Sprintf("release lock on %q in %q", l.Key, l.Name)
	if err := b.begin(ctx, op); err != nil {
		return err
	}
	if err := checkName(l.Name); err != nil {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	channel := ""
	if !b.opts.DisableReleaseNotify {
		channel = pgChannel(b.opts.Schema, unlockChannel(l.Name))
	}
	var released bool
	var notified int64
	err := b.pool.QueryRow(ctx, b.sql.release, []byte(l.Name), []byte(l.Key), l.Token, int64(l.Fence),
		channel, base64.StdEncoding.EncodeToString([]byte(l.Key))).Scan(&released, &notified)
	if err != nil {
		return wrap(ctx, op, err)
	}
	if !released {
		return fmt.Errorf("postgres: %s: %w", op, locker.ErrNotHeld)
	}
	return nil
}

// Extend resets the lock's expiry to ttl from now, by the server's clock,
// if the lease holds it.
func (b *Backend) Extend(ctx context.Context, l locker.Lease, ttl time.Duration) error {
	op := fmt.Sprintf("extend lock on %q in %q", l.Key, l.Name)
	if err := b.begin(ctx, op); err != nil {
		return err
	}
	if err := checkLockArgs(l.Name, l.Key, ttl); err != nil {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	tag, err := b.pool.Exec(ctx, b.sql.extend, []byte(l.Name), []byte(l.Key), l.Token, int64(l.Fence), ttl.Microseconds())
	if err != nil {
		return wrap(ctx, op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s: %w", op, locker.ErrNotHeld)
	}
	return nil
}

// WatchRelease listens, on the Backend's one listening connection, to the
// context's release channel, and returns once the LISTEN is in effect, so
// no later release is missed. When the listening connection is replaced
// the watcher is woken too, since releases may have been missed meanwhile.
func (b *Backend) WatchRelease(ctx context.Context, name string, keys ...string) (<-chan struct{}, func(), error) {
	op := fmt.Sprintf("watch lock releases in %q", name)
	if b.opts.DisableReleaseNotify {
		return nil, nil, fmt.Errorf("postgres: %s: release notification is switched off: %w", op, errors.ErrUnsupported)
	}
	if err := b.begin(ctx, op); err != nil {
		return nil, nil, err
	}
	w := &releaseWatcher{want: make(map[string]struct{}, len(keys)), notify: make(chan struct{}, 1)}
	for _, k := range keys {
		w.want[base64.StdEncoding.EncodeToString([]byte(k))] = struct{}{}
	}
	pgch := pgChannel(b.opts.Schema, unlockChannel(name))
	if err := b.lis.add(ctx, pgch, w); err != nil {
		return nil, nil, wrap(ctx, op, err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { b.lis.remove(pgch, w) }) }
	return w.notify, stop, nil
}

// releaseWatcher is a sink of the listener that wakes one waiter.
type releaseWatcher struct {
	want   map[string]struct{} // base64 of the keys
	notify chan struct{}
}

func (w *releaseWatcher) deliver(note string) {
	if _, ok := w.want[note]; ok {
		w.wake()
	}
}

func (w *releaseWatcher) interrupted() {}

// resumed wakes the waiter: a release may have gone unheard.
func (w *releaseWatcher) resumed() { w.wake() }

func (w *releaseWatcher) closedByBackend() { w.wake() }

func (w *releaseWatcher) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}
