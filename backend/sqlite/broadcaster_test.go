package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend/sqlite"
	"github.com/contextd-go/contextd/broadcaster"
)

// next returns the next delivery of s, failing the test after waitLimit.
func next(t *testing.T, s broadcaster.Subscription) broadcaster.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	m, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return m
}

func mustSubscribe(t *testing.T, b broadcaster.Broadcaster, ch string) broadcaster.Subscription {
	t.Helper()
	s, err := b.Subscribe(context.Background(), ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustPublish(t *testing.T, b broadcaster.Broadcaster, ch, payload string) {
	t.Helper()
	if err := b.Publish(context.Background(), ch, []byte(payload)); err != nil {
		t.Fatal(err)
	}
}

// awaitPolled waits until b's poller has dispatched every message
// published so far.
func awaitPolled(t *testing.T, b *sqlite.Backend, path string) {
	t.Helper()
	var head int64
	// contract: takes nothing; returns the newest message id.
	if err := rawDB(t, path).QueryRow(`SELECT max(id) FROM contextd_messages`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLimit)
	for sqlite.PollCursor(b) < head {
		if time.Now().After(deadline) {
			t.Fatalf("the poller reached message %d, not %d, within %v", sqlite.PollCursor(b), head, waitLimit)
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
}

// TestOverflowReportsLoss lets more messages reach a Subscription than its
// buffer holds while nobody reads it.
func TestOverflowReportsLoss(t *testing.T) {
	path := filepath.Join(t.TempDir(), "o.db")
	reader := openBackend(t, path, &sqlite.Options{SubscriberBuffer: 4})
	writer := openBackend(t, path, nil)
	s := mustSubscribe(t, reader, "ch")
	for i := range 5 {
		mustPublish(t, writer, "ch", fmt.Sprint("m", i))
	}
	awaitPolled(t, reader, path)
	if m := next(t, s); !m.Loss {
		t.Fatalf("first delivery after 5 messages into a buffer of 4 is %q, want a loss signal", m.Payload)
	}
	mustPublish(t, writer, "ch", "after")
	if m := next(t, s); m.Loss || string(m.Payload) != "after" {
		t.Fatalf("after the loss signal got %+v, want \"after\"", m)
	}
}

// TestPollerBehindTheTrimReportsLoss holds a poller while another process
// publishes past the message log's length: the publishers trim what the
// poller has not read, and its Subscription reports a loss, then
// delivers again.
func TestPollerBehindTheTrimReportsLoss(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	reader := openBackend(t, path, nil)
	writer := openBackend(t, path, &sqlite.Options{MessageLogLength: 10})
	s := mustSubscribe(t, reader, "ch")
	mustPublish(t, writer, "ch", "before")
	if m := next(t, s); string(m.Payload) != "before" {
		t.Fatalf("got %+v, want \"before\"", m)
	}
	resume := sqlite.PausePoller(reader)
	for i := range 3 * 64 {
		mustPublish(t, writer, "ch", fmt.Sprint("m", i))
	}
	resume()
	if m := next(t, s); !m.Loss {
		t.Fatalf("first delivery after the log was trimmed past the poller is %q, want a loss signal", m.Payload)
	}
	// What is left of the log follows, in order, then new messages.
	last := -1
	mustPublish(t, writer, "ch", "after")
	for {
		m := next(t, s)
		if m.Loss {
			t.Fatal("a second loss signal")
		}
		if string(m.Payload) == "after" {
			break
		}
		var i int
		if _, err := fmt.Sscanf(string(m.Payload), "m%d", &i); err != nil || i <= last {
			t.Fatalf("after m%d got %q", last, m.Payload)
		}
		last = i
	}
	if n := countRows(t, path, "contextd_messages"); n > 10+64 {
		t.Errorf("the message log holds %d messages, want at most MessageLogLength + 64 = 74", n)
	}
}

// TestUnreadableLogInterrupts makes the message log unreadable (its table
// renamed by another program): Subscriptions report Interrupted at once,
// and a loss once the poller reads again.
func TestUnreadableLogInterrupts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "i.db")
	reader := openBackend(t, path, nil)
	s := mustSubscribe(t, reader, "ch")
	db := rawDB(t, path)
	// contract: takes nothing; hides the message log from the poller.
	if _, err := db.Exec(`ALTER TABLE contextd_messages RENAME TO hidden_messages`); err != nil {
		t.Fatal(err)
	}
	if m := next(t, s); !m.Interrupted {
		t.Fatalf("first delivery with the message log gone is %+v, want Interrupted", m)
	}
	// contract: takes nothing; gives the message log back.
	if _, err := db.Exec(`ALTER TABLE hidden_messages RENAME TO contextd_messages`); err != nil {
		t.Fatal(err)
	}
	if m := next(t, s); !m.Loss {
		t.Fatalf("first delivery once the log is back is %+v, want a loss signal", m)
	}
	mustPublish(t, openBackend(t, path, nil), "ch", "again")
	if m := next(t, s); string(m.Payload) != "again" {
		t.Fatalf("got %+v, want \"again\"", m)
	}
}

// TestChannelNamesAreBytes publishes on a channel whose name is not UTF-8
// (the poller then reads every channel and filters in Go) next to one
// whose name is.
func TestChannelNamesAreBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	reader, writer := openBackend(t, path, nil), openBackend(t, path, nil)
	odd, plain := "ch\xff\x00", "ch ✓"
	sOdd, sPlain := mustSubscribe(t, reader, odd), mustSubscribe(t, reader, plain)
	mustPublish(t, writer, plain, "p1")
	mustPublish(t, writer, odd, "o1")
	mustPublish(t, writer, "other", "x")
	mustPublish(t, writer, odd, "o2")
	for _, want := range []string{"o1", "o2"} {
		if m := next(t, sOdd); string(m.Payload) != want {
			t.Fatalf("on %q got %+v, want %q", odd, m, want)
		}
	}
	if m := next(t, sPlain); string(m.Payload) != "p1" {
		t.Fatalf("on %q got %+v, want p1", plain, m)
	}
}

// TestSubscriptionsShareOnePoller checks that one Backend serves many
// Subscriptions of several channels and each gets its own messages in
// order, including the ones published by the same Backend.
func TestSubscriptionsShareOnePoller(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	b, other := openBackend(t, path, nil), openBackend(t, path, nil)
	subs := map[string][]broadcaster.Subscription{}
	for _, ch := range []string{"a", "b", "c"} {
		for range 3 {
			subs[ch] = append(subs[ch], mustSubscribe(t, b, ch))
		}
	}
	for i := range 20 {
		for _, ch := range []string{"a", "b", "c"} {
			pub := b
			if i%2 == 1 {
				pub = other
			}
			mustPublish(t, pub, ch, fmt.Sprint(ch, i))
		}
	}
	for ch, ss := range subs {
		for j, s := range ss {
			for i := range 20 {
				if m := next(t, s); string(m.Payload) != fmt.Sprint(ch, i) {
					t.Fatalf("subscription %d of %q: message %d is %+v", j, ch, i, m)
				}
			}
		}
	}
}
