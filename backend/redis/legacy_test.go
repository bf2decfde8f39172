package redis

// The one-connection-per-subscription design that the shared pub/sub
// connections (pubsub.go) replaced, kept verbatim for tests only: it is
// the baseline BenchmarkManyContexts measures them against, in the same
// run. Not used otherwise.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/internal/backoff"
)

// legacySubscribe returns a Subscription on a pub/sub connection of its
// own, once Redis has confirmed it.
func (b *Backend) legacySubscribe(ctx context.Context, channel string) (broadcaster.Subscription, error) {
	ps, err := b.legacySubscribeConfirmed(ctx, channel)
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("subscribe to %q", channel), err)
	}
	return &legacySubscription{b: b, channel: channel, ps: ps, closing: make(chan struct{}), lastTraffic: time.Now()}, nil
}

// legacySubscribeConfirmed subscribes on a new connection and waits for Redis to
// confirm: go-redis's Subscribe returns as soon as the command is written.
func (b *Backend) legacySubscribeConfirmed(ctx context.Context, channel string) (*goredis.PubSub, error) {
	if b.closed.Load() && b.owned {
		return nil, broadcaster.ErrClosed
	}
	var ps *goredis.PubSub
	if b.sharded {
		ps = b.client.SSubscribe(ctx, channel)
	} else {
		ps = b.client.Subscribe(ctx, channel)
	}
	// Bound the wait even if ctx has no deadline: a stalled server must
	// not hang Initialize forever.
	wait := b.opts.StallTimeout + b.opts.PingInterval
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d))
	}
	for {
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if err != nil {
			_ = ps.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if s, ok := msg.(*goredis.Subscription); ok && (s.Kind == "subscribe" || s.Kind == "ssubscribe") && s.Channel == channel {
			return ps, nil
		}
	}
}

// legacySubscription reads one channel with a Receive loop (see the package
// documentation for why) and a ping watchdog.
type legacySubscription struct {
	b       *Backend
	channel string

	mu      sync.Mutex // guards ps and closed against Close
	ps      *goredis.PubSub
	closed  bool
	closing chan struct{}

	// Read only by Next, which is called from one goroutine at a time.
	interrupted      bool // receiving stopped; a Loss is owed once it resumes
	interruptPending bool // the reader has not been told yet
	lossPending      bool
	needReplace      bool      // start over on a new connection
	pingSent         time.Time // zero when no ping is outstanding
	lastTraffic      time.Time
}

func (s *legacySubscription) current() (*goredis.PubSub, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, broadcaster.ErrClosed
	}
	return s.ps, nil
}

// interrupt notes that receiving stopped, to be told once.
func (s *legacySubscription) interrupt() {
	if !s.interrupted {
		s.interrupted = true
		s.interruptPending = true
	}
}

// resumed notes that receiving works again, which may have lost messages.
func (s *legacySubscription) resumed() {
	s.interrupted = false
	s.interruptPending = false
	s.lossPending = true
}

// Next returns the next message. Reconnects, stalls, refusals and slot
// migrations are handled here: reported at once as Interrupted, and as a
// Loss when messages flow again.
func (s *legacySubscription) Next(ctx context.Context) (broadcaster.Message, error) {
	pause := backoff.New(50*time.Millisecond, 2*time.Second)
	for {
		ps, err := s.current()
		if err != nil {
			return broadcaster.Message{}, err
		}
		select {
		case <-ctx.Done():
			return broadcaster.Message{}, ctx.Err()
		default:
		}
		switch {
		case s.interruptPending:
			s.interruptPending = false
			return broadcaster.Message{Interrupted: true}, nil
		case s.lossPending:
			s.lossPending = false
			return broadcaster.Message{Loss: true}, nil
		case s.needReplace:
			s.needReplace = false
			s.replace(ctx, ps)
			continue
		}
		msg, err := ps.ReceiveTimeout(ctx, pollInterval)
		if err != nil {
			if _, cerr := s.current(); cerr != nil {
				return broadcaster.Message{}, cerr
			}
			if ctx.Err() != nil {
				return broadcaster.Message{}, ctx.Err()
			}
			var refused goredis.Error
			switch {
			case isTimeout(err):
				if s.stalled(ctx, ps) {
					s.interrupt()
					s.needReplace = true
				}
			case errors.As(err, &refused):
				// Redis refused something on this connection (say, a
				// resubscription the ACL no longer allows); go-redis
				// would stay connected but deaf: start over.
				s.interrupt()
				s.needReplace = true
			default:
				// The connection broke; go-redis dials again and
				// resubscribes on the next call, and the confirmation
				// ends the interruption. Meanwhile the server may be
				// down: back off.
				s.interrupt()
				s.sleep(ctx, pause.Next())
			}
			continue
		}
		pause.Reset()
		s.lastTraffic = time.Now()
		s.pingSent = time.Time{}
		switch m := msg.(type) {
		case *goredis.Message:
			return broadcaster.Message{Payload: []byte(m.Payload)}, nil
		case *goredis.Subscription:
			switch m.Kind {
			case "subscribe", "ssubscribe":
				// A confirmation after the first one means go-redis
				// reconnected: whatever was published meanwhile is lost.
				s.resumed()
			case "sunsubscribe", "unsubscribe":
				// A slot moved to another shard (or someone unsubscribed
				// us); go-redis does not follow, so subscribe anew.
				s.interrupt()
				s.needReplace = true
			}
		case *goredis.Pong:
		}
	}
}

// stalled runs the watchdog on an idle connection: it pings, and reports a
// stall when the ping goes unanswered for StallTimeout. go-redis's own
// health check never waits for a PONG, so a connection that accepts bytes
// but forwards nothing would go unnoticed.
func (s *legacySubscription) stalled(ctx context.Context, ps *goredis.PubSub) bool {
	now := time.Now()
	switch {
	case !s.pingSent.IsZero() && now.Sub(s.pingSent) >= s.b.opts.StallTimeout:
		return true
	case s.pingSent.IsZero() && now.Sub(s.lastTraffic) >= s.b.opts.PingInterval:
		s.pingSent = now
		// An error here shows on the next Receive.
		_ = ps.Ping(ctx)
	}
	return false
}

// replace closes the pub/sub connection and subscribes on a new one,
// retrying with backoff until it succeeds, ctx ends or the legacySubscription is
// closed; on success it owes the reader a Loss.
func (s *legacySubscription) replace(ctx context.Context, old *goredis.PubSub) {
	_ = old.Close()
	s.pingSent = time.Time{}
	s.lastTraffic = time.Now()
	pause := backoff.New(50*time.Millisecond, 2*time.Second)
	for {
		ps, err := s.b.legacySubscribeConfirmed(ctx, s.channel)
		if err == nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.closed {
				_ = ps.Close()
				return
			}
			s.ps = ps
			s.resumed()
			return
		}
		if !s.sleep(ctx, pause.Next()) {
			s.needReplace = true // ctx ended first: try again next time
			return
		}
	}
}

// sleep waits d; it reports false if ctx ended or the legacySubscription closed.
func (s *legacySubscription) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closing:
		return false
	}
}

// Close ends the legacySubscription; a Next blocked in Receive returns
// broadcaster.ErrClosed.
func (s *legacySubscription) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.closing)
	if err := s.ps.Close(); err != nil && !errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis: close legacySubscription to %q: %w", s.channel, err)
	}
	return nil
}
