package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/contextd-go/contextd/broadcaster"
)

// Publish delivers a copy of payload to every current Subscription of
// channel. It never blocks: a Subscription whose buffer is full drops its
// unread messages and this one, and reports a loss instead.
func (b *Backend) Publish(ctx context.Context, channel string, payload []byte) error {
	op := fmt.Sprintf("publish to %q", channel)
	if err := begin(ctx, op); err != nil {
		return err
	}
	b.subMu.Lock()
	defer b.subMu.Unlock()
	if b.closed {
		return errClosed(op)
	}
	b.deliver(channel, payload, false, "")
	return nil
}

// Subscribe returns a Subscription of channel that is live at once: it
// receives every message published after Subscribe returns. The
// Subscription lives until it or the Backend is closed; ctx bounds only
// this call.
func (b *Backend) Subscribe(ctx context.Context, channel string) (broadcaster.Subscription, error) {
	op := fmt.Sprintf("subscribe to %q", channel)
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	s := &subscription{
		b:       b,
		channel: channel,
		limit:   b.opts.SubscriberBuffer,
		ready:   make(chan struct{}, 1),
	}
	b.subMu.Lock()
	defer b.subMu.Unlock()
	if b.closed {
		return nil, errClosed(op)
	}
	b.subs[channel] = append(b.subs[channel], s)
	return s, nil
}

// deliver queues a copy of payload on every Subscription of channel.
// b.subMu must be held: holding it for the whole delivery gives every
// subscriber the same order of messages. With owned set the payload is the
// Backend's own (a commit's event, encoded for this delivery and kept by
// nobody else): one subscriber takes it as it is, sparing a copy, and the
// others get copies, so that no reader sees another's changes to its
// message. origin is the origin of a commit's event, which subscriptions
// that skip that origin's echoes (SkipOwnEchoes) do not get; "" for a
// payload published with Publish.
func (b *Backend) deliver(channel string, payload []byte, owned bool, origin string) {
	for _, s := range b.subs[channel] {
		if origin != "" && s.skipOrigin == origin {
			continue
		}
		if owned {
			s.push(payload, false)
			owned = false
			continue
		}
		s.push(payload, true)
	}
}

// receives reports whether a commit's event of origin published on channel
// has a Subscription to go to. b.subMu must be held.
func (b *Backend) receives(channel, origin string) bool {
	for _, s := range b.subs[channel] {
		if origin == "" || s.skipOrigin != origin {
			return true
		}
	}
	return false
}

// subscription is the memory Backend's broadcaster.Subscription. Publishers
// append to its queue and signal ready; its reader takes from the queue
// and waits on ready when it is empty. No goroutine runs for it.
type subscription struct {
	b       *Backend
	channel string
	limit   int // most unread messages before an overflow
	// skipOrigin is the origin whose commits' events this subscription
	// does not get (SkipOwnEchoes); "" for none. Guarded by b.subMu.
	skipOrigin string

	mu sync.Mutex
	// queue[head:] are the unread payloads, oldest first. The reader
	// advances head instead of reslicing, and both go back to the start
	// when it has read everything, so a reader that keeps up reuses one
	// array instead of costing an allocation per message.
	queue  [][]byte
	head   int
	lost   bool // messages were dropped since the reader last looked
	closed bool
	// ready holds one pending wake-up for the reader; publishers send
	// without blocking, so a burst of messages costs one wake-up. It is
	// closed (under mu, so no send can follow) when the subscription is.
	ready chan struct{}
}

var _ broadcaster.Subscription = (*subscription)(nil)

// push queues payload (a copy of it if clone is set), or, if the queue is
// full, drops the queue and payload and flags a loss, as Redis drops a
// client that exceeds its output buffer.
func (s *subscription) push(payload []byte, clone bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if len(s.queue)-s.head >= s.limit {
		s.dropLocked()
		return
	}
	if clone {
		payload = cloneBytes(payload)
	}
	if len(s.queue) == cap(s.queue) && s.head >= len(s.queue)/2 && s.head > 0 {
		// Full at the back, at least half free at the front: move the
		// unread down (at most once per len/2 reads, so O(1) a message).
		n := copy(s.queue, s.queue[s.head:])
		clear(s.queue[n:])
		s.queue, s.head = s.queue[:n], 0
	}
	s.queue = append(s.queue, payload)
	s.wakeLocked()
}

// SkipOwnEchoes makes the subscription leave out the events of the commits
// that CommitAndPublish makes for batches whose Origin is origin (not
// payloads sent with Publish): for a committer that subscribes for others'
// changes and applies its own commits from their replies. On this Backend
// a commit is synchronous, so its reply is never lost to the network as a
// Redis reply can be; a committer that still gets an error it cannot
// trust (a wrapper's, say) must catch up from the change log instead of
// waiting for the echo. Delivering an echo costs the reader's wake-up,
// most of what publishing costs a writer.
func (s *subscription) SkipOwnEchoes(origin string) {
	s.b.subMu.Lock()
	defer s.b.subMu.Unlock()
	s.skipOrigin = origin
}

// dropLocked drops the unread messages and flags the loss. s.mu must be
// held and s open.
func (s *subscription) dropLocked() {
	clear(s.queue) // let the payloads be collected even if the array lives on
	s.queue, s.head = nil, 0
	s.lost = true
	s.wakeLocked()
}

func (s *subscription) wakeLocked() {
	select {
	case s.ready <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Next returns the next message. A loss signal comes before every message
// published after the loss. Next blocks until there is one, ctx is done
// (it returns ctx.Err()), or the Subscription or its Backend is closed (it
// returns an error matching ErrClosed).
func (s *subscription) Next(ctx context.Context) (broadcaster.Message, error) {
	if ctx == nil {
		return broadcaster.Message{}, fmt.Errorf("memory: subscription to %q: nil context.Context", s.channel)
	}
	for {
		if err := ctx.Err(); err != nil {
			return broadcaster.Message{}, err
		}
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return broadcaster.Message{}, fmt.Errorf("memory: subscription to %q: %w", s.channel, ErrClosed)
		case s.lost:
			s.lost = false
			s.mu.Unlock()
			return broadcaster.Message{Loss: true}, nil
		case s.head < len(s.queue):
			p := s.queue[s.head]
			s.queue[s.head] = nil
			if s.head++; s.head == len(s.queue) {
				s.queue, s.head = s.queue[:0], 0
			}
			s.mu.Unlock()
			return broadcaster.Message{Payload: p}, nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return broadcaster.Message{}, ctx.Err()
		case <-s.ready:
			// Something changed; look again. A stale wake-up only costs
			// one more turn of the loop.
		}
	}
}

// Close ends the subscription: a blocked Next returns ErrClosed, and no
// more messages are queued. It is idempotent and returns nil.
func (s *subscription) Close() error {
	if !s.shut() {
		return nil
	}
	s.b.subMu.Lock()
	defer s.b.subMu.Unlock()
	if set := slices.DeleteFunc(s.b.subs[s.channel], func(o *subscription) bool { return o == s }); len(set) > 0 {
		s.b.subs[s.channel] = set
	} else {
		delete(s.b.subs, s.channel)
	}
	return nil
}

// shut marks the subscription closed and wakes its reader, without
// touching the registry (the Backend's Close holds it). It reports whether
// the subscription was open.
func (s *subscription) shut() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	s.queue, s.head = nil, 0
	s.lost = false
	close(s.ready)
	return true
}
