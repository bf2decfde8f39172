package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/internal/redistest"
)

// Tests of the linger of a channel whose last member left (channelLinger):
// a member joining meanwhile reuses the live subscription, with no
// SUBSCRIBE and no wait; after the linger the channel is unsubscribed.

const lingerWait = 15 * time.Second // generous: the test machine is loaded

// testSink records what a channel delivers to one member.
type testSink struct {
	events chan string // payloads, and "<interrupt>", "<resume>", "<end>"
}

func newTestSink() *testSink { return &testSink{events: make(chan string, 64)} }

func (k *testSink) put(s string) {
	select {
	case k.events <- s:
	default: // full: a test that reads it fails on what it misses
	}
}

func (k *testSink) deliver(payload string) { k.put(payload) }
func (k *testSink) interrupt()             { k.put("<interrupt>") }
func (k *testSink) resume()                { k.put("<resume>") }
func (k *testSink) end()                   { k.put("<end>") }

// expect waits for k's next event, which must be want.
func (k *testSink) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-k.events:
		if got != want {
			t.Fatalf("the member got %q, want %q", got, want)
		}
	case <-time.After(lingerWait):
		t.Fatalf("the member got nothing within %v, want %q", lingerWait, want)
	}
}

// lingerBackend returns a Backend on srv whose channels linger for linger,
// closed (with its client) when the test ends.
func lingerBackend(t *testing.T, srv *redistest.Server, linger time.Duration) *Backend {
	t.Helper()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Password: srv.Password()})
	b, err := New(client, nil)
	if err != nil {
		_ = client.Close()
		t.Fatal(err)
	}
	b.hub.linger = linger // before the hub is used
	t.Cleanup(func() {
		_ = b.Close()
		_ = client.Close()
	})
	return b
}

// calls returns how many times srv ran command (INFO commandstats).
func calls(t *testing.T, srv *redistest.Server, command string) int {
	t.Helper()
	stats, err := srv.Info(context.Background(), "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	v, ok := stats["cmdstat_"+command]
	if !ok {
		return 0
	}
	n, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
	c, err := strconv.Atoi(n)
	if err != nil {
		t.Fatalf("cmdstat_%s = %q", command, v)
	}
	return c
}

// numsub returns how many connections srv has subscribed to channel.
func numsub(t *testing.T, srv *redistest.Server, channel string) int64 {
	t.Helper()
	v, err := srv.Do(context.Background(), "PUBSUB", "NUMSUB", channel)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := v.([]any)
	if !ok || len(r) != 2 {
		t.Fatalf("PUBSUB NUMSUB %s answered %v", channel, v)
	}
	n, _ := r[1].(int64)
	return n
}

// eventuallyIn polls cond until it holds, failing the test after lingerWait.
func eventuallyIn(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(lingerWait)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s: %v", lingerWait, what, err)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
}

// publish publishes payload on channel with a client of its own.
func publish(t *testing.T, srv *redistest.Server, channel, payload string) {
	t.Helper()
	if _, err := srv.Do(context.Background(), "PUBLISH", channel, payload); err != nil {
		t.Fatal(err)
	}
}

// TestLingeringChannelRejoinedWithoutSubscribe: a member that joins a
// channel whose last member just left finds it live: its join sends no
// SUBSCRIBE (and the leave no UNSUBSCRIBE), and it gets what is published
// after its join returned.
func TestLingeringChannelRejoinedWithoutSubscribe(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	b := lingerBackend(t, srv, time.Hour) // it lingers throughout the test
	ctx, cancel := context.WithTimeout(context.Background(), lingerWait)
	defer cancel()
	const ch = "{linger}:unlock"
	first := newTestSink()
	m, err := b.hub.join(ctx, ch, first)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, srv, ch, "one")
	first.expect(t, "one")
	subs, unsubs := calls(t, srv, "subscribe"), calls(t, srv, "unsubscribe")
	for i := range 20 {
		b.hub.leave(m)
		k := newTestSink()
		if m, err = b.hub.join(ctx, ch, k); err != nil {
			t.Fatal(err)
		}
		// Had the leave unsubscribed, the join would have waited for its
		// own SUBSCRIBE's confirmation, which Redis sends after running
		// both: the counts below would see them.
		payload := fmt.Sprint("after join ", i)
		publish(t, srv, ch, payload)
		k.expect(t, payload)
	}
	if got := calls(t, srv, "subscribe") - subs; got != 0 {
		t.Errorf("20 leaves and joins within the linger sent %d SUBSCRIBE, want 0", got)
	}
	if got := calls(t, srv, "unsubscribe") - unsubs; got != 0 {
		t.Errorf("20 leaves and joins within the linger sent %d UNSUBSCRIBE, want 0", got)
	}
	if n := numsub(t, srv, ch); n != 1 {
		t.Errorf("PUBSUB NUMSUB %s = %d, want 1", ch, n)
	}
	b.hub.leave(m)
}

