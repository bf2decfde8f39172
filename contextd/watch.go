package contextd

import (
	"context"
	"sync"
)

// watcher queues changes for one Watch channel. The cache pushes under its
// lock and never blocks; a goroutine of the watcher forwards the queue to
// the channel at the reader's pace.
type watcher[T any] struct {
	out   chan Change[T]
	limit int

	mu      sync.Mutex
	queue   []Change[T]
	overrun bool // changes were dropped: send a Reset before the queue
	wake    chan struct{}
}

// push queues changes; if the queue would exceed its limit, everything queued
// is replaced by one Reset, since the reader must re-read anyway.
func (w *watcher[T]) push(changes []Change[T]) {
	w.mu.Lock()
	if len(w.queue)+len(changes) > w.limit {
		w.queue = w.queue[:0]
		w.overrun = true
	} else {
		w.queue = append(w.queue, changes...)
	}
	w.mu.Unlock()
	w.signal()
}

// reset drops what is queued and sends a Reset next.
func (w *watcher[T]) reset() {
	w.mu.Lock()
	w.queue = w.queue[:0]
	w.overrun = true
	w.mu.Unlock()
	w.signal()
}

func (w *watcher[T]) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take returns what is queued, a Reset first if changes were dropped.
func (w *watcher[T]) take(buf []Change[T]) []Change[T] {
	w.mu.Lock()
	defer w.mu.Unlock()
	buf = buf[:0]
	if w.overrun {
		buf = append(buf, Change[T]{Reset: true})
		w.overrun = false
	}
	buf = append(buf, w.queue...)
	w.queue = w.queue[:0]
	return buf
}

// run forwards queued changes until ctx or the Context ends, then closes out.
func (w *watcher[T]) run(ctx context.Context, done <-chan struct{}) {
	defer close(w.out)
	var batch []Change[T]
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-w.wake:
		}
		batch = w.take(batch)
		for _, ch := range batch {
			select {
			case w.out <- ch:
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}
}

// Watch returns a channel of the changes to the context from the moment of
// the call, in revision order, both this instance's writes and others'.
//
// The channel is closed when ctx is done or the Context is closed. A reader
// that falls more than Options.WatchBuffer changes behind does not hold the
// Context up: the changes it missed are replaced by one Change with Reset
// set, followed by fresh changes; a Reset is also sent when the instance had
// to replace its whole copy. Watch on a closed Context returns a closed
// channel.
func (c *Context[T]) Watch(ctx context.Context) <-chan Change[T] {
	w := &watcher[T]{out: make(chan Change[T]), limit: c.opts.WatchBuffer, wake: make(chan struct{}, 1)}
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
