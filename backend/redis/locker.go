package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/locker"
)

// TryAcquire takes the lock with SET NX PX and a random token, and draws a
// fencing token from the context's counter, in one script. Unless
// Options.DisableFairLocks is set, it refuses a free lock while a waiter
// is queued for it (locker.FairLocker).
func (b *Backend) TryAcquire(ctx context.Context, name, key string, ttl time.Duration) (locker.Lease, error) {
	return b.tryAcquire(ctx, name, key, ttl, nil)
}

// TryAcquireQueued takes the lock for waiter w as locker.FairLocker
// describes, in one script: if the lock is free and no live waiter was
// queued before w; otherwise w is queued, keeping its ticket.
func (b *Backend) TryAcquireQueued(ctx context.Context, name, key string, ttl time.Duration, w locker.Waiter) (locker.Lease, error) {
	if b.opts.DisableFairLocks {
		return locker.Lease{}, fmt.Errorf("redis: acquire lock on %q in %q: fair locks are switched off: %w", key, name, errors.ErrUnsupported)
	}
	if w.ID == "" || w.Hold <= 0 {
		return locker.Lease{}, fmt.Errorf("redis: acquire lock on %q in %q: waiter needs an ID and a positive Hold", key, name)
	}
	return b.tryAcquire(ctx, name, key, ttl, &w)
}

func (b *Backend) tryAcquire(ctx context.Context, name, key string, ttl time.Duration, w *locker.Waiter) (locker.Lease, error) {
	op := fmt.Sprintf("acquire lock on %q in %q", key, name)
	if key == "" {
		return locker.Lease{}, fmt.Errorf("redis: %s: empty key", op)
	}
	if ttl < time.Millisecond {
		return locker.Lease{}, fmt.Errorf("redis: %s: ttl %v is below a millisecond", op, ttl)
	}
	k := keysOf(name)
	token := randomHex(16)
	var waiterID string
	var hold int64
	if w != nil {
		waiterID, hold = w.ID, max(w.Hold.Milliseconds(), 1)
	}
	fence, err := b.run(ctx, acquireScript, []string{k.lock(key), k.meta, k.queue(key), k.waiters},
		token, ttl.Milliseconds(), flag(!b.opts.DisableFairLocks), waiterID, hold).Int64()
	if errors.Is(err, goredis.Nil) {
		return locker.Lease{}, fmt.Errorf("redis: %s: %w", op, locker.ErrNotAcquired)
	}
	if err != nil {
		return locker.Lease{}, scriptFailed(ctx, op, k, err, nil, func(int) string { return k.lock(key) })
	}
	return locker.Lease{Name: name, Key: key, Token: token, Fence: uint64(fence), TTL: ttl}, nil
}

// Dequeue removes w from the queues of keys of context name, in one
// script, and wakes the next waiter of a queue w was first in.
func (b *Backend) Dequeue(ctx context.Context, name string, w locker.Waiter, keys ...string) error {
	op := fmt.Sprintf("dequeue a waiter in %q", name)
	if b.opts.DisableFairLocks {
		return fmt.Errorf("redis: %s: fair locks are switched off: %w", op, errors.ErrUnsupported)
	}
	if len(keys) == 0 {
		return nil
	}
	k := keysOf(name)
	redisKeys := make([]string, 0, 1+len(keys))
	redisKeys = append(redisKeys, k.waiters)
	args := make([]any, 0, 3+len(keys))
	args = append(args, w.ID, b.unlockChannel(k), flag(b.sharded))
	for _, key := range keys {
		redisKeys = append(redisKeys, k.queue(key))
		args = append(args, key)
	}
	if err := dequeueScript.Run(ctx, b.client, redisKeys, args...).Err(); err != nil {
		return scriptFailed(ctx, op, k, err, nil, nil)
	}
	return nil
}

// unlockChannel is where releases are announced to waiters, "" when
// release notification is switched off.
func (b *Backend) unlockChannel(k keys) string {
	if b.opts.DisableReleaseNotify {
		return ""
	}
	return k.unlock
}

// lockValue is what a held lock's key contains: its token and fence.
func lockValue(l locker.Lease) string {
	return l.Token + ":" + strconv.FormatUint(l.Fence, 10)
}

// Release deletes the lock if the lease holds it, and publishes the release
// to waiters.
func (b *Backend) Release(ctx context.Context, l locker.Lease) error {
	op := fmt.Sprintf("release lock on %q in %q", l.Key, l.Name)
	k := keysOf(l.Name)
	redisKeys := []string{k.lock(l.Key)}
	if !b.opts.DisableFairLocks {
		// The queue says whose turn it is: only that waiter is woken.
		redisKeys = append(redisKeys, k.queue(l.Key), k.waiters)
	}
	n, err := releaseScript.Run(ctx, b.client, redisKeys, lockValue(l), b.unlockChannel(k), flag(b.sharded), l.Key).Int64()
	if err != nil {
		return scriptFailed(ctx, op, k, err, nil, func(int) string { return k.lock(l.Key) })
	}
	if n == 0 {
		return fmt.Errorf("redis: %s: %w", op, locker.ErrNotHeld)
	}
	return nil
}

// Extend resets the lock's TTL if the lease holds it.
func (b *Backend) Extend(ctx context.Context, l locker.Lease, ttl time.Duration) error {
	op := fmt.Sprintf("extend lock on %q in %q", l.Key, l.Name)
	if ttl < time.Millisecond {
		return fmt.Errorf("redis: %s: ttl %v is below a millisecond", op, ttl)
	}
	k := keysOf(l.Name)
	n, err := b.run(ctx, extendScript, []string{k.lock(l.Key)}, lockValue(l), ttl.Milliseconds()).Int64()
	if err != nil {
		return scriptFailed(ctx, op, k, err, nil, func(int) string { return k.lock(l.Key) })
	}
	if n == 0 {
		return fmt.Errorf("redis: %s: %w", op, locker.ErrNotHeld)
	}
	return nil
}

