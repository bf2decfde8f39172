package sqlite

import (
	"context"
	"fmt"
	"sync"

	"github.com/contextd-go/contextd/broadcaster"
)

// trimEvery is how often the logs are trimmed, in messages or revisions:
// the publisher of every 64th message id deletes the messages older than
// Options.MessageLogLength, the commit of every 64th revision the logged
// events older than Options.ChangeLogLength. Trimming in steps changes
// fewer pages per commit.
const trimEvery = 64

// Publish appends payload to the message log of the file with one
// statement; every Subscription of channel, in any process, reads it from
// there.
func (b *Backend) Publish(ctx context.Context, channel string, payload []byte) error {
	op := fmt.Sprintf("publish to %q", channel)
	if err := b.begin(ctx, op); err != nil {
		return err
	}
	var id int64
	err := b.writeOne(ctx, func(ctx context.Context, c *dbConn) error {
		var err error
		id, err = insertMessage(ctx, c, channel, payload)
		return err
	})
	if err != nil {
		return b.wrap(ctx, op, err)
	}
	if id%trimEvery == 0 {
		// Maintenance: if it fails, the next trim point trims more.
		_ = b.writeTx(ctx, func(ctx context.Context, c *dbConn, _ int64) error {
			return b.trimMessages(ctx, c, id)
		})
	}
	b.poll.kick()
	return nil
}

// appendMessage appends a message in the write transaction on c, and trims
// the log when the message's id is a multiple of trimEvery.
func (b *Backend) appendMessage(ctx context.Context, c *dbConn, channel string, payload []byte) error {
	id, err := insertMessage(ctx, c, channel, payload)
	if err != nil {
		return err
	}
	if id%trimEvery == 0 {
		return b.trimMessages(ctx, c, id)
	}
	return nil
}

// insertMessage appends a message and returns its id.
func insertMessage(ctx context.Context, c *dbConn, channel string, payload []byte) (int64, error) {
	res, err := c.exec(ctx, sqlPublish, channel, blob(payload))
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// trimMessages deletes the messages older than Options.MessageLogLength
// before id, in a write transaction on c.
func (b *Backend) trimMessages(ctx context.Context, c *dbConn, id int64) error {
	upto := id - int64(b.opts.MessageLogLength)
	if upto <= 0 {
		return nil
	}
	if _, err := c.exec(ctx, sqlTrimMessages, upto); err != nil {
		return err
	}
	_, err := c.exec(ctx, sqlMarkTrimmed, upto)
	return err
}

// Subscribe returns a Subscription of channel that receives every message
// published after Subscribe returns, in publish order. It returns once the
// Backend's poller has taken the Subscription in; the Subscription lives
// until it or the Backend is closed, and ctx bounds only this call.
func (b *Backend) Subscribe(ctx context.Context, channel string) (broadcaster.Subscription, error) {
	op := fmt.Sprintf("subscribe to %q", channel)
	if err := b.begin(ctx, op); err != nil {
		return nil, err
	}
	var trimmed, head int64
	err := b.read(ctx, func(c *dbConn) error {
		return c.scan(ctx, sqlBusHead, nil, &trimmed, &head)
	})
	if err != nil {
		return nil, b.wrap(ctx, op, err)
	}
	s := &subscription{
		p:          b.poll,
		channel:    channel,
		from:       head,
		limit:      b.opts.SubscriberBuffer,
		registered: make(chan struct{}),
		ready:      make(chan struct{}, 1),
	}
	if err := b.poll.subscribe(ctx, s); err != nil {
		return nil, b.wrap(ctx, op, err)
	}
	return s, nil
}

// subscription is a broadcaster.Subscription. The Backend's poller appends
// to its queue and signals ready; its reader takes from the queue and
// waits on ready when it is empty.
type subscription struct {
	p       *poller
	channel string
	limit   int // most unread messages before an overflow

	// from is the id after which messages are delivered: the head of the
	// message log when Subscribe asked, or later. Only the poller's
	// goroutine uses it.
	from int64
	// registered is closed by the poller once it reads for this
	// subscription.
	registered chan struct{}

	mu          sync.Mutex
	queue       [][]byte // unread payloads, oldest first
	lost        bool     // a loss signal is owed before the queue
	interrupted bool     // an Interrupted notice is owed before the loss
	paused      bool     // between interrupt and resume: nothing is queued
	closed      bool
	// ready holds one pending wake-up for the reader. It is closed (under
	// mu, so no send can follow) when the subscription is.
	ready chan struct{}
}

var _ broadcaster.Subscription = (*subscription)(nil)

// push queues payload, or, if the queue is full, drops the queue and
// payload and owes the reader a loss signal.
func (s *subscription) push(payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.paused {
		return
	}
	if len(s.queue) >= s.limit {
		s.dropLocked()
		return
	}
	s.queue = append(s.queue, payload)
	s.wakeLocked()
}

// lose drops the unread messages and owes the reader a loss signal: the
// poller could not read some messages before they were trimmed.
func (s *subscription) lose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.dropLocked()
	}
}

// interrupt owes the reader an Interrupted notice: the poller cannot read
// the file. Messages are not queued until resume.
func (s *subscription) interrupt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	clear(s.queue)
	s.queue = nil
	s.lost = false
	s.interrupted = true
	s.paused = true
	s.wakeLocked()
}

// resume owes the reader a loss signal after an interruption: the poller
// reads again.
func (s *subscription) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.paused = false
		s.dropLocked()
	}
}

func (s *subscription) dropLocked() {
	clear(s.queue) // let the payloads be collected even if the array lives on
	s.queue = nil
	s.lost = true
	s.wakeLocked()
}

func (s *subscription) wakeLocked() {
	select {
	case s.ready <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Next returns the next message. An Interrupted notice comes as soon as
// the poller cannot read the file, and a loss signal before every message
// after a loss. Next blocks until there is one, ctx is done (it returns
// ctx.Err()), or the Subscription or its Backend is closed (it returns an
// error matching ErrClosed).
func (s *subscription) Next(ctx context.Context) (broadcaster.Message, error) {
	if ctx == nil {
		return broadcaster.Message{}, fmt.Errorf("sqlite: subscription to %q: nil context.Context", s.channel)
	}
	for {
		if err := ctx.Err(); err != nil {
			return broadcaster.Message{}, err
		}
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return broadcaster.Message{}, fmt.Errorf("sqlite: subscription to %q: %w", s.channel, ErrClosed)
		case s.interrupted:
			s.interrupted = false
			s.mu.Unlock()
			return broadcaster.Message{Interrupted: true}, nil
		case s.lost:
			s.lost = false
			s.mu.Unlock()
			return broadcaster.Message{Loss: true}, nil
		case len(s.queue) > 0:
			p := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return broadcaster.Message{Payload: p}, nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return broadcaster.Message{}, ctx.Err()
		case <-s.ready:
			// Something changed; look again.
		}
	}
}

// Close ends the subscription: a blocked Next returns ErrClosed. It is
// idempotent and returns nil.
func (s *subscription) Close() error {
	if s.shut() {
		s.p.unsubscribe(s)
	}
	return nil
}

// shut marks the subscription closed and wakes its reader. It reports
// whether the subscription was open.
func (s *subscription) shut() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	s.queue = nil
	close(s.ready)
	return true
}
