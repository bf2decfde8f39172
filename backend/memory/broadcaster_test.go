package memory_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/broadcaster"
)

func publish(t *testing.T, b *memory.Backend, channel string, payloads ...string) {
	t.Helper()
	for _, p := range payloads {
		if err := b.Publish(context.Background(), channel, []byte(p)); err != nil {
			t.Fatalf("Publish(%q): %v", channel, err)
		}
	}
}

func expectPayload(t *testing.T, s broadcaster.Subscription, want string) {
	t.Helper()
	m := next(t, s)
	if m.Loss || string(m.Payload) != want {
		t.Fatalf("Next = %+v (payload %q), want payload %q", m, m.Payload, want)
	}
}

func expectLoss(t *testing.T, s broadcaster.Subscription) {
	t.Helper()
	if m := next(t, s); !m.Loss || m.Payload != nil {
		t.Fatalf("Next = %+v (payload %q), want a loss signal", m, m.Payload)
	}
}

func TestSubscribersGetMessagesInPublishOrder(t *testing.T) {
	b := newBackend(t, nil)
	s1 := mustSubscribe(t, b, "ch")
	s2 := mustSubscribe(t, b, "ch")
	other := mustSubscribe(t, b, "other")
	publish(t, b, "ch", "1", "2", "3")
	for _, s := range []broadcaster.Subscription{s1, s2} {
		for _, want := range []string{"1", "2", "3"} {
			expectPayload(t, s, want)
		}
	}
	expectNothing(t, other)
}

// TestQueueKeepsOrderAcrossReuse publishes and reads in uneven runs, so
// that the subscription's queue empties, fills up to its limit, and moves
// its unread messages to the front of its array: every message arrives,
// once, in order, and a queue holding limit messages still takes no more.
func TestQueueKeepsOrderAcrossReuse(t *testing.T) {
	const buffer = 8
	b := newBackend(t, &memory.Options{SubscriberBuffer: buffer})
	s := mustSubscribe(t, b, "ch")
	sent, read := 0, 0
	// Fill the queue, read most of it, fill it again: the unread move to
	// the front of the array.
	for range buffer {
		publish(t, b, "ch", fmt.Sprint(sent))
		sent++
	}
	for range buffer - 3 {
		expectPayload(t, s, fmt.Sprint(read))
		read++
	}
	for range buffer - 3 {
		publish(t, b, "ch", fmt.Sprint(sent))
		sent++
	}
	for round, n := range []int{1, 1, 3, 2, 8, 5, 7, 8, 1, 6, 6, 4, 8, 8, 3, 2, 7} {
		// Publish up to n, never more than the buffer holds unread.
		for range min(n, buffer-(sent-read)) {
			publish(t, b, "ch", fmt.Sprint(sent))
			sent++
		}
		// Read about half of what is unread (all of it every third round).
		k := (sent - read + 1) / 2
		if round%3 == 2 {
			k = sent - read
		}
		for range k {
			expectPayload(t, s, fmt.Sprint(read))
			read++
		}
	}
	for read < sent {
		expectPayload(t, s, fmt.Sprint(read))
		read++
	}
	expectNothing(t, s)
	// Full, then one more: the overflow is still counted right.
	for i := range buffer + 1 {
		publish(t, b, "ch", fmt.Sprint(i))
	}
	expectLoss(t, s)
}

func TestSubscriptionSeesOnlyLaterMessages(t *testing.T) {
	b := newBackend(t, nil)
	publish(t, b, "ch", "before")
	s := mustSubscribe(t, b, "ch")
	publish(t, b, "ch", "after")
	expectPayload(t, s, "after")
}

