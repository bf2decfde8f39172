package contextd

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/contextd-go/contextd/backend"
)

// WatchOption changes what a Watch delivers.
type WatchOption func(*watchOptions)

type watchOptions struct {
	from    uint64
	fromSet bool
	prefix  string
	key     string
	keySet  bool
	initial bool
}

// FromRevision makes Watch deliver every change after revision rev first
// (read from the backend's change log), then the changes as they happen:
// a watcher that saw everything up to rev resumes without gaps or
// duplicates. When the log no longer reaches back to rev (or the backend
// keeps none), the watcher gets a Reset, then the current state as with
// WithInitial. Either way an UpToDate change marks where the replay ends.
func FromRevision(rev uint64) WatchOption {
	return func(o *watchOptions) { o.from, o.fromSet = rev, true }
}

// KeyPrefix makes Watch deliver only changes of keys that start with p
// (Resets and the UpToDate marker still come).
func KeyPrefix(p string) WatchOption {
	return func(o *watchOptions) { o.prefix = p }
}

// Key makes Watch deliver only changes of key (Resets and the UpToDate
// marker still come).
func Key(key string) WatchOption {
	return func(o *watchOptions) { o.key, o.keySet = key, true }
}

// WithInitial makes Watch deliver the current state first — one change
// with Initial set per key — then a change with UpToDate set, also for an
// empty context, then the changes as they happen.
//
// The current state is the copy's: the state at the UpToDate revision,
// plus this instance's own writes above it (read-your-writes), each with
// its own Revision. The changes of such a key up to that revision, which
// arrive later, are not delivered: they would take the reader back.
func WithInitial() WatchOption {
	return func(o *watchOptions) { o.initial = true }
}

// matches reports whether a change of key passes the filters.
func (o *watchOptions) matches(key string) bool {
	if o.keySet && key != o.key {
		return false
	}
	return strings.HasPrefix(key, o.prefix)
}

// watcher feeds one Watch channel. The cache hands it changes under the
// cache lock and must never block, so changes go into the channel's buffer
// directly; when the buffer is full they are dropped and the watcher's
// goroutine delivers a Reset as soon as the reader makes room. That
// goroutine owns closing the channel.
//
// While the goroutine first replays history or the initial state
// (backfill), pushed changes wait in backlog, bounded like the channel.
type watcher[T any] struct {
	out  chan Change[T]
	opts watchOptions
	// onReset is called for each Reset sent (Trace.WatchReset).
	onReset func()

	mu       sync.Mutex
	closed   bool
	overrun  bool   // changes were dropped: a Reset is owed
	dropped  uint64 // changes dropped so far
	wake     chan struct{}
	backfill bool
	backlog  []Change[T]
	// ahead holds the keys whose initial state was an own write above the
	// UpToDate revision (read-your-writes puts it in the copy before the
	// revisions below it arrive), with that write's revision: their
	// changes up to it would take the reader back, and are not delivered.
	ahead map[string]uint64
}

// stale reports whether ch is a change the reader has already seen the
// outcome of in its initial state (see watcher.ahead).
func stale[T any](ahead map[string]uint64, ch Change[T]) bool {
	r, ok := ahead[ch.Key]
	return ok && ch.Revision <= r
}

// push delivers changes without blocking, or drops them and owes a Reset.
func (w *watcher[T]) push(changes []Change[T]) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	for _, ch := range changes {
		if !w.opts.matches(ch.Key) || w.opts.fromSet && ch.Revision <= w.opts.from {
			continue
		}
		if w.backfill && !w.overrun {
			if len(w.backlog) < cap(w.out) {
				w.backlog = append(w.backlog, ch)
				continue
			}
			w.overrun = true
			w.backlog = nil
			w.signal()
		}
		if !w.overrun && !w.backfill {
			if stale(w.ahead, ch) {
				continue
			}
			select {
			case w.out <- ch:
				continue
			default:
				w.overrun = true
				w.signal()
			}
		}
		w.dropped++
	}
}

// reset owes the reader a Reset: the whole copy was replaced.
func (w *watcher[T]) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.overrun = true
		w.backlog = nil
		w.dropped++
		w.signal()
	}
}

// signal wakes the goroutine; callers hold mu.
func (w *watcher[T]) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// send delivers one change, blocking until the reader takes it; it reports
// false once ctx or the Context ends.
func (w *watcher[T]) send(ctx context.Context, done <-chan struct{}, ch Change[T]) bool {
	select {
	case w.out <- ch:
		return true
	case <-ctx.Done():
		return false
	case <-done:
		return false
	}
}

// finishBackfill hands over the changes that arrived during the backfill,
// then lets push deliver directly again. It reports false once ctx or the
// Context ends.
func (w *watcher[T]) finishBackfill(ctx context.Context, done <-chan struct{}) bool {
	for {
		w.mu.Lock()
		if w.overrun || len(w.backlog) == 0 {
			w.backfill, w.backlog = false, nil
			w.mu.Unlock()
			return true
		}
		next := w.backlog
		w.backlog = nil
		ahead := w.ahead // complete: the backfill has ended
		w.mu.Unlock()
		for _, ch := range next {
			if stale(ahead, ch) {
				continue
			}
			if !w.send(ctx, done, ch) {
				return false
			}
		}
	}
}

