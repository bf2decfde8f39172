package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/contextd-go/contextd/broadcaster"
)

// Publish sends payload on channel (SPUBLISH on a cluster).
func (b *Backend) Publish(ctx context.Context, channel string, payload []byte) error {
	var err error
	if b.sharded {
		err = b.client.SPublish(ctx, channel, payload).Err()
	} else {
		err = b.client.Publish(ctx, channel, payload).Err()
	}
	if err != nil {
		return wrap(ctx, fmt.Sprintf("publish on %q", channel), err)
	}
	return nil
}

// Subscribe returns a Subscription of channel once Redis has confirmed it.
// Every Subscription of the Backend shares one pub/sub connection per
// Redis node (on a cluster, per master in use; see the package
// documentation); two Subscriptions of one channel both get every message.
// Each has a buffer of Options.SubscriberBuffer unread messages: one more
// overflows it, which drops them and reports a loss, to that Subscription
// alone. It fails with an error matching broadcaster.ErrClosed once the
// Backend is closed.
func (b *Backend) Subscribe(ctx context.Context, channel string) (broadcaster.Subscription, error) {
	if b.subscribeHook != nil {
		return b.subscribeHook(ctx, channel)
	}
	s := &subscription{channel: channel, limit: b.opts.SubscriberBuffer, ready: make(chan struct{}, 1), done: make(chan struct{})}
	m, err := b.hub.join(ctx, channel, s)
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("subscribe to %q", channel), err)
	}
	s.h, s.m = b.hub, m
	return s, nil
}

// Kinds of entry in a subscription's queue.
const (
	kindPayload = iota
	kindInterrupted
	kindLoss
)

type entry struct {
	kind    uint8
	payload []byte
}

// subscription is the Backend's broadcaster.Subscription: a member of its
// channel on the shared connection, with a queue the shard's reader fills
// (never blocking) and Next empties. No goroutine runs for it.
type subscription struct {
	h       *hub
	m       *member
	channel string
	limit   int // most unread payloads before an overflow

	mu    sync.Mutex
	queue []entry // unread from head on, in order
	head  int
	// payloads counts the unread payloads; markers (Interrupted, Loss)
	// do not count against limit, and at most two follow one another.
	payloads int
	closed   bool
	// ready holds one pending wake-up for the reader; done is closed once
	// the subscription (or its Backend) is.
	ready chan struct{}
	done  chan struct{}
	// quiet, if set (SetQuiet), tells payloads the reader need not be
	// woken for; unwoken counts those queued since the last wake-up.
	quiet   func(payload []byte) bool
	unwoken int
}

// maxUnwoken bounds the payloads queued without waking the reader: the
// next one wakes it even if quiet, so that they cannot pile up.
const maxUnwoken = 16

var _ broadcaster.Subscription = (*subscription)(nil)

func (s *subscription) wakeLocked() {
	s.unwoken = 0
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// deliver queues payload or, if limit payloads are unread, drops them and
// payload and queues a loss instead.
func (s *subscription) deliver(payload string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.payloads >= s.limit {
		clear(s.queue) // let the payloads be collected
		s.queue, s.head, s.payloads = append(s.queue[:0], entry{kind: kindLoss}), 0, 0
		s.wakeLocked()
		return
	}
	p := []byte(payload)
	s.queue = append(s.queue, entry{kind: kindPayload, payload: p})
	s.payloads++
	// Quiet only while at least half the buffer is free: payloads that
	// wait unread must not overflow it.
	if s.quiet != nil && s.unwoken < maxUnwoken-1 && 2*s.payloads <= s.limit && s.quiet(p) {
		s.unwoken++
		return
	}
	s.wakeLocked()
}

// SetQuiet makes the subscription queue a payload for which quiet reports
// true without waking a Next (or NextBatch) that waits: it is delivered,
// in order, with the next payload or notice that does wake it, once 16
// are queued or half of Options.SubscriberBuffer is used (so that quiet
// payloads never overflow it), or when Wake is called. contextd uses it
// for the echo of its own commit that the commit's reply applies (already
// applied, or awaited): the event changes nothing, and waking the read
// loop for it would cost a goroutine wake-up per write.
// quiet is called by one goroutine at a time, with the Backend's pub/sub
// lock held: it must be quick, must not block, and must not keep or
// change payload. Call it before the first Next.
func (s *subscription) SetQuiet(quiet func(payload []byte) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quiet = quiet
}

// Wake wakes a Next (or NextBatch) that waits while payloads are queued
// quietly (SetQuiet), so that they are read now. contextd calls it when a
// commit of its own is done and an own echo it held lies above its copy:
// the echo of a commit that failed but was made all the same, held for a
// reply that never came, is then the only carrier of its write. A payload
// queued after Wake returns is decided by quiet as usual.
func (s *subscription) Wake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed && s.head < len(s.queue) {
		s.wakeLocked()
	}
}