func TestEachSubscriberOwnsItsPayload(t *testing.T) {
	b := newBackend(t, nil)
	s1 := mustSubscribe(t, b, "ch")
	s2 := mustSubscribe(t, b, "ch")
	p := []byte("abc")
	if err := b.Publish(context.Background(), "ch", p); err != nil {
		t.Fatal(err)
	}
	copy(p, "XXX")
	m1 := next(t, s1)
	copy(m1.Payload, "YYY")
	if m2 := next(t, s2); string(m2.Payload) != "abc" {
		t.Fatalf("payload %q, want abc", m2.Payload)
	}
}

func TestOverflowGivesLossThenLaterMessages(t *testing.T) {
	const buffer = 4
	b := newBackend(t, &memory.Options{SubscriberBuffer: buffer})
	s := mustSubscribe(t, b, "ch")
	for i := range buffer + 1 { // one more than fits
		publish(t, b, "ch", fmt.Sprint(i))
	}
	publish(t, b, "ch", "after")
	expectLoss(t, s)
	expectPayload(t, s, "after")
	expectNothing(t, s)
}

func TestFullBufferWithoutOverflowLosesNothing(t *testing.T) {
	const buffer = 4
	b := newBackend(t, &memory.Options{SubscriberBuffer: buffer})
	s := mustSubscribe(t, b, "ch")
	for i := range buffer {
		publish(t, b, "ch", fmt.Sprint(i))
	}
	for i := range buffer {
		expectPayload(t, s, fmt.Sprint(i))
	}
}

func TestOverflowAffectsOnlyTheSlowSubscriber(t *testing.T) {
	b := newBackend(t, &memory.Options{SubscriberBuffer: 2})
	slow := mustSubscribe(t, b, "ch")
	fast := mustSubscribe(t, b, "ch")
	for i := range 5 {
		publish(t, b, "ch", fmt.Sprint(i))
		expectPayload(t, fast, fmt.Sprint(i))
	}
	expectLoss(t, slow)
}

func TestBreakSubscriptionsGivesLoss(t *testing.T) {
	b := newBackend(t, nil)
	s1 := mustSubscribe(t, b, "ch")
	s2 := mustSubscribe(t, b, "other")
	publish(t, b, "ch", "dropped1", "dropped2")
	b.BreakSubscriptions()
	publish(t, b, "ch", "after")
	expectLoss(t, s1)
	expectPayload(t, s1, "after")
	expectLoss(t, s2) // idle subscriptions are broken too
	expectNothing(t, s2)
}

func TestNextHonoursContext(t *testing.T) {
	b := newBackend(t, nil)
	s := mustSubscribe(t, b, "ch")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := s.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next = %v, want DeadlineExceeded", err)
	}
	// The subscription still works afterwards.
	publish(t, b, "ch", "x")
	expectPayload(t, s, "x")
}

// nextInBackground starts a Next and returns where its error will arrive.
func nextInBackground(s broadcaster.Subscription) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := s.Next(context.Background())
		done <- err
	}()
	return done
}

func expectClosed(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, broadcaster.ErrClosed) {
			t.Fatalf("Next = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked after Close")
	}
}

func TestSubscriptionCloseUnblocksNext(t *testing.T) {
	b := newBackend(t, nil)
	s := mustSubscribe(t, b, "ch")
	done := nextInBackground(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, done)
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := b.Subscribers("ch"); n != 0 {
		t.Fatalf("%d subscribers after Close, want 0", n)
	}
	publish(t, b, "ch", "x") // no subscriber left; must not fail
	if _, err := s.Next(context.Background()); !errors.Is(err, broadcaster.ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
}

func TestBackendCloseUnblocksNext(t *testing.T) {
	b := memory.New(nil)
	s, err := b.Subscribe(context.Background(), "ch")
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b, "ch", "unread")
	done := nextInBackground(s)
	// A first Next takes the queued message; a second one blocks until
	// the backend closes.
	if err := <-done; err != nil {
		t.Fatalf("Next = %v", err)
	}
	done = nextInBackground(s)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, done)
	if err := s.Close(); err != nil {
		t.Fatalf("Close of a subscription of a closed backend: %v", err)
	}
}
