package memory_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/broadcaster"
)

// quieter is what the memory Subscription offers beyond
// broadcaster.Subscription, for contextd's read loop.
type quieter interface {
	broadcaster.Subscription
	SetQuiet(func([]byte) bool)
	Wake()
	NextBatch(context.Context, []broadcaster.Message, int) ([]broadcaster.Message, error)
}

// quietSubscription subscribes b to channel with every payload that starts
// with "q" quiet.
func quietSubscription(t *testing.T, b *memory.Backend, channel string) quieter {
	t.Helper()
	sub := mustSubscribe(t, b, channel)
	qs, ok := sub.(quieter)
	if !ok {
		t.Fatalf("%T has no SetQuiet, Wake and NextBatch", sub)
	}
	qs.SetQuiet(func(p []byte) bool { return p[0] == 'q' })
	return qs
}

// drain reads what qs has queued (a wake-up must be pending), describing
// notices as "loss".
func drain(t *testing.T, qs quieter) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	msgs, err := qs.NextBatch(ctx, nil, 1000)
	if err != nil {
		t.Fatalf("NextBatch: %v", err)
	}
	var got []string
	for _, m := range msgs {
		if m.Loss {
			got = append(got, "loss")
			continue
		}
		got = append(got, string(m.Payload))
	}
	return got
}

// TestQuietPayloadsKeepTheirPlace checks that quiet payloads do not wake
// the reader, and come, in order, with the next payload that does; that
// the 16th quiet one in a row wakes it; and that Wake hands over those
// queued.
func TestQuietPayloadsKeepTheirPlace(t *testing.T) {
	b := newBackend(t, nil)
	qs := quietSubscription(t, b, "quiet")
	var want []string
	send := func(p string) {
		t.Helper()
		publish(t, b, "quiet", p)
		want = append(want, p)
	}
	for i := range 3 {
		send(fmt.Sprint("q", i))
		if memory.WakePending(qs) {
			t.Fatalf("quiet payload %d woke the reader", i)
		}
	}
	send("wake")
	if !memory.WakePending(qs) {
		t.Fatal("a payload that is not quiet did not wake the reader")
	}
	if got := drain(t, qs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	// 15 quiet ones wait; the 16th wakes the reader.
	want = nil
	for i := range 16 {
		send(fmt.Sprint("q", 3+i))
		if woke := memory.WakePending(qs); woke != (i == 15) {
			t.Fatalf("after %d quiet payloads in a row: reader woken = %v", i+1, woke)
		}
	}
	if got := drain(t, qs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	// Wake hands over what waits, and only wakes if something does.
	qs.Wake()
	if memory.WakePending(qs) {
		t.Fatal("Wake with nothing queued woke the reader")
	}
	want = nil
	send("q-a")
	send("q-b")
	qs.Wake()
	if !memory.WakePending(qs) {
		t.Fatal("Wake did not wake the reader for the quiet payloads queued")
	}
	if got := drain(t, qs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// TestQuietPayloadsDoNotOverflow checks that quiet payloads wake the
// reader once half of a small buffer (15, less than the 16 that wake it
// anyway) is used: a reader that reads only when woken gets 40 quiet
// payloads without a loss. (Were they never to wake it, the 16th would
// overflow the buffer.)
func TestQuietPayloadsDoNotOverflow(t *testing.T) {
	const buffer, n = 15, 40
	b := newBackend(t, &memory.Options{SubscriberBuffer: buffer})
	qs := quietSubscription(t, b, "quiet-small")
	var want, got []string
	unread := 0
	for i := range n + 1 {
		p := fmt.Sprint("q", i)
		if i == n {
			p = "end" // not quiet: it wakes the reader for the last ones
		}
		publish(t, b, "quiet-small", p)
		want = append(want, p)
		unread++
		if !memory.WakePending(qs) {
			continue
		}
		if 2*(unread-1) > buffer {
			t.Fatalf("the reader was woken with %d payloads unread, more than half of %d", unread, buffer)
		}
		got = append(got, drain(t, qs)...)
		unread = 0
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// TestQuietPayloadsKeepLossSemantics checks that an overflow drops quiet
// payloads with the rest and wakes the reader with a loss, and that quiet
// payloads after it come after the loss.
func TestQuietPayloadsKeepLossSemantics(t *testing.T) {
	const buffer = 4
	b := newBackend(t, &memory.Options{SubscriberBuffer: buffer})
	qs := quietSubscription(t, b, "quiet-loss")
	// Two quiet ones wait (2 of 4: half), the next ones wake the reader,
	// which does not read: the fifth overflows the buffer.
	publish(t, b, "quiet-loss", "q0", "q1", "q2", "x3", "x4")
	publish(t, b, "quiet-loss", "q5")
	if got, want := fmt.Sprint(drain(t, qs)), fmt.Sprint([]string{"loss", "q5"}); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	publish(t, b, "quiet-loss", "q6", "wake")
	if got, want := fmt.Sprint(drain(t, qs)), fmt.Sprint([]string{"q6", "wake"}); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// TestQuietPayloadsConcurrent has publishers send runs of quiet payloads,
// each run ended by one that wakes, to a reader that blocks in NextBatch:
// every payload arrives once, in each publisher's order (for -race).
func TestQuietPayloadsConcurrent(t *testing.T) {
	const publishers, runs, run = 4, 50, 5
	b := newBackend(t, &memory.Options{SubscriberBuffer: publishers * runs * run})
	qs := quietSubscription(t, b, "quiet-many")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for r := range runs {
				for i := range run {
					kind := "q"
					if i == run-1 {
						kind = "x"
					}
					if err := b.Publish(ctx, "quiet-many", fmt.Appendf(nil, "%s %d %d", kind, p, r*run+i)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	nextOf := make([]int, publishers)
	var msgs []broadcaster.Message
	for total := 0; total < publishers*runs*run; {
		var err error
		if msgs, err = qs.NextBatch(ctx, msgs[:0], 7); err != nil {
			t.Fatalf("NextBatch after %d payloads: %v", total, err)
		}
		for _, m := range msgs {
			var kind string
			var p, i int
			if _, err := fmt.Sscanf(string(m.Payload), "%s %d %d", &kind, &p, &i); err != nil || m.Loss {
				t.Fatalf("message %+v: %v", m, err)
			}
			if i != nextOf[p] {
				t.Fatalf("publisher %d: got payload %d, want %d", p, i, nextOf[p])
			}
			nextOf[p]++
			total++
		}
	}
	wg.Wait()
}
