package conformance

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/broadcaster"
)

func testBroadcaster(t *testing.T, h Harness) {
	if h.BreakSubscriptions != nil {
		// Not parallel: BreakSubscriptions breaks every subscription of
		// the storage, so no other subtest may be running.
		t.Run("LossOnBreak", func(t *testing.T) { testLossOnBreak(t, h) })
	}

	t.Run("DeliveredAfterSubscribe", func(t *testing.T) {
		t.Parallel()
		b1, b2 := h.NewBackend(t), h.NewBackend(t)
		// Several rounds, since a Subscribe that returns before it is live
		// loses the message only sometimes.
		for i := range 10 {
			ch := uniqueName(t)
			sub := mustSubscribe(t, b1, ch)
			want := fmt.Sprint("hello ", i)
			mustPublish(t, b2, ch, want)
			expectPayload(t, sub, want, "message published right after Subscribe returned")
		}
	})

	t.Run("Order", func(t *testing.T) {
		t.Parallel()
		b1, b2, ch := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		sub := mustSubscribe(t, b1, ch)
		streamMessages(t, h, b2, ch, []broadcaster.Subscription{sub}, 200)
	})

	t.Run("FanOut", func(t *testing.T) {
		t.Parallel()
		ch := uniqueName(t)
		var subs []broadcaster.Subscription
		for range 3 {
			subs = append(subs, mustSubscribe(t, h.NewBackend(t), ch))
		}
		streamMessages(t, h, h.NewBackend(t), ch, subs, 50)
	})

	t.Run("ChannelsIsolated", func(t *testing.T) {
		t.Parallel()
		b1, b2 := h.NewBackend(t), h.NewBackend(t)
		ch := uniqueName(t)
		other := ch + ".other" // ch is a prefix of it
		subCh := mustSubscribe(t, b1, ch)
		subOther := mustSubscribe(t, b1, other)
		mustPublish(t, b2, other, "other 1")
		mustPublish(t, b2, ch, "ch 1")
		mustPublish(t, b2, other, "other 2")
		mustPublish(t, b2, ch, "ch 2")
		expectPayload(t, subCh, "ch 1", "first message on "+ch)
		expectPayload(t, subCh, "ch 2", "second message on "+ch)
		expectPayload(t, subOther, "other 1", "first message on "+other)
		expectPayload(t, subOther, "other 2", "second message on "+other)
	})

	t.Run("CloseEndsNext", func(t *testing.T) {
		t.Parallel()
		b, ch := h.NewBackend(t), uniqueName(t)
		sub := mustSubscribe(t, b, ch)
		ctx := newWatchedContext(t.Context())
		res := make(chan error, 1)
		go func() {
			_, err := sub.Next(ctx)
			res <- err
		}()
		ctx.awaitWaiting(t, "Next on an idle subscription")
		if err := sub.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-res:
			if !errors.Is(err, broadcaster.ErrClosed) {
				t.Errorf("Next blocked while the subscription was closed = %v, want an error matching broadcaster.ErrClosed", err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("Next blocked while the subscription was closed has not returned after %v", waitLimit)
		}
		if err := sub.Close(); err != nil {
			t.Errorf("second Close = %v, want nil (Close is idempotent)", err)
		}
		if m, err := nextWithin(t.Context(), sub); !errors.Is(err, broadcaster.ErrClosed) {
			t.Errorf("Next after Close = %s, %v; want an error matching broadcaster.ErrClosed", fmtMessage(m), err)
		}
	})

	t.Run("NextHonoursContext", func(t *testing.T) {
		t.Parallel()
		b1, b2, ch := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		sub := mustSubscribe(t, b1, ch)
		cancelCtx, cancel := context.WithCancel(t.Context())
		ctx := newWatchedContext(cancelCtx)
		res := make(chan error, 1)
		go func() {
			_, err := sub.Next(ctx)
			res <- err
		}()
		ctx.awaitWaiting(t, "Next on an idle subscription")
		cancel()
		select {
		case err := <-res:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Next whose ctx was cancelled = %v, want an error matching context.Canceled", err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("Next whose ctx was cancelled has not returned after %v", waitLimit)
		}
		short, cancelShort := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancelShort()
		if m, err := callNext(short, sub); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Next with nothing to read past its ctx deadline = %s, %v; want an error matching context.DeadlineExceeded", fmtMessage(m), err)
		}
		mustPublish(t, b2, ch, "after")
		expectPayload(t, sub, "after", "message published after two Next calls ended by their ctx")
	})

	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		b1, b2, ch := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
		sub := mustSubscribe(t, b1, ch)
		cancelled, cancel := context.WithCancel(t.Context())
		cancel()
		if s, err := b1.Subscribe(cancelled, ch); !errors.Is(err, context.Canceled) {
			t.Errorf("Subscribe with a cancelled ctx = %v, want an error matching context.Canceled", err)
			if err == nil {
				s.Close()
			}
		}
		if err := b2.Publish(cancelled, ch, []byte("cancelled")); !errors.Is(err, context.Canceled) {
			t.Errorf("Publish with a cancelled ctx = %v, want an error matching context.Canceled", err)
		}
		mustPublish(t, b2, ch, "live")
		expectPayload(t, sub, "live", "first message after a Publish with a cancelled ctx")
	})

	if h.OverflowAfter > 0 {
		t.Run("LossOnOverflow", func(t *testing.T) {
			t.Parallel()
			testLossOnOverflow(t, h)
		})
	}
}