// run delivers the backfill (if any), then owed Resets, until ctx or the
// Context ends, then closes out.
func (w *watcher[T]) run(ctx context.Context, done <-chan struct{}, backfill func(func(Change[T]) bool) bool) {
	defer func() {
		w.mu.Lock()
		w.closed = true
		close(w.out)
		w.mu.Unlock()
	}()
	if backfill != nil {
		if !backfill(func(ch Change[T]) bool { return w.send(ctx, done, ch) }) || !w.finishBackfill(ctx, done) {
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-w.wake:
		}
		// Send a Reset, then resume direct delivery; if more changes were
		// dropped while the Reset waited for room, the reader may have
		// re-read before them, so send another.
		for {
			w.mu.Lock()
			seen := w.dropped
			w.mu.Unlock()
			if !w.send(ctx, done, Change[T]{Reset: true}) {
				return
			}
			w.onReset()
			w.mu.Lock()
			caughtUp := w.dropped == seen
			if caughtUp {
				w.overrun = false
			}
			w.mu.Unlock()
			if caughtUp {
				break
			}
		}
	}
}

// Watch returns a channel of the changes to the context, in revision order,
// both this instance's writes and others': by default those from the
// moment of the call; FromRevision replays history first, WithInitial the
// current state; KeyPrefix and Key filter by key.
//
// The channel is closed when ctx is done or the Context is closed. It buffers
// Options.WatchBuffer changes; a reader that falls further behind does not
// hold the Context up: the changes it missed are replaced by one Change with
// Reset set, followed by fresh changes. A Reset is also sent when the
// instance had to replace its whole copy. When the instance catches up by
// a snapshot that continues its copy (events were lost and the store keeps
// no change log, or not far enough back), the watcher gets, without a
// Reset, each changed key's latest value at the revision that wrote it
// (and each key gone, at the snapshot's revision), in revision order:
// values a key held only in between are not delivered, and revisions are
// skipped. Watch on a closed (or nil) Context returns a closed channel.
func (c *Context[T]) Watch(ctx context.Context, opts ...WatchOption) <-chan Change[T] {
	if c == nil {
		closed := make(chan Change[T])
		close(closed)
		return closed
	}
	var o watchOptions
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	w := &watcher[T]{out: make(chan Change[T], c.opts.WatchBuffer), opts: o, wake: make(chan struct{}, 1), onReset: c.opts.Trace.watchReset}
	w.backfill = o.fromSet || o.initial
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed.Load() {
		close(w.out)
		return w.out
	}
	// Registered under the cache's lock, at the view it holds: every
	// change after that view is pushed to the watcher, and the backfill
	// covers everything up to it.
	c.cache.mu.Lock()
	c.cache.watchers = append(c.cache.watchers, w)
	at := c.cache.current()
	c.cache.mu.Unlock()
	var backfill func(func(Change[T]) bool) bool
	if w.backfill {
		backfill = func(send func(Change[T]) bool) bool { return c.backfill(ctx, w, at, send) }
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		w.run(ctx, c.done, backfill)
		c.cache.mu.Lock()
		c.cache.watchers = deleteFirst(c.cache.watchers, w)
		c.cache.mu.Unlock()
	}()
	return w.out
}

// backfill sends what a watcher with FromRevision or WithInitial gets
// before live changes: the logged changes after o.from up to the view at,
// or (WithInitial, or a log that does not reach back, after a Reset) the
// state of at; then the UpToDate marker. It reports false once send does.
func (c *Context[T]) backfill(ctx context.Context, w *watcher[T], at *view[T], send func(Change[T]) bool) bool {
	o := &w.opts
	if o.fromSet && !o.initial {
		replayed, ok := c.replay(ctx, o, at, send)
		if !ok {
			return false
		}
		if !replayed && !send(Change[T]{Reset: true}) {
			return false
		}
		if replayed {
			return send(Change[T]{UpToDate: true, Revision: at.applied})
		}
	}
	for k, e := range at.entries.All() {
		if e.deleted() || !o.matches(k) {
			continue
		}
		if e.rev > at.applied {
			w.mu.Lock()
			if w.ahead == nil {
				w.ahead = make(map[string]uint64)
			}
			w.ahead[k] = e.rev
			w.mu.Unlock()
		}
		ch := Change[T]{Key: k, Value: e.value, Revision: e.rev, Expires: unixMilli(e.expires()), Err: e.err(), Initial: true}
		if !send(ch) {
			return false
		}
	}
	return send(Change[T]{UpToDate: true, Revision: at.applied})
}

// replay sends the logged changes after o.from up to at.applied. It
// reports replayed false when the log cannot serve them (no log, another
// epoch, truncated, or an error: the caller sends the state instead), and
// ok false once send does.
func (c *Context[T]) replay(ctx context.Context, o *watchOptions, at *view[T], send func(Change[T]) bool) (replayed, ok bool) {
	if o.from >= at.applied {
		return true, true // nothing happened after from that the copy has
	}
	if c.changeLog == nil || at.epoch == "" {
		return false, true
	}
	evs, err := c.changeLog.ChangesSince(ctx, c.name, at.epoch, o.from)
	if err != nil {
		if !errors.Is(err, backend.ErrLogTruncated) {
			c.opts.Logger.Warn("contextd: reading the change log for a watch failed", "context", c.name, "error", err)
		}
		return false, ctx.Err() == nil
	}
	for _, ev := range evs {
		if ev.Revision > at.applied {
			break // later changes come live
		}
		ups, err := c.prepare(ctx, ev)
		if err != nil {
			return false, ctx.Err() == nil
		}
		for _, u := range ups {
			if !o.matches(u.key) {
				continue
			}
			ch := Change[T]{Key: u.key, Value: u.value, Deleted: u.deleted, Revision: ev.Revision, Origin: ev.Origin, Expires: unixMilli(u.expires), Err: u.err}
			if !send(ch) {
				return true, false
			}
		}
	}
	return true, true
}

func deleteFirst[E comparable](s []E, v E) []E {
	for i := range s {
		if s[i] == v {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}
