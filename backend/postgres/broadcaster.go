package postgres

import (
	"context"
	"fmt"
	"sync"

	"github.com/contextd-go/contextd/broadcaster"
)

// Publish sends payload on channel with NOTIFY: inline when it fits
// (base64, under NOTIFY's 8000 bytes), else stored in the messages table
// with a pointer notified, in one statement either way.
func (b *Backend) Publish(ctx context.Context, channel string, payload []byte) error {
	op := fmt.Sprintf("publish on %q", channel)
	if err := b.begin(ctx, op); err != nil {
		return err
	}
	pgch := pgChannel(b.opts.Schema, channel)
	var err error
	if note := inlineNote(payload); note != "" {
		_, err = b.pool.Exec(ctx, b.sql.publish, pgch, note)
	} else {
		_, err = b.pool.Exec(ctx, b.sql.publishLarge, pgch, payload)
	}
	if err != nil {
		return wrap(ctx, op, err)
	}
	return nil
}

// Subscribe returns a Subscription once the Backend's listening connection
// LISTENs to the channel. All Subscriptions (and release watchers) of a
// Backend share that one connection.
func (b *Backend) Subscribe(ctx context.Context, channel string) (broadcaster.Subscription, error) {
	op := fmt.Sprintf("subscribe to %q", channel)
	if err := b.begin(ctx, op); err != nil {
		return nil, err
	}
	s := &subscription{
		b:       b,
		channel: channel,
		pgch:    pgChannel(b.opts.Schema, channel),
		signal:  make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	if err := b.lis.add(ctx, s.pgch, s); err != nil {
		return nil, wrap(ctx, op, err)
	}
	return s, nil
}

// subscription is a sink of the listener with a bounded queue of its own,
// read by Next.
type subscription struct {
	b             *Backend
	channel, pgch string

	mu       sync.Mutex
	queue    []item
	owesLoss bool // told interrupted, not yet resumed
	closed   bool
	signal   chan struct{} // a new item, or closing; capacity 1
	done     chan struct{} // closed by Close and by the Backend's Close
}

type itemKind uint8

const (
	itemNote itemKind = iota
	itemInterrupted
	itemLoss
)

type item struct {
	kind itemKind
	note string
}

func (s *subscription) push(it item) {
	s.queue = append(s.queue, it)
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// deliver queues a notification; a full queue is dropped and replaced by
// a loss signal, as the broadcaster contract asks.
func (s *subscription) deliver(note string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if len(s.queue) >= s.b.opts.SubscriptionBuffer {
		s.queue = s.queue[:0]
		s.push(item{kind: itemLoss})
		return
	}
	s.push(item{kind: itemNote, note: note})
}

func (s *subscription) interrupted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.owesLoss {
		return
	}
	s.owesLoss = true
	s.push(item{kind: itemInterrupted})
}

func (s *subscription) resumed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.owesLoss {
		return
	}
	s.owesLoss = false
	s.push(item{kind: itemLoss})
}

func (s *subscription) closedByBackend() { s.markClosed() }

// markClosed reports whether it closed the subscription.
func (s *subscription) markClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	s.queue = nil
	close(s.done)
	return true
}

// Next returns the next message, fetching one that travelled as a pointer.
// A notification that cannot be read (a pointer whose row was trimmed, a
// payload another program sent) is reported as a loss.
func (s *subscription) Next(ctx context.Context) (broadcaster.Message, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return broadcaster.Message{}, broadcaster.ErrClosed
		}
		if len(s.queue) > 0 {
			it := s.queue[0]
			s.queue[0] = item{}
			s.queue = s.queue[1:]
			if len(s.queue) == 0 {
				s.queue = nil
			}
			s.mu.Unlock()
			switch it.kind {
			case itemInterrupted:
				return broadcaster.Message{Interrupted: true}, nil
			case itemLoss:
				return broadcaster.Message{Loss: true}, nil
			}
			payload, err := s.b.resolve(ctx, it.note)
			if err != nil && ctx.Err() != nil {
				// Not lost: read it again next time.
				s.mu.Lock()
				if !s.closed {
					s.queue = append([]item{it}, s.queue...)
				}
				s.mu.Unlock()
				return broadcaster.Message{}, ctx.Err()
			}
			if err != nil {
				return broadcaster.Message{Loss: true}, nil
			}
			return broadcaster.Message{Payload: payload}, nil
		}
		s.mu.Unlock()
		select {
		case <-s.signal:
		case <-s.done:
		case <-ctx.Done():
			return broadcaster.Message{}, ctx.Err()
		}
	}
}

// Close ends the subscription; a blocked Next returns
// broadcaster.ErrClosed. The channel is UNLISTENed once no other
// subscription of the Backend wants it.
func (s *subscription) Close() error {
	if s.markClosed() {
		s.b.lis.remove(s.pgch, s)
	}
	return nil
}