// interrupt queues an Interrupted notice. Unread notices after the last
// unread payload go: a Loss always follows an Interrupted before any
// further payload, and covers them.
func (s *subscription) interrupt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for len(s.queue) > s.head && s.queue[len(s.queue)-1].kind != kindPayload {
		s.queue = s.queue[:len(s.queue)-1]
	}
	s.queue = append(s.queue, entry{kind: kindInterrupted})
	s.wakeLocked()
}

// resume queues a Loss, unless one is the last unread entry already.
func (s *subscription) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if len(s.queue) > s.head && s.queue[len(s.queue)-1].kind == kindLoss {
		return
	}
	s.queue = append(s.queue, entry{kind: kindLoss})
	s.wakeLocked()
}

// end closes the subscription from the Backend's side.
func (s *subscription) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
}

func (s *subscription) closeLocked() {
	if s.closed {
		return
	}
	s.closed = true
	clear(s.queue)
	s.queue, s.head, s.payloads = nil, 0, 0
	close(s.done)
}

// Next returns the next message in the order the shared connection
// received it. Reconnects, stalls, refusals, slot migrations and overflows
// are reported as Interrupted at once and as a Loss when messages flow
// again (an overflow as a Loss only).
func (s *subscription) Next(ctx context.Context) (broadcaster.Message, error) {
	var one [1]broadcaster.Message
	msgs, err := s.NextBatch(ctx, one[:0], 1)
	if err != nil {
		return broadcaster.Message{}, err
	}
	return msgs[0], nil
}

// NextBatch appends to buf the messages queued, in order, at least one and
// at most most (a positive number): it blocks as Next does until there
// is one, then takes what else is queued without waiting. contextd's read
// loop applies such a burst of events as one change of its copy, with one
// wake-up and one lock instead of one each.
func (s *subscription) NextBatch(ctx context.Context, buf []broadcaster.Message, most int) ([]broadcaster.Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return buf, err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return buf, broadcaster.ErrClosed
		}
		if s.head < len(s.queue) {
			for n := 0; n < most && s.head < len(s.queue); n++ {
				buf = append(buf, s.popLocked())
			}
			s.mu.Unlock()
			return buf, nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return buf, ctx.Err()
		case <-s.done:
			return buf, broadcaster.ErrClosed
		case <-s.ready:
		}
	}
}

// popLocked takes the oldest unread entry, which exists, as a message.
func (s *subscription) popLocked() broadcaster.Message {
	e := s.queue[s.head]
	s.queue[s.head] = entry{}
	s.head++
	switch {
	case s.head == len(s.queue) && cap(s.queue) > 64:
		s.queue, s.head = nil, 0 // a backlog is gone: give its memory back
	case s.head == len(s.queue):
		s.queue, s.head = s.queue[:0], 0
	case s.head >= 64 && 2*s.head >= len(s.queue):
		n := copy(s.queue, s.queue[s.head:])
		clear(s.queue[n:])
		s.queue, s.head = s.queue[:n], 0
	}
	switch e.kind {
	case kindInterrupted:
		return broadcaster.Message{Interrupted: true}
	case kindLoss:
		return broadcaster.Message{Loss: true}
	}
	s.payloads--
	return broadcaster.Message{Payload: e.payload}
}

// Close ends the subscription; a Next blocked meanwhile returns
// broadcaster.ErrClosed. The last Subscription (or release watch) of a
// channel to close unsubscribes it, and the last of a connection closes
// it.
func (s *subscription) Close() error {
	s.h.leave(s.m)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
