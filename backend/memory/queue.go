package memory

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/contextd-go/contextd/locker"
)

// waiterState is one queued waiter of a context (locker.FairLocker): its
// ticket, the same in every queue it is in, and how long it keeps its
// place without a new attempt.
type waiterState struct {
	ticket   uint64
	deadline time.Time
	keys     map[string]struct{} // the queues it is in
}

// queue is one key's waiters, ordered by ticket.
type queue []string

// queueHead returns the live waiter first in key's queue, "" if there is
// none, forgetting waiters whose hold has passed. b.mu must be held.
func (sp *space) queueHead(key string, now time.Time) string {
	for {
		q := sp.queues[key]
		if len(q) == 0 {
			delete(sp.queues, key)
			return ""
		}
		if w := sp.waiters[q[0]]; w != nil && now.Before(w.deadline) {
			return q[0]
		}
		sp.forget(q[0])
	}
}

// queuedBefore reports whether key has a live waiter queued before w (any
// live waiter when w is nil), which a caller must let go first. b.mu must
// be held.
func (sp *space) queuedBefore(key string, w *locker.Waiter, now time.Time) bool {
	head := sp.queueHead(key, now)
	return head != "" && (w == nil || head != w.ID)
}

// enqueue gives w its place in key's queue: the ticket it holds, or the
// next one, and renews its hold. b.mu must be held.
func (sp *space) enqueue(key string, w locker.Waiter, now time.Time) {
	ws := sp.waiters[w.ID]
	if ws == nil {
		if sp.waiters == nil {
			sp.waiters = make(map[string]*waiterState)
			sp.queues = make(map[string]queue)
		}
		sp.tickets++
		ws = &waiterState{ticket: sp.tickets, keys: make(map[string]struct{})}
		sp.waiters[w.ID] = ws
	}
	ws.deadline = now.Add(w.Hold)
	if _, in := ws.keys[key]; in {
		return
	}
	ws.keys[key] = struct{}{}
	q := sp.queues[key]
	at, _ := slices.BinarySearchFunc(q, ws.ticket, func(id string, t uint64) int {
		return cmpTicket(sp.waiters[id].ticket, t)
	})
	sp.queues[key] = slices.Insert(q, at, w.ID)
}

func cmpTicket(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// leave removes waiter id from key's queue, and from the waiters when it
// is in no queue any more; it reports whether id was first in the queue
// and others wait behind it. b.mu must be held.
func (sp *space) leave(key, id string) (wasHeadOfOthers bool) {
	ws := sp.waiters[id]
	if ws == nil {
		return false
	}
	if _, in := ws.keys[key]; !in {
		return false
	}
	delete(ws.keys, key)
	if len(ws.keys) == 0 {
		delete(sp.waiters, id)
	}
	q := sp.queues[key]
	i := slices.Index(q, id)
	q = slices.Delete(q, i, i+1)
	sp.queues[key] = q
	return i == 0 && len(q) > 0
}

// forget removes waiter id from every queue. b.mu must be held.
func (sp *space) forget(id string) {
	ws := sp.waiters[id]
	if ws == nil {
		// A stale entry: drop it from wherever it is.
		for key, q := range sp.queues {
			if i := slices.Index(q, id); i >= 0 {
				sp.queues[key] = slices.Delete(q, i, i+1)
			}
		}
		return
	}
	for key := range ws.keys {
		sp.leave(key, id)
	}
}

// TryAcquireQueued takes the lock on key for waiter w as
// locker.FairLocker describes: only if it is free and no live waiter was
// queued before w; otherwise w is queued (keeping its ticket) and the
// error matches locker.ErrNotAcquired. It fails with an error matching
// errors.ErrUnsupported if Options.DisableFairLocks is set.
func (b *Backend) TryAcquireQueued(ctx context.Context, name, key string, ttl time.Duration, w locker.Waiter) (locker.Lease, error) {
	if b.opts.DisableFairLocks {
		return locker.Lease{}, unsupported(fmt.Sprintf("acquire lock on %q in %q", key, name), "DisableFairLocks")
	}
	if w.ID == "" || w.Hold <= 0 {
		return locker.Lease{}, fmt.Errorf("memory: acquire lock on %q in %q: waiter needs an ID and a positive Hold", key, name)
	}
	return b.tryAcquire(ctx, name, key, ttl, &w)
}

// Dequeue removes w from the queues of keys of context name, waking the
// WatchRelease watchers of a key whose queue w was first in. It fails with
// an error matching errors.ErrUnsupported if Options.DisableFairLocks is
// set.
func (b *Backend) Dequeue(ctx context.Context, name string, w locker.Waiter, keys ...string) error {
	op := fmt.Sprintf("dequeue a waiter in %q", name)
	if b.opts.DisableFairLocks {
		return unsupported(op, "DisableFairLocks")
	}
	if err := begin(ctx, op); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed(op)
	}
	sp := b.spaces[name]
	if sp == nil {
		return nil
	}
	for _, key := range keys {
		if sp.leave(key, w.ID) {
			b.notifyRelease(name, key)
		}
	}
	return nil
}
