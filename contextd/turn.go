package contextd

import (
	"context"
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
