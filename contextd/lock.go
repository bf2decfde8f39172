package contextd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/contextd-go/contextd/locker"
)

// Lock is a held lock on one key of a context, taken with AcquireLock.
//
// While it is held, writes to its key by others wait (or fail with
// ErrLockNotAcquired after their retries); writes made WithLock(l) go
// through and are refused once the lock is lost. A Lock is safe for
// concurrent use.
type Lock struct {
	owner  any // the *Context[T] that took it
	name   string
	locker locker.Locker
	forget func(*Lock) // unregisters it from its Context

	mu       sync.Mutex
	lease    locker.Lease
	released bool
	expiry   *time.Timer // closes lost when the TTL passes, unless auto-extended
	stopKeep func()

	lost     chan struct{}
	lostOnce sync.Once
	// cancels are the contexts made by Context, cancelled when the lock
	// is lost. cancelMu guards them; it is taken after mu, never before.
	cancelMu sync.Mutex
	cancels  map[*int]context.CancelCauseFunc
}

// AcquireLock takes the lock on opts.Key (the original's acquireLock),
// retrying while someone else holds it: opts.MaxRetries pauses of about
// opts.RetryDelay, ended early when the backend notifies a release. It
// returns an error matching ErrLockNotAcquired when the retries run out.
//
// The lock lives opts.LockTimeout unless extended; with opts.AutoExtend it
// is renewed until Release. Release it when done; Close releases the locks
// still held.
func (c *Context[T]) AcquireLock(ctx context.Context, opts LockOptions) (*Lock, error) {
	l, err := c.acquireLock(ctx, opts)
	if err != nil {
		return nil, c.errorf("acquire lock %q", err, opts.Key)
	}
	return l, nil
}

func (c *Context[T]) acquireLock(ctx context.Context, opts LockOptions) (*Lock, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	if opts.Key == "" {
		return nil, errEmptyKey
	}
	if err := lockDefaults(&opts.LockTimeout, &opts.RetryDelay, &opts.MaxRetries); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if c.holds(opts.Key) {
		return nil, fmt.Errorf("lock %q: %w", opts.Key, ErrAlreadyHeld)
	}
	policy := c.lockPolicy(opts.RetryDelay, opts.MaxRetries, opts.Key)
	lease, err := locker.Acquire(ctx, c.lock, c.name, opts.Key, opts.LockTimeout, policy)
	if err != nil {
		return nil, err
	}
	l := &Lock{owner: c, name: c.name, locker: c.lock, lease: lease, lost: make(chan struct{})}
	l.forget = func(l *Lock) {
		c.lifeMu.Lock()
		delete(c.locks, l)
		c.lifeMu.Unlock()
	}
	c.lifeMu.Lock()
	if c.closed.Load() {
		c.lifeMu.Unlock()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = c.lock.Release(rctx, lease)
		return nil, ErrClosed
	}
	c.locks[l] = struct{}{}
	c.lifeMu.Unlock()

	l.mu.Lock()
	defer l.mu.Unlock()
	if opts.AutoExtend {
		l.stopKeep = locker.KeepAlive(c.lock, lease, func(err error) {
			c.opts.Logger.Warn("contextd: lock lost", "context", c.name, "key", opts.Key, "error", err)
			l.markLost()
		})
	} else {
		l.expiry = time.AfterFunc(opts.LockTimeout, l.markLost)
	}
	return l, nil
}

// errNilLock is the error of a method called on a nil *Lock.
var errNilLock = invalid("nil *Lock")

// holds reports whether this Context holds a live lock on key.
func (c *Context[T]) holds(key string) bool {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	for l := range c.locks {
		if l.lease.Key == key && !l.isLost() {
			return true
		}
	}
	return false
}