// TestLingerEndsWithUnsubscribe: once the linger of a channel without
// members ended, it is unsubscribed, its connection (it was the last
// channel) closes, and a later member subscribes it anew.
func TestLingerEndsWithUnsubscribe(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	b := lingerBackend(t, srv, 50*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), lingerWait)
	defer cancel()
	const ch = "{linger-ends}:unlock"
	m, err := b.hub.join(ctx, ch, newTestSink())
	if err != nil {
		t.Fatal(err)
	}
	b.hub.leave(m)
	eventuallyIn(t, "the channel is unsubscribed", func() error {
		if n := numsub(t, srv, ch); n != 0 {
			return fmt.Errorf("PUBSUB NUMSUB = %d", n)
		}
		return nil
	})
	eventuallyIn(t, "the hub dropped the channel and its shard", func() error {
		b.hub.mu.Lock()
		defer b.hub.mu.Unlock()
		if len(b.hub.channels) != 0 || len(b.hub.shards) != 0 {
			return fmt.Errorf("%d channels, %d shards", len(b.hub.channels), len(b.hub.shards))
		}
		return nil
	})
	subs := calls(t, srv, "subscribe")
	k := newTestSink()
	if m, err = b.hub.join(ctx, ch, k); err != nil {
		t.Fatal(err)
	}
	publish(t, srv, ch, "again")
	k.expect(t, "again")
	if got := calls(t, srv, "subscribe") - subs; got != 1 {
		t.Errorf("joining after the linger sent %d SUBSCRIBE, want 1", got)
	}
	b.hub.leave(m)
}

// TestLingeringChannelDroppedOnReconnect: after a connection loss the
// channels with members are subscribed again, a lingering one is not (it
// is dropped), and a member joining it later subscribes it anew.
func TestLingeringChannelDroppedOnReconnect(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	b := lingerBackend(t, srv, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), lingerWait)
	defer cancel()
	const kept, idle = "{linger-kept}:unlock", "{linger-idle}:unlock"
	k := newTestSink()
	if _, err := b.hub.join(ctx, kept, k); err != nil {
		t.Fatal(err)
	}
	m, err := b.hub.join(ctx, idle, newTestSink())
	if err != nil {
		t.Fatal(err)
	}
	b.hub.leave(m)
	if _, err := srv.KillClients(ctx, "pubsub"); err != nil {
		t.Fatal(err)
	}
	k.expect(t, "<interrupt>")
	k.expect(t, "<resume>")
	if n := numsub(t, srv, kept); n != 1 {
		t.Errorf("PUBSUB NUMSUB %s = %d after the reconnection, want 1", kept, n)
	}
	if n := numsub(t, srv, idle); n != 0 {
		t.Errorf("PUBSUB NUMSUB %s = %d after the reconnection, want 0 (it lingered)", idle, n)
	}
	b.hub.mu.Lock()
	_, still := b.hub.channels[idle]
	b.hub.mu.Unlock()
	if still {
		t.Errorf("the hub kept the lingering channel after the reconnection")
	}
	k2 := newTestSink()
	if _, err := b.hub.join(ctx, idle, k2); err != nil {
		t.Fatal(err)
	}
	publish(t, srv, idle, "back")
	k2.expect(t, "back")
}

// TestCloseWhileLingering: closing the Backend while a channel lingers
// stops its connection's goroutines (TestMain's goleak checks that none
// is left), and a join after it fails with broadcaster.ErrClosed.
func TestCloseWhileLingering(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	b := lingerBackend(t, srv, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), lingerWait)
	defer cancel()
	const ch = "{linger-close}:unlock"
	m, err := b.hub.join(ctx, ch, newTestSink())
	if err != nil {
		t.Fatal(err)
	}
	b.hub.leave(m)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.hub.join(ctx, ch, newTestSink()); !errors.Is(err, broadcaster.ErrClosed) {
		t.Fatalf("join after Close: %v, want broadcaster.ErrClosed", err)
	}
	eventuallyIn(t, "the closed Backend's connection is gone", func() error {
		if n := numsub(t, srv, ch); n != 0 {
			return fmt.Errorf("PUBSUB NUMSUB = %d", n)
		}
		return nil
	})
}