// WatchRelease subscribes to the context's unlock channel, on the
// Backend's shared pub/sub connection, and returns once Redis has
// confirmed the subscription, so no later release is missed. Notifications
// lost to a reconnect are made up for by one sent when the subscription
// receives again (a retry may succeed then); either way a waiter falls
// back to its retry delay.
func (b *Backend) WatchRelease(ctx context.Context, name string, keys ...string) (<-chan struct{}, func(), error) {
	return b.watch(ctx, fmt.Sprintf("watch lock releases in %q", name), name, "", nil, keys)
}

// WatchTurn is WatchRelease for waiter w, as locker.TurnWatcher
// describes: the scripts that release a lock or let a queue's first waiter
// go name the live waiter first in the queue now, and w is woken only by
// a wake-up that names w or nobody. (Every member of the channel still
// receives the message; the others drop it here, without waking their
// waiting call.) It fails with an error matching errors.ErrUnsupported
// when fair locks or release notification are switched off.
func (b *Backend) WatchTurn(ctx context.Context, name string, w locker.Waiter, keys ...string) (<-chan struct{}, func(), error) {
	return b.WatchTurnAfter(ctx, name, w, nil, keys...)
}

// WatchTurnAfter is WatchTurn that also tells after the revision of the
// commit that handed the turn on to w, before it wakes w
// (backend.TurnFollower): the commit script names it in the wake-up,
// which Redis sends on the shared pub/sub connection after the commit's
// event. after runs on that connection's reader and must not block; it
// may be nil.
func (b *Backend) WatchTurnAfter(ctx context.Context, name string, w locker.Waiter, after func(rev uint64), keys ...string) (<-chan struct{}, func(), error) {
	op := fmt.Sprintf("watch lock turns in %q", name)
	if b.opts.DisableFairLocks {
		return nil, nil, fmt.Errorf("redis: %s: fair locks are switched off: %w", op, errors.ErrUnsupported)
	}
	if w.ID == "" {
		return nil, nil, fmt.Errorf("redis: %s: waiter needs an ID", op)
	}
	return b.watch(ctx, op, name, w.ID, after, keys)
}

func (b *Backend) watch(ctx context.Context, op, name, waiter string, after func(uint64), keys []string) (<-chan struct{}, func(), error) {
	if b.opts.DisableReleaseNotify {
		return nil, nil, fmt.Errorf("redis: %s: release notification is switched off: %w", op, errors.ErrUnsupported)
	}
	w := &releaseWatch{want: make(map[string]struct{}, len(keys)), notify: make(chan struct{}, 1), waiter: waiter, after: after}
	for _, k := range keys {
		w.want[k] = struct{}{}
	}
	m, err := b.hub.join(ctx, keysOf(name).unlock, w)
	if err != nil {
		return nil, nil, wrap(ctx, op, err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { b.hub.leave(m) }) }
	return w.notify, stop, nil
}

// releaseWatch is the sink of a WatchRelease or WatchTurn: a wake-up when
// one of want is released (for a WatchTurn: and the release names its
// waiter or nobody), or when the subscription receives again after a
// break.
type releaseWatch struct {
	want   map[string]struct{}
	notify chan struct{}
	waiter string // WatchTurn's waiter; "" for WatchRelease
	// after, if not nil, is told the revision of a commit that handed the
	// turn on, or 0 for a turn that names the waiter without a commit,
	// before the wake-up (WatchTurnAfter).
	after func(rev uint64)
}

func (w *releaseWatch) deliver(payload string) {
	key, next, rev, ok := parseWake(payload)
	if !ok {
		w.wake() // a hint is cheap; a lost one costs a retry delay
		return
	}
	if _, want := w.want[key]; !want {
		return
	}
	if next != "" && w.waiter != "" && next != w.waiter {
		return // another waiter's turn
	}
	if w.after != nil && (rev != 0 || next != "" && next == w.waiter) {
		w.after(rev)
	}
	w.wake()
}

// parseWake reads an unlock channel's message (wake in scripts.go): the
// key, or "\x00<length of next>:<next><key>" where next is the waiter
// whose turn it is ("" = any), or "\x00=<rev>:<length of next>:<next><key>"
// where rev is the revision of the commit that handed the turn on (0
// when none is given). ok is false for a message of none of these forms.
func parseWake(payload string) (key, next string, rev uint64, ok bool) {
	if payload == "" || payload[0] != 0 {
		return payload, "", 0, true
	}
	rest := payload[1:]
	if rest != "" && rest[0] == '=' {
		i := strings.IndexByte(rest, ':')
		if i <= 1 {
			return "", "", 0, false
		}
		r, err := strconv.ParseUint(rest[1:i], 10, 64)
		if err != nil || r == 0 {
			return "", "", 0, false
		}
		rev, rest = r, rest[i+1:]
	}
	i := strings.IndexByte(rest, ':')
	if i <= 0 {
		return "", "", 0, false
	}
	n, err := strconv.Atoi(rest[:i])
	if err != nil || n < 0 || n > len(rest)-i-1 {
		return "", "", 0, false
	}
	return rest[i+1+n:], rest[i+1 : i+1+n], rev, true
}

func (w *releaseWatch) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *releaseWatch) interrupt() {}
func (w *releaseWatch) resume()    { w.wake() }
func (w *releaseWatch) end()       {}