// Context returns a context derived from parent that is cancelled when the
// lock is no longer held (released, expired, taken over, renewal failed),
// with context.Cause ErrLockLost, as well as when parent is done: work
// guarded by the lock runs under it (like rueidislock's and etcd's session
// contexts). Call the returned cancel when the work is done.
func (l *Lock) Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	if l == nil {
		cancel(errNilLock)
		return ctx, func() {}
	}
	id := new(int)
	l.cancelMu.Lock()
	if l.isLost() {
		l.cancelMu.Unlock()
		cancel(ErrLockLost)
		return ctx, func() {}
	}
	if l.cancels == nil {
		l.cancels = make(map[*int]context.CancelCauseFunc)
	}
	l.cancels[id] = cancel
	l.cancelMu.Unlock()
	return ctx, func() {
		l.cancelMu.Lock()
		delete(l.cancels, id)
		l.cancelMu.Unlock()
		cancel(context.Canceled)
	}
}

// Key returns the locked key ("" for a nil Lock).
func (l *Lock) Key() string {
	if l == nil {
		return ""
	}
	return l.lease.Key
}

// Token returns the lock's fencing token: it is larger than the token of
// every earlier acquisition of a lock of the same context, so a system
// outside contextd can refuse work from a holder that has since been
// superseded.
func (l *Lock) Token() uint64 {
	if l == nil {
		return 0
	}
	return l.lease.Fence
}

// Lost returns a channel that is closed once the lock is no longer held:
// released, expired without extension, found taken over, or renewal failed.
// For a nil Lock it is closed already.
func (l *Lock) Lost() <-chan struct{} {
	if l == nil {
		return closedChan
	}
	return l.lost
}

// closedChan is the Lost channel of a nil Lock.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

func (l *Lock) isLost() bool {
	select {
	case <-l.lost:
		return true
	default:
		return false
	}
}

func (l *Lock) markLost() {
	l.lostOnce.Do(func() {
		l.cancelMu.Lock()
		close(l.lost)
		cancels := l.cancels
		l.cancels = nil
		l.cancelMu.Unlock()
		for _, cancel := range cancels {
			cancel(ErrLockLost)
		}
	})
}

// checkLost is called after a write with this lock was refused as not held:
// the refusal may have been about another lock of the write, so ask.
func (l *Lock) checkLost(ctx context.Context) {
	lease := l.currentLease()
	if err := l.locker.Extend(ctx, lease, lease.TTL); errors.Is(err, locker.ErrNotHeld) {
		l.markLost()
	}
}

// Extend renews the lock for ttl (zero: its current time to live). It
// returns an error matching ErrLockLost if the lock is no longer held.
func (l *Lock) Extend(ctx context.Context, ttl time.Duration) error {
	if l == nil {
		return fmt.Errorf("contextd: extend lock: %w", errNilLock)
	}
	if err := l.extend(ctx, ttl); err != nil {
		return fmt.Errorf("contextd: %s: extend lock %q: %w", l.name, l.lease.Key, err)
	}
	return nil
}

func (l *Lock) extend(ctx context.Context, ttl time.Duration) error {
	if ttl < 0 {
		return invalid("negative ttl %v", ttl)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released || l.isLost() {
		return ErrLockLost
	}
	if ttl == 0 {
		ttl = l.lease.TTL
	}
	if err := l.locker.Extend(ctx, l.lease, ttl); err != nil {
		if errors.Is(err, locker.ErrNotHeld) {
			l.markLost()
		}
		return err
	}
	l.lease.TTL = ttl
	if l.expiry != nil {
		l.expiry.Reset(ttl)
	}
	return nil
}

// currentLease returns the lease as last extended.
func (l *Lock) currentLease() locker.Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lease
}

// Release gives the lock back. Releasing a lock twice is fine; releasing a
// lock that expired or was taken over returns an error matching
// ErrLockLost.
func (l *Lock) Release(ctx context.Context) error {
	if l == nil {
		return fmt.Errorf("contextd: release lock: %w", errNilLock)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	if l.stopKeep != nil {
		l.stopKeep()
		l.stopKeep = nil
	}
	if l.expiry != nil {
		l.expiry.Stop()
	}
	err := l.locker.Release(ctx, l.lease)
	if err != nil && !errors.Is(err, locker.ErrNotHeld) {
		return fmt.Errorf("contextd: %s: release lock %q: %w", l.name, l.lease.Key, err)
	}
	l.released = true
	l.markLost()
	l.forget(l)
	if err != nil {
		return fmt.Errorf("contextd: %s: release lock %q: %w", l.name, l.lease.Key, err)
	}
	return nil
}
