package contextd_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/locker"
)

// Every lock test runs on the fast path (lock-aware commits) and the generic
// one (acquire, commit, release).
func lockBackends(t *testing.T, run func(t *testing.T, b *memory.Backend)) {
	t.Run("lock-aware", func(t *testing.T) { run(t, newMemory(t, nil)) })
	t.Run("generic", func(t *testing.T) {
		run(t, newMemory(t, &memory.Options{DisableLockAwareCommit: true, DisableAtomicPublish: true, DisableReleaseNotify: true, DisableChangeLog: true}))
	})
}

func TestLockDefaults(t *testing.T) {
	if contextd.DefaultLockTimeout != 10*time.Second || contextd.DefaultRetryDelay != 100*time.Millisecond || contextd.DefaultMaxRetries != 50 {
		t.Fatal("defaults differ from the original library's (10 s, 100 ms, 50)")
	}
}

func TestAcquireLockContention(t *testing.T) {
	lockBackends(t, func(t *testing.T, b *memory.Backend) {
		a := open[int](t, b, "ctx", nil)
		o := open[int](t, b, "ctx", nil)
		ctx := context.Background()
		l, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = o.AcquireLock(ctx, contextd.LockOptions{Key: "k", RetryDelay: time.Millisecond, MaxRetries: 3})
		if !errors.Is(err, contextd.ErrLockNotAcquired) {
			t.Fatalf("AcquireLock of a held lock = %v, want ErrLockNotAcquired", err)
		}
		if _, err := o.AcquireLock(ctx, contextd.LockOptions{Key: "k", MaxRetries: -1}); !errors.Is(err, contextd.ErrLockNotAcquired) {
			t.Fatalf("single-attempt AcquireLock = %v, want ErrLockNotAcquired", err)
		}
		got := make(chan *contextd.Lock, 1)
		go func() {
			l2, err := o.AcquireLock(ctx, contextd.LockOptions{Key: "k", RetryDelay: time.Millisecond, MaxRetries: 100000})
			if err != nil {
				t.Error(err)
			}
			got <- l2
		}()
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("second Release = %v, want nil", err)
		}
		select {
		case <-l.Lost():
		default:
			t.Error("Lost not closed after Release")
		}
		l2 := <-got
		if l2 == nil {
			return
		}
		if l2.Token() <= l.Token() {
			t.Errorf("fencing token %d not above %d", l2.Token(), l.Token())
		}
		if l2.Key() != "k" {
			t.Errorf("Key = %q", l2.Key())
		}
	})
}

func TestWaitingForLockHonoursContext(t *testing.T) {
	lockBackends(t, func(t *testing.T, b *memory.Backend) {
		a := open[int](t, b, "ctx", nil)
		o := open[int](t, b, "ctx", &contextd.Options{RetryDelay: time.Hour})
		if _, err := a.AcquireLock(context.Background(), contextd.LockOptions{Key: "k"}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := o.UpdateContext(ctx, "k", 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("UpdateContext waiting past its deadline = %v, want DeadlineExceeded", err)
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel2()
		if _, err := o.AcquireLock(ctx2, contextd.LockOptions{Key: "k", RetryDelay: time.Hour}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("AcquireLock waiting past its deadline = %v, want DeadlineExceeded", err)
		}
	})
}

// TestAutoExtendOutlivesTTL holds an auto-extended lock across two TTLs of
// the store's clock. The store's clock is moved by hand, half a TTL after
// each renewal has happened, so the store never expires the lease because
// the test's goroutines ran late. The holder itself presumes its lease lost
// when it could not renew within two thirds of the TTL (as it must: the
// store may have expired it), so the TTL is long enough for a loaded
// machine to schedule the renewal: it failed 2 in 20 runs with 60 ms.
func TestAutoExtendOutlivesTTL(t *testing.T) {
	for _, cfg := range []struct {
		name string
		opts memory.Options
	}{
		{"lock-aware", memory.Options{}},
		{"generic", memory.Options{DisableLockAwareCommit: true, DisableAtomicPublish: true, DisableReleaseNotify: true, DisableChangeLog: true}},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			clock := newManualClock()
			cfg.opts.Clock = clock.Now
			b := &countingExtends{Backend: newMemory(t, &cfg.opts)}
			a := open[int](t, b, "ctx", nil)
			o := open[int](t, b.Backend, "ctx", nil)
			ctx := context.Background()
			const ttl = 900 * time.Millisecond
			l, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: ttl, AutoExtend: true})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 4 {
				n := b.extends.Load()
				eventually(t, "the lock is renewed", func() bool { return b.extends.Load() > n })
				clock.Advance(ttl / 2)
				if _, err := o.AcquireLock(ctx, contextd.LockOptions{Key: "k", MaxRetries: -1}); !errors.Is(err, contextd.ErrLockNotAcquired) {
					t.Fatalf("auto-extended lock was taken %v of store time after it was acquired: %v", time.Duration(i+1)*ttl/2, err)
				}
			}
			if err := a.UpdateContext(ctx, "k", 1, contextd.WithLock(l)); err != nil {
				t.Fatalf("write WithLock an auto-extended lock: %v", err)
			}
			select {
			case <-l.Lost():
				t.Fatal("Lost closed while the lock was renewed")
			default:
			}
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// manualClock is a clock for the memory backend that moves only when the
// test says.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func newManualClock() *manualClock { return &manualClock{now: time.Unix(1_000_000, 0)} }

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingExtends counts the lock renewals that reach a memory backend.
type countingExtends struct {
	*memory.Backend
	extends atomic.Int64
}

func (c *countingExtends) Extend(ctx context.Context, l locker.Lease, ttl time.Duration) error {
	err := c.Backend.Extend(ctx, l, ttl)
	if err == nil {
		c.extends.Add(1)
	}
	return err
}

func TestAutoExtendReportsLoss(t *testing.T) {
	b := newMemory(t, nil)
	a := open[int](t, b, "ctx", nil)
	ctx := context.Background()
	l, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: 60 * time.Millisecond, AutoExtend: true})
	if err != nil {
		t.Fatal(err)
	}
	b.Wipe("ctx") // the store forgets the lock, as a failed-over Redis might
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed after renewal failed")
	}
	if err := a.UpdateContext(ctx, "k", 1, contextd.WithLock(l)); !errors.Is(err, contextd.ErrLockLost) {
		t.Fatalf("write with a lost lock = %v, want ErrLockLost", err)
	}
}

