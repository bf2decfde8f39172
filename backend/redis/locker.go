package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/locker"
)

// TryAcquire takes the lock with SET NX PX and a random token, and draws a
// fencing token from the context's counter, in one script.
func (b *Backend) TryAcquire(ctx context.Context, name, key string, ttl time.Duration) (locker.Lease, error) {
	op := fmt.Sprintf("acquire lock on %q in %q", key, name)
	if key == "" {
		return locker.Lease{}, fmt.Errorf("redis: %s: empty key", op)
	}
	if ttl < time.Millisecond {
		return locker.Lease{}, fmt.Errorf("redis: %s: ttl %v is below a millisecond", op, ttl)
	}
	k := keysOf(name)
	token := randomHex(16)
	fence, err := b.run(ctx, acquireScript, []string{k.lock(key), k.meta}, token, ttl.Milliseconds()).Int64()
	if errors.Is(err, goredis.Nil) {
		return locker.Lease{}, fmt.Errorf("redis: %s: %w", op, locker.ErrNotAcquired)
	}
	if err != nil {
		return locker.Lease{}, scriptFailed(ctx, op, k, err, nil, func(int) string { return k.lock(key) })
	}
	return locker.Lease{Name: name, Key: key, Token: token, Fence: uint64(fence), TTL: ttl}, nil
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
	channel := k.unlock
	if b.opts.DisableReleaseNotify {
		channel = ""
	}
	n, err := releaseScript.Run(ctx, b.client, []string{k.lock(l.Key)}, lockValue(l), channel, flag(b.sharded), l.Key).Int64()
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

// WatchRelease subscribes to the context's unlock channel on a connection
// of its own and returns once Redis has confirmed the subscription, so no
// later release is missed. Notifications lost to a reconnect only make the
// waiter fall back to its retry delay.
func (b *Backend) WatchRelease(ctx context.Context, name string, keys ...string) (<-chan struct{}, func(), error) {
	op := fmt.Sprintf("watch lock releases in %q", name)
	if b.opts.DisableReleaseNotify {
		return nil, nil, fmt.Errorf("redis: %s: release notification is switched off: %w", op, errors.ErrUnsupported)
	}
	ps, err := b.subscribeConfirmed(ctx, keysOf(name).unlock)
	if err != nil {
		return nil, nil, wrap(ctx, op, err)
	}
	want := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		want[k] = struct{}{}
	}
	notify := make(chan struct{}, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msg, err := ps.Receive(context.Background())
			if err != nil {
				select {
				case <-done:
					return
				case <-time.After(50 * time.Millisecond): // go-redis reconnects on the next call
				}
				continue
			}
			if m, ok := msg.(*goredis.Message); ok {
				if _, ok := want[m.Payload]; ok {
					select {
					case notify <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(done)
			_ = ps.Close()
			wg.Wait()
		})
	}
	return notify, stop, nil
}
