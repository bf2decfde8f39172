package contextd

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

// turnCatchUp bounds how long an attempt that was handed the turn by a
// commit waits for the copy to have that commit (awaitTurn). The commit's
// event is already on its way into the copy when the turn's wake-up
// arrives, usually within microseconds; if it is not there in time, the
// attempt starts from the older copy, and the store's refusal says what
// the key holds.
const turnCatchUp = 5 * time.Millisecond

// turnNotes is the lock-wait watcher of one Modify call on a backend that
// says which commit handed a turn on (backend.TurnFollower): it wakes the
// wait as the backend's own watcher would, and notes the newest such
// commit's revision, so that the attempt that follows can wait for the
// copy to have that commit instead of starting from an older copy and
// being refused.
type turnNotes struct {
	locker.ReleaseWatcher // WatchRelease, for a wait without a queue
	follower              backend.TurnFollower
	rev                   atomic.Uint64
}

var _ locker.TurnWatcher = (*turnNotes)(nil)

// newTurnNotes returns the watcher of one Modify call, or nil when the
// backend does not hand turns on with revisions.
func (c *Context[T]) newTurnNotes() *turnNotes {
	if c.follower == nil {
		return nil
	}
	return &turnNotes{ReleaseWatcher: c.notifier, follower: c.follower}
}

// WatchTurn watches w's turn as the backend does, noting revisions.
func (t *turnNotes) WatchTurn(ctx context.Context, name string, w locker.Waiter, keys ...string) (<-chan struct{}, func(), error) {
	return t.follower.WatchTurnAfter(ctx, name, w, t.note, keys...)
}

// note keeps the highest revision it is given; the backend calls it
// before it wakes the wait.
func (t *turnNotes) note(rev uint64) {
	for {
		old := t.rev.Load()
		if rev <= old || t.rev.CompareAndSwap(old, rev) {
			return
		}
	}
}

// take returns the revision noted since the last take, 0 if none.
func (t *turnNotes) take() uint64 {
	if t == nil {
		return 0
	}
	return t.rev.Swap(0)
}

// awaitTurn waits until the copy has key at revision rev or later (or has
// applied every revision up to rev), at most turnCatchUp and never past
// ctx. It reports whether the copy got there.
func (c *Context[T]) awaitTurn(ctx context.Context, key string, rev uint64) bool {
	return c.cache.await(ctx, turnCatchUp, func(v *view[T]) bool {
		if v.applied >= rev {
			return true
		}
		e, ok := v.entries.Get(key)
		return ok && e.rev >= rev
	})
}

// contendedFor is how long after a refused attempt a Modify of the same
// key queues its first attempt. It is shorter than the Redis backend's
// channel linger (3 s), so the watch such an attempt arms joins a
// subscription still open: no command. (A key that stopped being busy
// costs nothing more: a queued attempt on a free key commits as an
// unqueued one does.)
const contendedFor = time.Second

// contention remembers when writes of a key were last refused (a lock, a
// queue or a lost race), for the keys refused within contendedFor.
type contention struct {
	// last is the latest refusal of any key, so that a Context whose
	// writes are not refused never takes mu.
	last atomic.Int64
	mu   sync.Mutex
	keys map[string]int64 // unix nanoseconds of the latest refusal
}

// contentionKeys bounds the keys remembered; past it, the stale ones are
// dropped (and if none is stale, all: a Context with that many busy keys
// at once only loses the shortcut).
const contentionKeys = 64

func (t *contention) mark(key string) {
	now := time.Now().UnixNano()
	t.last.Store(now)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.keys == nil {
		t.keys = make(map[string]int64)
	}
	if _, ok := t.keys[key]; !ok && len(t.keys) >= contentionKeys {
		for k, at := range t.keys {
			if now-at > int64(contendedFor) {
				delete(t.keys, k)
			}
		}
		if len(t.keys) >= contentionKeys {
			clear(t.keys)
		}
	}
	t.keys[key] = now
}

// recent reports whether a write of key was refused within contendedFor.
func (t *contention) recent(key string) bool {
	now := time.Now().UnixNano()
	if now-t.last.Load() > int64(contendedFor) {
		return false
	}
	t.mu.Lock()
	at, ok := t.keys[key]
	t.mu.Unlock()
	return ok && now-at <= int64(contendedFor)
}