func TestLockFromAnotherContextRefused(t *testing.T) {
	b := newMemory(t, nil)
	a := open[int](t, b, "one", nil)
	o := open[int](t, b, "two", nil)
	ctx := context.Background()
	l, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.UpdateContext(ctx, "k", 1, contextd.WithLock(l)); err == nil {
		t.Fatal("write WithLock a lock of another Context succeeded")
	}
}

func TestCloseReleasesLocks(t *testing.T) {
	lockBackends(t, func(t *testing.T, b *memory.Backend) {
		a, err := contextd.New[int](b, "ctx", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := a.Initialize(ctx); err != nil {
			t.Fatal(err)
		}
		l, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k", AutoExtend: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-l.Lost():
		default:
			t.Error("Lost not closed by Close")
		}
		o := open[int](t, b, "ctx", nil)
		if _, err := o.AcquireLock(ctx, contextd.LockOptions{Key: "k", MaxRetries: -1}); err != nil {
			t.Fatalf("lock still held after its Context closed: %v", err)
		}
	})
}

func TestFencedWriteAcrossTakeover(t *testing.T) {
	lockBackends(t, func(t *testing.T, b *memory.Backend) {
		a := open[string](t, b, "ctx", nil)
		o := open[string](t, b, "ctx", nil)
		ctx := context.Background()
		l, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: 40 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		<-l.Lost() // expired
		l2, err := o.AcquireLock(ctx, contextd.LockOptions{Key: "k"})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.UpdateContext(ctx, "k", "old", contextd.WithLock(l)); !errors.Is(err, contextd.ErrLockLost) {
			t.Fatalf("write by the superseded holder = %v, want ErrLockLost", err)
		}
		if err := o.UpdateContext(ctx, "k", "new", contextd.WithLock(l2)); err != nil {
			t.Fatal(err)
		}
		if v, _, _ := a.Get(ctx, "k", contextd.Fresh()); v != "new" {
			t.Fatalf("value %q", v)
		}
	})
}

func TestWriteWithLockTheStoreForgot(t *testing.T) {
	lockBackends(t, func(t *testing.T, b *memory.Backend) {
		a := open[string](t, b, "ctx", nil)
		ctx := context.Background()
		l, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		// The instance still believes it holds the lock; the store does not.
		b.Wipe("ctx")
		if err := a.UpdateContext(ctx, "k", "v", contextd.WithLock(l)); !errors.Is(err, contextd.ErrLockLost) {
			t.Fatalf("write with a lock the store forgot = %v, want ErrLockLost", err)
		}
		select {
		case <-l.Lost():
		default:
			t.Error("Lost not closed after the store refused the lock")
		}
		if h, _ := b.Revision(ctx, "ctx"); h.Revision != 0 {
			t.Error("the refused write was stored")
		}
	})
}

// TestLockContext: the context of a lock ends when the lock is lost —
// here released by Close's cleanup elsewhere, taken over after expiry — with
// ErrLockLost as its cause, and when its parent ends.
func TestLockContext(t *testing.T) {
	clock := newManualClock()
	b := newMemory(t, &memory.Options{Clock: clock.Now})
	a := open[int](t, b, "ctx", nil)
	ctx := t.Context()
	l, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	work, cancel := l.Context(ctx)
	defer cancel()
	parent, stop := context.WithCancel(ctx)
	other, cancelOther := l.Context(parent)
	defer cancelOther()
	stop()
	<-other.Done() // the parent ended it
	if work.Err() != nil {
		t.Fatal("the lock's context ended while the lock is held")
	}
	if _, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k", MaxRetries: -1}); !errors.Is(err, contextd.ErrAlreadyHeld) {
		t.Fatalf("AcquireLock of a key the Context holds = %v, want ErrAlreadyHeld", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-work.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the lock's context did not end when the lock was released")
	}
	if cause := context.Cause(work); !errors.Is(cause, contextd.ErrLockLost) {
		t.Fatalf("cause = %v, want ErrLockLost", cause)
	}
	late, cancelLate := l.Context(ctx)
	defer cancelLate()
	if late.Err() == nil {
		t.Fatal("a context of a released lock is not done")
	}
	// Released, the key can be locked again.
	l2, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k", MaxRetries: -1})
	if err != nil {
		t.Fatalf("AcquireLock after Release: %v", err)
	}
	_ = l2.Release(ctx)
}