// testLossOnBreak checks that a broken subscription reports a loss before
// anything published after the break, and then delivers again.
func testLossOnBreak(t *testing.T, h Harness) {
	b1, b2, ch := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
	sub := mustSubscribe(t, b1, ch)
	mustPublish(t, b2, ch, "before")
	expectPayload(t, sub, "before", "message published before the break")

	h.BreakSubscriptions(t)
	// This one may be lost, but must not arrive before the loss signal.
	mustPublish(t, b2, ch, "during")
	if m := mustNext(t, sub, "first delivery after BreakSubscriptions"); !m.Loss {
		t.Fatalf("first delivery after BreakSubscriptions is %s, want a loss signal before any later message", fmtMessage(m))
	}

	// The loss signal means the subscription is live again.
	mustPublish(t, b2, ch, "after")
	deadline := time.Now().Add(waitLimit)
	seenDuring := false
	for {
		m := mustNext(t, sub, `waiting for "after", published after the loss signal`)
		switch {
		case m.Loss: // another reconnect is honest, if odd
		case string(m.Payload) == "during" && !seenDuring:
			seenDuring = true
		case string(m.Payload) == "after":
			return
		default:
			t.Fatalf(`after the loss signal got %s, want "after" (possibly preceded by "during")`, fmtMessage(m))
		}
		if time.Now().After(deadline) {
			t.Fatalf(`"after", published once the loss signal arrived, not delivered within %v`, waitLimit)
		}
	}
}

// testLossOnOverflow publishes Harness.OverflowAfter messages to a
// subscription that does not read, and checks that it reports a loss and
// then delivers again.
func testLossOnOverflow(t *testing.T, h Harness) {
	n := h.OverflowAfter
	b1, b2, ch := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
	sub := mustSubscribe(t, b1, ch)
	for i := range n {
		mustPublish(t, b2, ch, fmt.Sprint("o", i))
	}
	last := -1
	lost := false
	for {
		what := `waiting for "final", published after the loss signal`
		if !lost {
			what = fmt.Sprintf("waiting for a loss signal after %d unread messages (Harness.OverflowAfter); %d delivered so far", n, last+1)
		}
		m := mustNext(t, sub, what)
		payload := string(m.Payload)
		switch {
		case m.Loss:
			if !lost {
				lost = true
				mustPublish(t, b2, ch, "final")
			}
		case payload == "final":
			return
		case strings.HasPrefix(payload, "o"):
			i, err := strconv.Atoi(payload[1:])
			if err != nil || i <= last {
				t.Fatalf("after o%d got %s; want later messages in publish order", last, fmtMessage(m))
			}
			last = i
			if !lost && last == n-1 {
				t.Fatalf("all %d messages published without reading were delivered with no loss signal; Harness.OverflowAfter says the subscription must have overflowed", n)
			}
		default:
			t.Fatalf("got unexpected %s", fmtMessage(m))
		}
	}
}

