package memory

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/contextd-go/contextd/locker"
)

// lockState is one holding of a lock. A lock whose deadline has passed
// counts as absent; it is not removed until a later call looks at it,
// because the backend runs no timers.
type lockState struct {
	token   string
	fence   uint64
	expires time.Time // by Options.Clock
}

// lockID names a lock: a key inside a context.
type lockID struct {
	name, key string
}

// releaseWatch is one armed WatchRelease or WatchTurn.
type releaseWatch struct {
	ch chan struct{}
	// waiter is the waiter whose turn a WatchTurn watches for; "" for
	// WatchRelease, which every release wakes.
	waiter string
}

// liveLock returns the unexpired lock on key at now, or nil. b.mu must be
// held.
func (sp *space) liveLock(key string, now time.Time) *lockState {
	lk := sp.locks[key]
	if lk == nil {
		return nil
	}
	if !now.Before(lk.expires) {
		delete(sp.locks, key) // expired: forget it now that we see it
		return nil
	}
	return lk
}

// holds reports whether the unexpired lock on key has token. An empty
// token never holds a lock, so a zero Lease cannot pass for the holder.
// b.mu must be held.
func (sp *space) holds(key, token string, now time.Time) bool {
	lk := sp.liveLock(key, now)
	return lk != nil && token != "" && lk.token == token
}

// TryAcquire takes the lock on key of context name for ttl, or returns an
// error matching locker.ErrNotAcquired if an unexpired lock exists. The
// lease's Fence is one more than the last fence handed out for any key of
// the context, even across Wipe.
func (b *Backend) TryAcquire(ctx context.Context, name, key string, ttl time.Duration) (locker.Lease, error) {
	return b.tryAcquire(ctx, name, key, ttl, nil)
}

// tryAcquire takes the lock for waiter w (nil: a caller not queued).
func (b *Backend) tryAcquire(ctx context.Context, name, key string, ttl time.Duration, w *locker.Waiter) (locker.Lease, error) {
	op := fmt.Sprintf("acquire lock on %q in %q", key, name)
	if err := begin(ctx, op); err != nil {
		return locker.Lease{}, err
	}
	if key == "" {
		return locker.Lease{}, fmt.Errorf("memory: %s: empty key", op)
	}
	if ttl <= 0 {
		return locker.Lease{}, fmt.Errorf("memory: %s: ttl %v is not positive", op, ttl)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return locker.Lease{}, errClosed(op)
	}
	sp := b.space(name)
	now := b.opts.Clock()
	fair := !b.opts.DisableFairLocks
	if sp.liveLock(key, now) != nil || fair && sp.queuedBefore(key, w, now) {
		if fair && w != nil {
			sp.enqueue(key, *w, now)
		}
		return locker.Lease{}, fmt.Errorf("memory: %s: %w", op, locker.ErrNotAcquired)
	}
	if w != nil {
		sp.leave(key, w.ID)
	}
	if sp.locks == nil {
		sp.locks = make(map[string]*lockState)
	}
	sp.fence++
	lease := locker.Lease{Name: name, Key: key, Token: randomID(), Fence: sp.fence, TTL: ttl}
	sp.locks[key] = &lockState{token: lease.Token, fence: lease.Fence, expires: now.Add(ttl)}
	return lease, nil
}

// Release gives the lock of l back and wakes the WatchRelease watchers of
// its key. It returns an error matching locker.ErrNotHeld if the lock
// expired or is held under another token.
func (b *Backend) Release(ctx context.Context, l locker.Lease) error {
	op := fmt.Sprintf("release lock on %q in %q", l.Key, l.Name)
	if err := begin(ctx, op); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed(op)
	}
	sp := b.spaces[l.Name]
	if sp == nil || !sp.holds(l.Key, l.Token, b.opts.Clock()) {
		return fmt.Errorf("memory: %s: %w", op, locker.ErrNotHeld)
	}
	delete(sp.locks, l.Key)
	b.notifyRelease(l.Name, l.Key)
	return nil
}

// Extend makes the lock of l expire ttl from now. It returns an error
// matching locker.ErrNotHeld if the lock expired or is held under another
// token.
func (b *Backend) Extend(ctx context.Context, l locker.Lease, ttl time.Duration) error {
	op := fmt.Sprintf("extend lock on %q in %q", l.Key, l.Name)
	if err := begin(ctx, op); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("memory: %s: ttl %v is not positive", op, ttl)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed(op)
	}
	sp := b.spaces[l.Name]
	if sp == nil || !sp.holds(l.Key, l.Token, b.opts.Clock()) {
		return fmt.Errorf("memory: %s: %w", op, locker.ErrNotHeld)
	}
	sp.locks[l.Key].expires = b.opts.Clock().Add(ttl)
	return nil
}

