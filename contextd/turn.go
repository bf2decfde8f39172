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
	// pre, if not nil, is the reservation whose turn this call waits
	// for: its watch was armed before its place was taken.
	pre *reservation
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
	if t.pre != nil && w.ID == t.pre.w.ID {
		return t.pre.notify, t.pre.stop, nil
	}
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

// A reservation is a place in a key's queue that a committed Modify took
// for the next Modify of the key in this Context (backend.Batch.Requeue):
// under steady contention the next call comes before its turn does, and
// then waits for that turn without first making an attempt that would be
// refused and queued — one script per increment instead of two. The turn
// is watched from before the commit that took the place, so none is
// missed. A reservation no call claims is given up as soon as its turn
// comes, or after a retry delay (whichever is first), so it holds nobody
// up for longer than a lost turn notification of a waiting call would.
type reservation struct {
	w      locker.Waiter
	key    string
	notify <-chan struct{}
	stop   func()
	notes  *turnNotes // the claiming call's; notes the turn's revision
	state  atomic.Int32
	timer  *time.Timer
}

const (
	reserveOpen    = iota // taken, not yet claimed
	reserveClaimed        // a call waits with it
	reserveGone           // given up, or not taken
)

// reserve arms the turn watch of a new waiter for key, to ask the commit
// of a contended Modify to queue it again (backend.Batch.Requeue). It
// returns nil when the backend cannot follow turns.
func (c *Context[T]) reserve(ctx context.Context, key string) *reservation {
	if c.follower == nil {
		return nil
	}
	r := &reservation{w: locker.Policy{RetryDelay: c.opts.RetryDelay}.NewWaiter(), key: key}
	r.notes = &turnNotes{ReleaseWatcher: c.notifier, follower: c.follower, pre: r}
	// The commit waits for this, first in the queue: the watch is armed
	// only if it is at hand (the channel the committing waiter watches
	// is subscribed), not when the subscription must be made or
	// confirmed again (a pub/sub connection being replaced), which can
	// take seconds. The reservation is only a shortcut.
	actx, cancel := context.WithTimeout(ctx, reserveArm)
	defer cancel()
	notify, stop, err := c.follower.WatchTurnAfter(actx, c.name, r.w, func(rev uint64) {
		r.notes.note(rev)
		// Its turn came and no call claimed it: hand the turn on (not
		// here: after runs in the backend's reader, which stop waits for).
		if r.state.CompareAndSwap(reserveOpen, reserveGone) {
			go c.giveUp(r)
		}
	}, key)
	if err != nil {
		return nil
	}
	r.notify, r.stop = notify, stop
	return r
}

// reserveArm bounds how long reserve waits for its watch to be armed.
const reserveArm = turnCatchUp

// keep records r as the place of the next Modify of its key, once its
// commit queued it; it replaces (and gives up) an older one.
func (c *Context[T]) keep(r *reservation) {
	// Others were queued for the key: it is contended, and the next call
	// looks for r (Modify claims only on a key seen contended).
	c.contention.mark(r.key)
	c.reservedMu.Lock()
	if c.reserved == nil {
		c.reserved = make(map[string]*reservation)
	}
	old := c.reserved[r.key]
	// Unless its turn came already, and it was given up then; or the
	// Context is closed, and Close has left (or will leave) only the
	// places it found here.
	closed := c.closed.Load()
	if r.state.Load() == reserveOpen && !closed {
		c.reserved[r.key] = r
		// Unclaimed for a retry delay: the caller is not coming back soon.
		r.timer = time.AfterFunc(c.opts.RetryDelay, func() {
			if r.state.CompareAndSwap(reserveOpen, reserveGone) {
				c.giveUp(r)
			}
		})
	} else {
		old = nil
	}
	c.reservedMu.Unlock()
	if old != nil && old.state.CompareAndSwap(reserveOpen, reserveGone) {
		c.giveUp(old)
	}
	if closed && r.state.CompareAndSwap(reserveOpen, reserveGone) {
		c.giveUp(r)
	}
}

// claim returns the open reservation of key, claimed, or nil.
func (c *Context[T]) claim(key string) *reservation {
	c.reservedMu.Lock()
	defer c.reservedMu.Unlock()
	r := c.reserved[key]
	if r == nil || !r.state.CompareAndSwap(reserveOpen, reserveClaimed) {
		return nil // none, or one being given up (giveUp removes it)
	}
	delete(c.reserved, key)
	r.timer.Stop()
	return r
}

// drop ends reservation r of a call that did not use it to commit: its
// place, if the store took it, is given up.
func (r *reservation) drop() {
	if r != nil {
		r.state.Store(reserveGone)
		r.stop()
	}
}

// giveUp leaves r's place in the background and ends its watch. r stays
// in reserved until it has left, so that a Close meanwhile (which ends
// the background Dequeue) leaves it too. Once closed, it leaves at once:
// Close may have left the others already.
func (c *Context[T]) giveUp(r *reservation) {
	r.stop()
	ran := c.background(func(ctx context.Context) {
		if c.queue.Dequeue(ctx, c.name, r.w, r.key) != nil && c.closed.Load() {
			return // ended by Close: still in reserved, for it
		}
		c.reservedMu.Lock()
		if c.reserved[r.key] == r {
			delete(c.reserved, r.key)
		}
		c.reservedMu.Unlock()
	})
	if !ran {
		c.leaveNow(r.w, r.key)
	}
}

// dropReservations leaves the places of the reservations no call
// claimed, for Close (background does nothing once closed), all within
// one leaveWithin: with the store unreachable, a bound each would make
// Close wait for one after the other.
func (c *Context[T]) dropReservations() {
	c.reservedMu.Lock()
	rs := c.reserved
	c.reserved = nil
	c.reservedMu.Unlock()
	if len(rs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaveWithin)
	defer cancel()
	for _, r := range rs {
		r.state.Store(reserveGone)
		if r.timer != nil {
			r.timer.Stop()
		}
		r.stop()
		_ = c.queue.Dequeue(ctx, c.name, r.w, r.key)
	}
}

// leaveWithin bounds how long giving a place up may take once background
// work has stopped (Close), when a place left queued would hold the others
// up for its hold.
const leaveWithin = 5 * time.Second

// leaveNow gives waiter w's place up in the caller's goroutine, for when
// background work has stopped (Close).
func (c *Context[T]) leaveNow(w locker.Waiter, keys ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), leaveWithin)
	defer cancel()
	_ = c.queue.Dequeue(ctx, c.name, w, keys...)
}
