package contextd

import (
	"context"
	"sync"
)

// watcher feeds one Watch channel. The cache hands it changes under the
// cache lock and must never block, so changes go into the channel's buffer
// directly; when the buffer is full they are dropped and the watcher's
// goroutine delivers a Reset as soon as the reader makes room. That
// goroutine owns closing the channel.
type watcher[T any] struct {
	out chan Change[T]
	// onReset is called for each Reset sent (Trace.WatchReset).
	onReset func()

	mu      sync.Mutex
	closed  bool
	overrun bool   // changes were dropped: a Reset is owed
	dropped uint64 // changes dropped so far
	wake    chan struct{}
}

// push delivers changes without blocking, or drops them and owes a Reset.
func (w *watcher[T]) push(changes []Change[T]) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	for _, ch := range changes {
		if !w.overrun {
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

// run delivers owed Resets until ctx or the Context ends, then closes out.
func (w *watcher[T]) run(ctx context.Context, done <-chan struct{}) {
	defer func() {
		w.mu.Lock()
		w.closed = true
		close(w.out)
		w.mu.Unlock()
	}()
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
			select {
			case w.out <- Change[T]{Reset: true}:
				w.onReset()
			case <-ctx.Done():
				return
			case <-done:
				return
			}
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

// Watch returns a channel of the changes to the context from the moment of
// the call, in revision order, both this instance's writes and others'.
//
// The channel is closed when ctx is done or the Context is closed. It buffers
// Options.WatchBuffer changes; a reader that falls further behind does not
// hold the Context up: the changes it missed are replaced by one Change with
// Reset set, followed by fresh changes. A Reset is also sent when the
// instance had to replace its whole copy. Watch on a closed (or nil) Context
// returns a closed channel.
func (c *Context[T]) Watch(ctx context.Context) <-chan Change[T] {
	if c == nil {
		closed := make(chan Change[T])
		close(closed)
		return closed
	}
	w := &watcher[T]{out: make(chan Change[T], c.opts.WatchBuffer), wake: make(chan struct{}, 1), onReset: c.opts.Trace.watchReset}
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed.Load() {
		close(w.out)
		return w.out
	}
	c.cache.mu.Lock()
	c.cache.watchers = append(c.cache.watchers, w)
	c.cache.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		w.run(ctx, c.done)
		c.cache.mu.Lock()
		c.cache.watchers = deleteFirst(c.cache.watchers, w)
		c.cache.mu.Unlock()
	}()
	return w.out
}

func deleteFirst[E comparable](s []E, v E) []E {
	for i := range s {
		if s[i] == v {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}