// WatchRelease arms a notification for releases of the locks on keys of
// context name, as described on locker.ReleaseWatcher: every Release of
// one of them after WatchRelease returns sends on notify without blocking
// (notify has room for one pending value). Wipe, which drops the locks,
// notifies too, since waiters may then acquire. stop disarms; it is
// idempotent, and notify is never closed. WatchRelease fails with an error
// matching errors.ErrUnsupported if Options.DisableReleaseNotify is set.
func (b *Backend) WatchRelease(ctx context.Context, name string, keys ...string) (notify <-chan struct{}, stop func(), err error) {
	return b.watch(ctx, name, "", keys)
}

// WatchTurn arms a notification for waiter w, as described on
// locker.TurnWatcher: a Release, a Dequeue or a served commit on one of
// keys notifies w only if w is then first in the key's queue or no live
// waiter is queued for it. It fails with an error matching
// errors.ErrUnsupported if Options.DisableReleaseNotify or
// Options.DisableFairLocks is set.
func (b *Backend) WatchTurn(ctx context.Context, name string, w locker.Waiter, keys ...string) (notify <-chan struct{}, stop func(), err error) {
	if b.opts.DisableFairLocks {
		return nil, nil, unsupported(fmt.Sprintf("watch turns in %q", name), "DisableFairLocks")
	}
	if w.ID == "" {
		return nil, nil, fmt.Errorf("memory: watch turns in %q: waiter needs an ID", name)
	}
	return b.watch(ctx, name, w.ID, keys)
}

func (b *Backend) watch(ctx context.Context, name, waiter string, keys []string) (notify <-chan struct{}, stop func(), err error) {
	op := fmt.Sprintf("watch releases in %q", name)
	if b.opts.DisableReleaseNotify {
		return nil, nil, unsupported(op, "DisableReleaseNotify")
	}
	if err := begin(ctx, op); err != nil {
		return nil, nil, err
	}
	w := &releaseWatch{ch: make(chan struct{}, 1), waiter: waiter}
	ids := make([]lockID, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, lockID{name, k})
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, nil, errClosed(op)
	}
	for _, id := range ids {
		set := b.watchers[id]
		if set == nil {
			set = make(map[*releaseWatch]struct{})
			b.watchers[id] = set
		}
		set[w] = struct{}{}
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			for _, id := range ids {
				if set := b.watchers[id]; set != nil {
					delete(set, w)
					if len(set) == 0 {
						delete(b.watchers, id)
					}
				}
			}
		})
	}
	return w.ch, stop, nil
}

// notifyRelease wakes the watchers of one lock: the WatchRelease ones,
// and of the WatchTurn ones the waiter first in the key's queue, or all
// of them if no live waiter is queued. b.mu must be held.
func (b *Backend) notifyRelease(name, key string) {
	set := b.watchers[lockID{name, key}]
	if len(set) == 0 {
		return
	}
	var head string
	if sp := b.spaces[name]; sp != nil && !b.opts.DisableFairLocks {
		head = sp.queueHead(key, b.opts.Clock())
	}
	for w := range set {
		if head != "" && w.waiter != "" && w.waiter != head {
			continue // not its turn: the head goes first
		}
		select {
		case w.ch <- struct{}{}:
		default: // one notification is already pending; that is enough
		}
	}
}

var _ locker.Lister = (*Backend)(nil)

// ListLocks lists the context's unexpired locks, sorted by key; Expires is
// by Options.Clock.
func (b *Backend) ListLocks(ctx context.Context, name string) ([]locker.Held, error) {
	op := fmt.Sprintf("list locks of %q", name)
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed(op)
	}
	sp := b.spaces[name]
	if sp == nil {
		return nil, nil
	}
	now := b.opts.Clock()
	var held []locker.Held
	for key := range sp.locks {
		if lk := sp.liveLock(key, now); lk != nil {
			held = append(held, locker.Held{Key: key, Token: lk.token, Fence: lk.fence, Expires: lk.expires})
		}
	}
	slices.SortFunc(held, func(a, b locker.Held) int { return strings.Compare(a.Key, b.Key) })
	return held, nil
}