// streamMessages publishes n messages on ch through pub while every one of
// subs reads them, and checks that each gets all of them in order. If the
// harness states OverflowAfter, the publisher stays at most half of it
// ahead of every reader, so no loss is allowed.
func streamMessages(t *testing.T, h Harness, pub broadcaster.Broadcaster, ch string, subs []broadcaster.Subscription, n int) {
	t.Helper()
	window := n
	if h.OverflowAfter > 0 {
		window = max(1, h.OverflowAfter/2)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// A reader gives a credit back for each message it reads; the
	// publisher needs one from every reader to publish.
	credits := make([]chan struct{}, len(subs))
	for i := range credits {
		credits[i] = make(chan struct{}, window)
	}
	var wg sync.WaitGroup
	for i, sub := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range n {
				m, err := nextWithin(ctx, sub)
				want := fmt.Sprint("m", j)
				switch {
				case ctx.Err() != nil:
					return // another goroutine failed
				case err != nil:
					t.Errorf("subscription %d: Next after %d of %d messages: %v", i+1, j, n, err)
				case m.Loss:
					t.Errorf("subscription %d: loss signal after %d of %d messages, with at most %d unread; want every message", i+1, j, n, window)
				case string(m.Payload) != want:
					t.Errorf("subscription %d: message %d is %s, want %q (publish order)", i+1, j+1, fmtMessage(m), want)
				default:
					<-credits[i]
					continue
				}
				cancel()
				return
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j := range n {
			for _, c := range credits {
				select {
				case c <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
			if err := pub.Publish(ctx, ch, []byte(fmt.Sprint("m", j))); err != nil {
				if ctx.Err() == nil {
					t.Errorf("Publish of message %d: %v", j+1, err)
					cancel()
				}
				return
			}
		}
	}()
	wg.Wait()
}

func mustSubscribe(t *testing.T, b broadcaster.Broadcaster, ch string) broadcaster.Subscription {
	t.Helper()
	sub, err := b.Subscribe(t.Context(), ch)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", ch, err)
	}
	t.Cleanup(func() {
		if err := sub.Close(); err != nil {
			t.Errorf("Close of the subscription to %q: %v", ch, err)
		}
	})
	return sub
}

func mustPublish(t *testing.T, b broadcaster.Broadcaster, ch, payload string) {
	t.Helper()
	if err := b.Publish(t.Context(), ch, []byte(payload)); err != nil {
		t.Fatalf("Publish(%q, %q): %v", ch, payload, err)
	}
}

// nextWithin calls sub.Next with a ctx that ends after waitLimit.
//
// An Interrupted notice is checked and passed over: the next delivery after
// it must be a loss signal, since messages may have gone missing while the
// subscription was not receiving.
func nextWithin(ctx context.Context, sub broadcaster.Subscription) (broadcaster.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	interrupted := false
	for {
		m, err := callNext(ctx, sub)
		switch {
		case err != nil:
			return m, err
		case m.Interrupted && (m.Loss || m.Payload != nil):
			return m, fmt.Errorf("an Interrupted notice carries a loss signal or payload too")
		case m.Interrupted:
			interrupted = true
		case interrupted && !m.Loss:
			return m, fmt.Errorf("after an Interrupted notice came %s, want a loss signal first", fmtMessage(m))
		default:
			return m, nil
		}
	}
}

// callNext calls sub.Next(ctx) in a goroutine, so that a Next that ignores
// its ctx fails the test instead of hanging it: callNext gives up a second
// after ctx ends, and leaves the call to the Close at the end of the test.
func callNext(ctx context.Context, sub broadcaster.Subscription) (broadcaster.Message, error) {
	type result struct {
		m   broadcaster.Message
		err error
	}
	res := make(chan result, 1)
	go func() {
		m, err := sub.Next(ctx)
		res <- result{m, err}
	}()
	select {
	case r := <-res:
		return r.m, r.err
	case <-ctx.Done():
	}
	select {
	case r := <-res:
		return r.m, r.err
	case <-time.After(time.Second):
		return broadcaster.Message{}, fmt.Errorf("subscription's Next has not returned a second after its ctx ended (%w)", ctx.Err())
	}
}

// watchedContext reports the first call of its Done method: a call that
// blocks until ctx is done asks for Done when it starts to wait, so a test
// can act on a blocked call without sleeping.
type watchedContext struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func newWatchedContext(ctx context.Context) *watchedContext {
	return &watchedContext{Context: ctx, waiting: make(chan struct{})}
}

func (c *watchedContext) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

// awaitWaiting waits until the call given c asks for c.Done.
func (c *watchedContext) awaitWaiting(t *testing.T, what string) {
	t.Helper()
	select {
	case <-c.waiting:
	case <-time.After(waitLimit):
		t.Fatalf("%s has not started to wait on its ctx within %v (a blocking call must honour ctx)", what, waitLimit)
	}
}

// mustNext returns the next delivery of sub, failing the test if none comes
// within waitLimit.
func mustNext(t *testing.T, sub broadcaster.Subscription, what string) broadcaster.Message {
	t.Helper()
	m, err := nextWithin(t.Context(), sub)
	if err != nil {
		t.Fatalf("%s: Next: %v", what, err)
	}
	if m.Loss && m.Payload != nil {
		t.Errorf("%s: a loss signal carries a payload of %d bytes, want nil", what, len(m.Payload))
	}
	return m
}

func expectPayload(t *testing.T, sub broadcaster.Subscription, want, what string) {
	t.Helper()
	if m := mustNext(t, sub, what); m.Loss || string(m.Payload) != want {
		t.Fatalf("%s: got %s, want payload %q", what, fmtMessage(m), want)
	}
}

func fmtMessage(m broadcaster.Message) string {
	if m.Loss {
		return "a loss signal"
	}
	return fmt.Sprintf("payload %q", m.Payload)
}
