package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// Tests of the shared pub/sub connection: every Subscription and release
// watch of a Backend shares one pub/sub connection per Redis node, and
// each keeps the guarantees a connection of its own gave it.

// pubsubConns counts the pub/sub connections on srv whose client name is
// name (CLIENT LIST TYPE pubsub).
func pubsubConns(ctx context.Context, srv *redistest.Server, name string) (int, error) {
	v, err := srv.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub")
	if err != nil {
		return 0, err
	}
	list, _ := v.(string)
	n := 0
	for _, line := range strings.Split(list, "\n") {
		for _, f := range strings.Fields(line) {
			if f == "name="+name {
				n++
			}
		}
	}
	return n, nil
}

// waitConns waits until srv has want pub/sub connections named name.
func waitConns(t *testing.T, srv *redistest.Server, name string, want int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s has %d pub/sub connections named %q", srv.Addr(), want, name), func() error {
		n, err := pubsubConns(context.Background(), srv, name)
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("%d of them", n)
		}
		return nil
	})
}

// commitValue commits key = v to context name through be, as another
// process would, with the event carrying the value.
func commitValue(ctx context.Context, be *redis.Backend, name, key string, v int) error {
	b := backend.Batch{Ops: []backend.Op{{Key: key, Value: []byte(strconv.Itoa(v))}}, Codec: "json", EventValueLimit: 1 << 16}
	_, err := be.CommitAndPublish(ctx, name, b, backend.DefaultChannel(name))
	return err
}

// parallel runs f(i) for i in [0, n) on a few goroutines and returns the
// first error.
func parallel(n int, f func(i int) error) error {
	const workers = 8
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if err := f(i); err != nil && errs[w] == nil {
					errs[w] = err
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// nextOf returns sub's next delivery, failing the test after faultWait.
func nextOf(t *testing.T, sub broadcaster.Subscription, what string) broadcaster.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultWait)
	defer cancel()
	m, err := sub.Next(ctx)
	if err != nil {
		t.Fatalf("%s: Next: %v", what, err)
	}
	return m
}

func describe(m broadcaster.Message) string {
	switch {
	case m.Interrupted:
		return "Interrupted"
	case m.Loss:
		return "Loss"
	}
	return fmt.Sprintf("payload %q", m.Payload)
}

// expectMessage wants the next delivery of sub to be payload want.
func expectMessage(t *testing.T, sub broadcaster.Subscription, want, what string) {
	t.Helper()
	if m := nextOf(t, sub, what); m.Loss || m.Interrupted || string(m.Payload) != want {
		t.Fatalf("%s: got %s, want payload %q", what, describe(m), want)
	}
}

// subscribe subscribes b to channel, closing the Subscription when the
// test ends.
func subscribe(t *testing.T, b *redis.Backend, channel string) broadcaster.Subscription {
	t.Helper()
	sub, err := b.Subscribe(faultCtx(t), channel)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", channel, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// TestManyContextsShareOneConnection opens 1,000 contexts on one Backend:
// they use exactly one pub/sub connection, and each receives its own
// events (and nothing of the others'). Then the connection is broken
// while reconnecting is held up: every one of the 1,000 is interrupted
// (its FailClosed reads fail with ErrStale) until the connection is back,
// then reports a loss and converges to the writes it missed.
func TestManyContextsShareOneConnection(t *testing.T) {
	t.Parallel()
	const n = 1000
	srv := redistest.Start(t, nil)
	proxy := redistest.StartProxy(t, srv.Addr())
	ctx := faultCtx(t)
	name := clientName(t)
	b := clientBackend(t, goredis.Options{Addr: proxy.Addr(), ClientName: name}, nil)
	writer := clientBackend(t, goredis.Options{Addr: srv.Addr(), ClientName: name + "-writer"}, nil)
	opts := &contextd.Options{ResyncInterval: -1, FailClosed: true}
	cs := make([]*contextd.Context[int], n)
	ctxName := func(i int) string { return fmt.Sprintf("many-%04d", i) }
	for i := range cs {
		cs[i] = openInstance[int](t, b, ctxName(i), opts)
	}
	if got, err := pubsubConns(ctx, srv, name); err != nil || got != 1 {
		t.Fatalf("%d contexts on one Backend use %d pub/sub connections (%v), want 1", n, got, err)
	}

	// converged waits until instance i holds exactly k = v at revision rev.
	converged := func(what string, i, v int, rev uint64) {
		t.Helper()
		c := cs[i]
		eventually(t, fmt.Sprintf("%s: instance %d holds k = %d", what, i, v), func() error {
			m, err := c.GetContext(ctx)
			if err != nil {
				return err
			}
			if len(m) != 1 || m["k"] != v || c.Revision() != rev {
				return fmt.Errorf("holds %v at revision %d (stats %+v)", m, c.Revision(), c.Stats())
			}
			return nil
		})
	}
	if err := parallel(n, func(i int) error { return commitValue(ctx, writer, ctxName(i), "k", i) }); err != nil {
		t.Fatal(err)
	}
	for i := range cs {
		converged("own events", i, i, 1)
		if s := cs[i].Stats(); s.Snapshots != 1 || s.Losses != 0 || s.LogCatchUps != 0 {
			t.Fatalf("instance %d did not get its change as an event: stats %+v", i, s)
		}
	}

	// Break the connection; new ones are held until Resume.
	proxy.Stall()
	proxy.Break()
	for i, c := range cs {
		eventually(t, fmt.Sprintf("instance %d knows it is interrupted", i), func() error {
			if _, _, err := c.Get(ctx, "k"); !errors.Is(err, contextd.ErrStale) {
				return fmt.Errorf("Get = %v, want ErrStale", err)
			}
			return nil
		})
	}
	if err := parallel(n, func(i int) error { return commitValue(ctx, writer, ctxName(i), "k", n+i) }); err != nil {
		t.Fatal(err)
	}
	proxy.Resume()
	for i, c := range cs {
		converged("after the break", i, n+i, 2)
		if _, _, err := c.Get(ctx, "k"); err != nil {
			t.Fatalf("instance %d after it converged: Get = %v", i, err)
		}
		if s := c.Stats(); s.Losses != 1 {
			t.Fatalf("instance %d reported %d losses for one break (stats %+v)", i, s.Losses, s)
		}
	}
	if got, err := pubsubConns(ctx, srv, name); err != nil || got != 1 {
		t.Fatalf("after the break, %d contexts use %d pub/sub connections (%v), want 1", n, got, err)
	}
}

// TestSharedConnectionKilled kills the one pub/sub connection of 1,000
// Subscriptions (CLIENT KILL): each reports Interrupted, then Loss, then
// delivers again — its own channel's messages only.
func TestSharedConnectionKilled(t *testing.T) {
	t.Parallel()
	const n = 1000
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	b := newBackend(t, srv, nil)
	pub := newBackend(t, srv, nil)
	subs := make([]broadcaster.Subscription, n)
	channel := func(i int) string { return fmt.Sprintf("killed-%04d", i) }
	for i := range subs {
		subs[i] = subscribe(t, b, channel(i))
	}
	if got, err := pubsubConns(ctx, srv, clientName(t)); err != nil || got != 1 {
		t.Fatalf("%d Subscriptions on one Backend use %d pub/sub connections (%v), want 1", n, got, err)
	}
	killed, err := srv.KillNamedClients(ctx, "pubsub", clientName(t))
	if err != nil || killed != 1 {
		t.Fatalf("killed %d pub/sub connections (%v), want the one", killed, err)
	}
	for i, sub := range subs {
		if m := nextOf(t, sub, "after the kill"); !m.Interrupted {
			t.Fatalf("subscription %d: first delivery after the kill is %s, want Interrupted", i, describe(m))
		}
		if m := nextOf(t, sub, "after the Interrupted"); !m.Loss {
			t.Fatalf("subscription %d: delivery after Interrupted is %s, want Loss", i, describe(m))
		}
	}
	if err := parallel(n, func(i int) error { return pub.Publish(ctx, channel(i), []byte(channel(i))) }); err != nil {
		t.Fatal(err)
	}
	for i, sub := range subs {
		expectMessage(t, sub, channel(i), fmt.Sprintf("subscription %d after the loss", i))
	}
}

// TestStalledSharedConnectionReplaced stalls the shared connection (a
// proxy that forwards nothing): the watchdog must notice, interrupt every
// Subscription at once and dial a replacement; when the network flows
// again, each reports a loss and delivers again.
func TestStalledSharedConnectionReplaced(t *testing.T) {
	t.Parallel()
	const n = 20
	srv := redistest.Start(t, nil)
	proxy := redistest.StartProxy(t, srv.Addr())
	ctx := faultCtx(t)
	ropts := &redis.Options{PingInterval: 200 * time.Millisecond, StallTimeout: 500 * time.Millisecond}
	b := clientBackend(t, goredis.Options{Addr: proxy.Addr()}, ropts)
	pub := newBackend(t, srv, nil)
	subs := make([]broadcaster.Subscription, n)
	for i := range subs {
		subs[i] = subscribe(t, b, fmt.Sprint("stalled-", i))
	}
	accepted := proxy.Accepted()

	proxy.Stall()
	for i, sub := range subs {
		if m := nextOf(t, sub, "while stalled"); !m.Interrupted {
			t.Fatalf("subscription %d: first delivery while stalled is %s, want Interrupted", i, describe(m))
		}
	}
	eventually(t, "the watchdog dials a replacement connection", func() error {
		if got := proxy.Accepted(); got <= accepted {
			return fmt.Errorf("%d connections accepted, as before the stall", got)
		}
		return nil
	})
	proxy.Resume()
	for i, sub := range subs {
		if m := nextOf(t, sub, "after Resume"); !m.Loss {
			t.Fatalf("subscription %d: delivery after Resume is %s, want Loss", i, describe(m))
		}
	}
	for i := range subs {
		if err := pub.Publish(ctx, fmt.Sprint("stalled-", i), []byte("after")); err != nil {
			t.Fatal(err)
		}
	}
	for i, sub := range subs {
		expectMessage(t, sub, "after", fmt.Sprintf("subscription %d after the stall", i))
	}
	if got, err := pubsubConns(ctx, srv, clientName(t)); err != nil || got != 1 {
		t.Errorf("after the replacement %d pub/sub connections (%v), want 1", got, err)
	}
}

// TestSlowSubscriberOverflowsAlone lets one Subscription fall behind by
// more than its buffer while two others on the same connection (one of
// the same channel, one of another) read: those get every message in
// order without a loss; the slow one reports a loss before anything
// after its dropped backlog, and then delivers again.
func TestSlowSubscriberOverflowsAlone(t *testing.T) {
	t.Parallel()
	const buffer, n = 8, 30
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	b := newBackend(t, srv, &redis.Options{SubscriberBuffer: buffer})
	pub := newBackend(t, srv, nil)
	slow := subscribe(t, b, "slow")
	same := subscribe(t, b, "slow")
	other := subscribe(t, b, "other")

	// The readers that keep up are never more than one message behind: the
	// publisher waits for both to have read each message before the next.
	type reader struct {
		who  string
		read chan int   // the index of each message read
		err  chan error // why it stopped early
	}
	read := func(who string, sub broadcaster.Subscription) reader {
		r := reader{who: who, read: make(chan int, n), err: make(chan error, 1)}
		go func() {
			for j := range n {
				m, err := sub.Next(ctx)
				switch {
				case err != nil:
					r.err <- err
					return
				case m.Loss || m.Interrupted:
					r.err <- fmt.Errorf("a reader that keeps up got %s after %d messages", describe(m), j)
					return
				case string(m.Payload) != fmt.Sprint("m", j):
					r.err <- fmt.Errorf("message %d is %q, want m%d", j, m.Payload, j)
					return
				}
				r.read <- j
			}
		}()
		return r
	}
	readers := []reader{read("same channel", same), read("other channel", other)}
	for j := range n {
		if err := pub.Publish(ctx, "slow", fmt.Appendf(nil, "m%d", j)); err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, "other", fmt.Appendf(nil, "m%d", j)); err != nil {
			t.Fatal(err)
		}
		for _, r := range readers {
			select {
			case <-r.read:
			case err := <-r.err:
				t.Fatalf("the reader of the %s: %v", r.who, err)
			case <-time.After(faultWait):
				t.Fatalf("the reader of the %s did not get m%d within %v", r.who, j, faultWait)
			}
		}
	}
	// Every message of "slow" has been handed to slow too, the last one
	// perhaps a moment after the reader of the same channel read it (one
	// dispatch hands it to both; Next waits for it).
	if m := nextOf(t, slow, "the slow reader"); !m.Loss {
		t.Fatalf("the slow reader's first delivery is %s, want Loss before anything after its dropped backlog", describe(m))
	}
	last, kept := -1, 0
	for last != n-1 {
		m := nextOf(t, slow, "the slow reader after its loss")
		if m.Loss {
			continue
		}
		j, err := strconv.Atoi(strings.TrimPrefix(string(m.Payload), "m"))
		if m.Interrupted || err != nil || j <= last {
			t.Fatalf("the slow reader got %s after m%d, want later messages in order", describe(m), last)
		}
		last, kept = j, kept+1
	}
	if kept > buffer {
		t.Errorf("the slow reader kept %d messages after its loss, more than its buffer of %d", kept, buffer)
	}
	if err := pub.Publish(ctx, "slow", []byte("after")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, slow, "after", "the slow reader once it caught up")
}

// TestSameChannelTwice subscribes one channel twice on one Backend, as
// two Contexts of one context name do: both get every message; closing
// one leaves the other subscribed; closing both unsubscribes the channel.
func TestSameChannelTwice(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	b := newBackend(t, srv, nil)
	pub := newBackend(t, srv, nil)
	first, second := subscribe(t, b, "twice"), subscribe(t, b, "twice")
	numsub := func() int64 {
		v, err := srv.Do(ctx, "PUBSUB", "NUMSUB", "twice")
		if err != nil {
			t.Fatal(err)
		}
		a, _ := v.([]any)
		if len(a) != 2 {
			t.Fatalf("PUBSUB NUMSUB answered %v", v)
		}
		n, _ := a[1].(int64)
		return n
	}
	if got := numsub(); got != 1 {
		t.Errorf("two Subscriptions of one channel on one Backend: %d subscribers in Redis, want 1 (the shared connection)", got)
	}
	for j := range 5 {
		if err := pub.Publish(ctx, "twice", fmt.Appendf(nil, "m%d", j)); err != nil {
			t.Fatal(err)
		}
	}
	for j := range 5 {
		expectMessage(t, first, fmt.Sprint("m", j), "first Subscription")
		expectMessage(t, second, fmt.Sprint("m", j), "second Subscription")
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, "twice", []byte("after")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, second, "after", "the Subscription left open")
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the channel is unsubscribed", func() error {
		if got := numsub(); got != 0 {
			return fmt.Errorf("%d subscribers", got)
		}
		return nil
	})

	// Two Contexts of one context name on one Backend both apply every
	// event.
	cs := []*contextd.Context[int]{openInstance[int](t, b, "twice", noResync), openInstance[int](t, b, "twice", noResync)}
	for j := range 5 {
		if err := commitValue(ctx, pub, "twice", "k", j); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, map[string]int{"k": 4}, 5, cs...)
	for i, c := range cs {
		if s := c.Stats(); s.Snapshots != 1 || s.Losses != 0 || s.Gaps != 0 {
			t.Errorf("instance %d did not get every event: stats %+v", i, s)
		}
	}
}

// TestRefusedChannelDoesNotHoldOthers refuses one channel of a shared
// connection (ACL): a first Subscribe of it fails with Redis's refusal
// while the other channels deliver; and when a permission is taken away
// (Redis then drops the connection), the channels still allowed come back
// at once while the refused one stays interrupted, until the permission
// returns.
func TestRefusedChannelDoesNotHoldOthers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, appUser)
	ctx := faultCtx(t)
	setApp(ctx, t, srv, "resetchannels", "&ok:*", "&mid:*")
	b := appBackend(t, srv, nil)
	pub := newBackend(t, srv, nil)
	ok, mid := subscribe(t, b, "ok:1"), subscribe(t, b, "mid:1")

	_, err := b.Subscribe(ctx, "no:1")
	var refusal goredis.Error
	if !errors.As(err, &refusal) || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("Subscribe of a channel the ACL refuses = %v, want Redis's NOPERM", err)
	}
	for _, ch := range []string{"ok:1", "mid:1"} {
		if err := pub.Publish(ctx, ch, []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	expectMessage(t, ok, "before", "ok:1 beside a refused channel")
	expectMessage(t, mid, "before", "mid:1 beside a refused channel")

	setApp(ctx, t, srv, "resetchannels", "&ok:*")
	for who, sub := range map[string]broadcaster.Subscription{"ok:1": ok, "mid:1": mid} {
		if m := nextOf(t, sub, who); !m.Interrupted {
			t.Fatalf("%s: first delivery after the connection was dropped is %s, want Interrupted", who, describe(m))
		}
	}
	if m := nextOf(t, ok, "ok:1"); !m.Loss {
		t.Fatalf("ok:1: delivery after Interrupted is %s, want Loss", describe(m))
	}
	if err := pub.Publish(ctx, "ok:1", []byte("while mid is refused")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, ok, "while mid is refused", "ok:1 while mid:1 is refused")
	// mid:1 stays interrupted: nothing for it while it is refused.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if m, err := mid.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("mid:1 while refused delivered %s, %v; want nothing", describe(m), err)
	}

	setApp(ctx, t, srv, "&mid:*")
	if m := nextOf(t, mid, "mid:1"); !m.Loss {
		t.Fatalf("mid:1: delivery once allowed again is %s, want Loss", describe(m))
	}
	if err := pub.Publish(ctx, "mid:1", []byte("after")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, mid, "after", "mid:1 once allowed again")
}

// TestBackendCloseEndsSubscriptions closes a Backend with live
// Subscriptions and a release watch: Next returns ErrClosed, Subscribe
// and WatchRelease fail with it, and the connection goes (goleak, in
// TestMain, checks the goroutines).
func TestBackendCloseEndsSubscriptions(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	b := newBackend(t, srv, nil)
	sub := subscribe(t, b, "closing")
	_, stop, err := b.WatchRelease(ctx, "closing", "k")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	waitConns(t, srv, clientName(t), 1)
	res := make(chan error, 1)
	go func() {
		_, err := sub.Next(ctx)
		res <- err
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; !errors.Is(err, broadcaster.ErrClosed) {
		t.Errorf("Next across Backend.Close = %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(ctx, "closing"); !errors.Is(err, broadcaster.ErrClosed) {
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
	if _, _, err := b.WatchRelease(ctx, "closing", "k"); !errors.Is(err, broadcaster.ErrClosed) {
		t.Errorf("WatchRelease after Close = %v, want ErrClosed", err)
	}
	waitConns(t, srv, clientName(t), 0)
}

// TestSubscribeCloseChurn subscribes and closes from many goroutines at
// once, on a few channels they share, mixed with release watches on one
// of them: every Subscribe that returned receives what is published after
// it, every release watch is woken by a release published after it, no
// loss is reported, and once all are closed so is the connection.
func TestSubscribeCloseChurn(t *testing.T) {
	t.Parallel()
	const goroutines, rounds = 8, 40
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	b := newBackend(t, srv, nil)
	pub := newBackend(t, srv, nil)
	unlock := "{contextd:churn}:unlock"
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				if err := churnRound(ctx, b, pub, unlock, g, r); err != nil {
					errs <- fmt.Errorf("goroutine %d, round %d: %w", g, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitConns(t, srv, clientName(t), 0)
}

func churnRound(ctx context.Context, b, pub *redis.Backend, unlock string, g, r int) error {
	token := fmt.Sprintf("g%d-r%d", g, r)
	if r%3 == 2 {
		notify, stop, err := b.WatchRelease(ctx, "churn", token)
		if err != nil {
			return err
		}
		defer stop()
		if err := pub.Publish(ctx, unlock, []byte(token)); err != nil {
			return err
		}
		select {
		case <-notify:
			return nil
		case <-time.After(faultWait):
			return errors.New("release watch not woken by a release published after it was armed")
		}
	}
	channel := fmt.Sprint("churn-", r%3)
	sub, err := b.Subscribe(ctx, channel)
	if err != nil {
		return err
	}
	defer sub.Close()
	if err := pub.Publish(ctx, channel, []byte(token)); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, faultWait)
	defer cancel()
	for {
		m, err := sub.Next(wctx)
		switch {
		case err != nil:
			return fmt.Errorf("waiting for %q, published after Subscribe returned: %w", token, err)
		case m.Loss || m.Interrupted:
			return fmt.Errorf("got %s with nothing broken", describe(m))
		case string(m.Payload) == token:
			return nil
		}
	}
}

// TestClusterConnectionPerShard opens contexts on a 3-master cluster
// through one Backend: it has one pub/sub connection on each master that
// owns a context in use (sharded pub/sub routes by slot), none on the
// others, and each context receives its events; closing the contexts of
// one master closes the connection there.
func TestClusterConnectionPerShard(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	ctx := faultCtx(t)
	name := clientName(t)
	b := clusterBackend(t, c)
	writer := backendOn(t, goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs(), ClientName: name + "-writer"}), nil)
	// Three contexts owned by each master.
	byMaster := make([][]string, 3)
	for i := 0; len(byMaster[0]) < 3 || len(byMaster[1]) < 3 || len(byMaster[2]) < 3; i++ {
		cname := fmt.Sprint("shard-", i)
		owner, err := c.SlotOwner(ctx, redistest.KeySlot(backend.HashTag(cname)))
		if err != nil {
			t.Fatal(err)
		}
		if len(byMaster[owner]) < 3 {
			byMaster[owner] = append(byMaster[owner], cname)
		}
	}
	conns := func(want ...int) {
		t.Helper()
		for i, node := range c.Nodes() {
			waitConns(t, node, name, want[i])
		}
	}
	open := func(names []string) []*contextd.Context[int] {
		cs := make([]*contextd.Context[int], len(names))
		for i, n := range names {
			cx, err := contextd.New[int](b, n, noResync)
			if err != nil {
				t.Fatal(err)
			}
			if err := cx.Initialize(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cx.Close() })
			cs[i] = cx
		}
		return cs
	}
	check := func(names []string, cs []*contextd.Context[int], v int) {
		t.Helper()
		for i, n := range names {
			if err := commitValue(ctx, writer, n, "k", v); err != nil {
				t.Fatal(err)
			}
			cx := cs[i]
			eventually(t, fmt.Sprintf("context %s gets its event", n), func() error {
				if got, ok, err := cx.Get(ctx, "k"); err != nil || !ok || got != v {
					return fmt.Errorf("k = %d, %v, %v (stats %+v)", got, ok, err, cx.Stats())
				}
				return nil
			})
		}
	}

	first := open(byMaster[0])
	second := open(byMaster[1])
	conns(1, 1, 0)
	check(byMaster[0], first, 1)
	check(byMaster[1], second, 1)
	third := open(byMaster[2])
	conns(1, 1, 1)
	check(byMaster[2], third, 1)
	for _, cx := range first {
		if err := cx.Close(); err != nil {
			t.Fatal(err)
		}
	}
	conns(0, 1, 1)
	check(byMaster[1], second, 2)
	check(byMaster[2], third, 2)
}

// TestReleaseWatchesShareTheConnection arms ten release watches beside a
// Subscription on one Backend: they add no connection (and one
// subscriber of the context's unlock channel in Redis), and a release
// wakes every one of them.
func TestReleaseWatchesShareTheConnection(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	b := newBackend(t, srv, nil)
	holder := newBackend(t, srv, nil)
	const name = "watches"
	_ = subscribe(t, b, backend.DefaultChannel(name))
	lease, err := holder.TryAcquire(ctx, name, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var notes []<-chan struct{}
	for range 10 {
		notify, stop, err := b.WatchRelease(ctx, name, "k")
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		notes = append(notes, notify)
	}
	if got, err := pubsubConns(ctx, srv, clientName(t)); err != nil || got != 1 {
		t.Fatalf("a Subscription and 10 release watches use %d pub/sub connections (%v), want 1", got, err)
	}
	v, err := srv.Do(ctx, "PUBSUB", "NUMSUB", backend.HashTag(name)+":unlock")
	if a, _ := v.([]any); err != nil || len(a) != 2 || a[1] != int64(1) {
		t.Fatalf("PUBSUB NUMSUB of the unlock channel = %v (%v), want 1 subscriber", v, err)
	}
	if err := holder.Release(ctx, lease); err != nil {
		t.Fatal(err)
	}
	for i, notify := range notes {
		select {
		case <-notify:
		case <-time.After(faultWait):
			t.Fatalf("release watch %d not woken by the release", i)
		}
	}
}

// TestClusterSlotMigrationMovesOnlyItsChannels subscribes, on one Backend,
// to channels of two slots of the same master, and moves one slot to
// another master: only that slot's Subscription is interrupted and
// reports a loss (it follows the slot to its new owner); the other goes on
// undisturbed on the same connection.
func TestClusterSlotMigrationMovesOnlyItsChannels(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	ctx := faultCtx(t)
	b := clusterBackend(t, c)
	pub := backendOn(t, goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs()}), nil)
	// Two contexts on one master, in different slots.
	var names []string
	var slots []int
	owner := -1
	for i := 0; len(names) < 2; i++ {
		n := fmt.Sprint("migrate-", i)
		slot := redistest.KeySlot(backend.HashTag(n))
		o, err := c.SlotOwner(ctx, slot)
		if err != nil {
			t.Fatal(err)
		}
		if (owner == -1 || o == owner) && (len(slots) == 0 || slots[0] != slot) {
			owner = o
			names, slots = append(names, n), append(slots, slot)
		}
	}
	moving := subscribe(t, b, backend.DefaultChannel(names[0]))
	staying := subscribe(t, b, backend.DefaultChannel(names[1]))
	if err := c.MigrateSlot(ctx, slots[0], (owner+1)%3); err != nil {
		t.Fatal(err)
	}
	if m := nextOf(t, moving, "the moved slot's Subscription"); !m.Interrupted {
		t.Fatalf("the moved slot's Subscription first delivered %s, want Interrupted", describe(m))
	}
	if m := nextOf(t, moving, "the moved slot's Subscription"); !m.Loss {
		t.Fatalf("the moved slot's Subscription delivered %s after Interrupted, want Loss", describe(m))
	}
	for i, n := range names {
		if err := pub.Publish(ctx, backend.DefaultChannel(n), []byte("after")); err != nil {
			t.Fatalf("publish to %s: %v", n, err)
		}
		sub := []broadcaster.Subscription{moving, staying}[i]
		expectMessage(t, sub, "after", fmt.Sprintf("the Subscription of %s after the migration", n))
	}
	for i, node := range c.Nodes() {
		want := 0
		if i == owner || i == (owner+1)%3 {
			want = 1
		}
		waitConns(t, node, clientName(t), want)
	}
}

// pingCalls is how many PINGs srv has run (INFO commandstats).
func pingCalls(ctx context.Context, srv *redistest.Server) (int, error) {
	v, err := srv.Do(ctx, "INFO", "commandstats")
	if err != nil {
		return 0, err
	}
	info, _ := v.(string)
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_ping:calls=")
		if ok {
			n, _, _ := strings.Cut(rest, ",")
			return strconv.Atoi(n)
		}
	}
	return 0, nil
}

// TestLargeMessageCutByASlowNetwork: a message that arrives in parts, with
// a pause in between longer than the reader's poll interval and than
// PingInterval (a slow network, or a busy server writing a large event in
// pieces), is delivered whole, with no Interrupted or Loss. The reader
// used to read with a 200 ms deadline; go-redis keeps a connection whose
// read timed out with the part it had read consumed, so the next read
// misread the rest of the message, and the connection was replaced —
// interrupting every Subscription on it and making each report a loss. A
// 20,000-key transaction's event lost this way in about 1 round in 10 of
// BenchmarkLargeTransactionFollowUp.
func TestLargeMessageCutByASlowNetwork(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	proxy := redistest.StartProxy(t, srv.Addr())
	ctx := faultCtx(t)
	client := goredis.NewClient(&goredis.Options{Addr: proxy.Addr(), Password: srv.Password(), ClientName: clientName(t)})
	// A watchdog PING after 50 ms of silence shows that the pause was
	// long; a stall is declared only after a minute.
	b := backendOn(t, client, &redis.Options{PingInterval: 50 * time.Millisecond, StallTimeout: time.Minute})
	pub := newBackend(t, srv, nil)
	sub := subscribe(t, b, "big")
	other := subscribe(t, b, "other")

	payload := strings.Repeat("0123456789abcdef", 16<<10) // 256 KiB
	pings, err := pingCalls(ctx, srv)
	if err != nil {
		t.Fatal(err)
	}
	// The next 4 KiB toward the client pass, then nothing: the message is
	// cut (the idle PONGs that may come first are a few dozen bytes each).
	proxy.StallRepliesAfter(4 << 10)
	if err := pub.Publish(ctx, "big", []byte(payload)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message is cut and the reader's watchdog pinged after it", func() error {
		if !proxy.RepliesHeld() {
			return errors.New("the proxy still forwards")
		}
		n, err := pingCalls(ctx, srv)
		if err != nil {
			return err
		}
		if n <= pings {
			return fmt.Errorf("%d PINGs, as before the message", n)
		}
		return nil
	})
	proxy.Resume()
	if m := nextOf(t, sub, "the subscriber of the cut message"); m.Loss || m.Interrupted || string(m.Payload) != payload {
		t.Fatalf("got %.60s, want the whole %d-byte message", describe(m), len(payload))
	}
	if err := pub.Publish(ctx, "other", []byte("after")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, other, "after", "the subscriber of another channel on the connection")
}

// TestQuietPayloadsKeepTheirPlace gives a Subscription a quiet function
// (SetQuiet, which contextd uses for the echoes of its own commits): quiet
// payloads are delivered in order with the next payload that is not
// quiet, in bursts (NextBatch) as they are queued, and a reader waiting
// for them gets them at the latest once 16 are queued, not never.
func TestQuietPayloadsKeepTheirPlace(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	pub := newBackend(t, srv, nil)
	qs := quietSubscription(t, newBackend(t, srv, nil), "quiet")
	var want []string
	publish := func(p string) {
		t.Helper()
		if err := pub.Publish(ctx, "quiet", []byte(p)); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	// Quiet ones, then one that wakes the reader; then more quiet ones
	// than may wait unread, and nothing after them.
	for i := range 3 {
		publish(fmt.Sprint("q", i))
	}
	publish("wake")
	for i := range 16 {
		publish(fmt.Sprint("q", 3+i))
	}
	if got := readPayloads(t, ctx, qs, len(want)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// TestQuietPayloadsReadOnWake: a reader waiting while quiet payloads are
// queued gets them once Wake is called (contextd wakes it when a commit
// whose echo it may hold fails in doubt), not only with a later payload.
func TestQuietPayloadsReadOnWake(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	pub := newBackend(t, srv, nil)
	b := newBackend(t, srv, nil)
	qs := quietSubscription(t, b, "quiet-wake")
	// A second Subscription of the same Backend, not quiet: once it has a
	// payload, the quiet one has it queued too (one delivery to both).
	witness := subscribe(t, b, "quiet-wake")
	got := make(chan []string, 1)
	go func() { got <- readPayloadsOrNotice(ctx, qs, 2) }()
	for _, p := range []string{"q0", "q1"} {
		if err := pub.Publish(ctx, "quiet-wake", []byte(p)); err != nil {
			t.Fatal(err)
		}
		expectMessage(t, witness, p, "the witness")
	}
	select {
	case g := <-got:
		t.Fatalf("the reader got %q before Wake", g)
	default:
	}
	qs.Wake()
	select {
	case g := <-got:
		if fmt.Sprint(g) != "[q0 q1]" {
			t.Fatalf("got %q, want [q0 q1]", g)
		}
	case <-time.After(time.Minute):
		t.Fatal("the quiet payloads were not read a minute after Wake")
	}
}

// TestQuietPayloadsDoNotOverflow checks that quiet payloads wake a waiting
// reader once half of a small buffer (15, less than the 16 that wake it
// anyway) is used, before they could overflow it: 40 quiet payloads
// reach a reader that reads all the time without a Loss. (Were they
// never to wake it, the 16th would overflow the buffer.)
func TestQuietPayloadsDoNotOverflow(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	pub := newBackend(t, srv, nil)
	b := newBackend(t, srv, &redis.Options{SubscriberBuffer: 15})
	qs := quietSubscription(t, b, "quiet-small")
	// A second Subscription of the same Backend, not quiet: once it has a
	// payload, the quiet one has it queued too (one delivery to both).
	witness := subscribe(t, b, "quiet-small")
	const n = 40
	got := make(chan []string, 1)
	go func() { got <- readPayloadsOrNotice(ctx, qs, n+1) }()
	var want []string
	for i := range n + 1 {
		p := fmt.Sprint("q", i)
		if i == n {
			p = "end" // not quiet: it wakes the reader for the last ones
		}
		if err := pub.Publish(ctx, "quiet-small", []byte(p)); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
		expectMessage(t, witness, p, "the witness")
	}
	if g := <-got; fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("got %q\nwant %q", g, want)
	}
}

// readPayloadsOrNotice reads n payloads from qs, or fewer and then a
// description of the notice or error that came instead.
func readPayloadsOrNotice(ctx context.Context, qs quieter, n int) []string {
	var got []string
	var msgs []broadcaster.Message
	for len(got) < n {
		var err error
		if msgs, err = qs.NextBatch(ctx, msgs[:0], 8); err != nil {
			return append(got, err.Error())
		}
		for _, m := range msgs {
			if m.Loss || m.Interrupted {
				return append(got, describe(m))
			}
			got = append(got, string(m.Payload))
		}
	}
	return got
}

// quieter is what the Redis Subscription offers beyond
// broadcaster.Subscription, for contextd's read loop.
type quieter interface {
	SetQuiet(func([]byte) bool)
	Wake()
	NextBatch(context.Context, []broadcaster.Message, int) ([]broadcaster.Message, error)
}

// quietSubscription subscribes b to channel with every payload that starts
// with "q" quiet.
func quietSubscription(t *testing.T, b *redis.Backend, channel string) quieter {
	t.Helper()
	sub := subscribe(t, b, channel)
	qs, ok := sub.(quieter)
	if !ok {
		t.Fatalf("%T has no SetQuiet, Wake and NextBatch", sub)
	}
	qs.SetQuiet(func(p []byte) bool { return p[0] == 'q' })
	return qs
}

// readPayloads reads n payloads from qs with NextBatch (at most 8 at a
// time), failing on a notice.
func readPayloads(t *testing.T, ctx context.Context, qs quieter, n int) []string {
	t.Helper()
	var got []string
	var msgs []broadcaster.Message
	for len(got) < n {
		var err error
		if msgs, err = qs.NextBatch(ctx, msgs[:0], 8); err != nil {
			t.Fatalf("NextBatch after %q: %v (want %d payloads)", got, err, n)
		}
		if len(msgs) == 0 || len(msgs) > 8 {
			t.Fatalf("NextBatch returned %d messages, want 1 to 8", len(msgs))
		}
		for _, m := range msgs {
			if m.Loss || m.Interrupted {
				t.Fatalf("got %s after %q", describe(m), got)
			}
			got = append(got, string(m.Payload))
		}
	}
	return got
}

// TestBurstAppliedInOrder holds a receiver's read loop (its EventApplied
// hook, which runs on the loop, waits) while 50 events queue up on its
// subscription, so that the loop then applies them in bursts: every
// revision is reported to the hook once and in order, a watcher gets every
// change in order, and the copy ends exact, with no gap or loss counted.
func TestBurstAppliedInOrder(t *testing.T) {
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	pub := newBackend(t, srv, nil)
	if err := commitValue(ctx, pub, "burst", "k0", 0); err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var revs []uint64
	trace := &contextd.Trace{EventApplied: func(rev, _ uint64) {
		once.Do(func() { <-held })
		mu.Lock()
		revs = append(revs, rev)
		mu.Unlock()
	}}
	rx := openInstance[int](t, newBackend(t, srv, nil), "burst", &contextd.Options{ResyncInterval: -1, Trace: trace})
	changes := rx.Watch(ctx)
	const n = 50
	for i := 1; i <= n; i++ {
		if err := commitValue(ctx, pub, "burst", fmt.Sprint("k", i%7), i); err != nil {
			t.Fatal(err)
		}
	}
	close(held)
	want := map[string]int{}
	for i := 1; i <= n; i++ {
		want[fmt.Sprint("k", i%7)] = i
	}
	waitConverged(t, want, n+1, rx)
	for i := 1; i <= n; i++ {
		select {
		case ch := <-changes:
			if ch.Revision != uint64(i+1) || ch.Value != i || ch.Key != fmt.Sprint("k", i%7) {
				t.Fatalf("change %d: %+v; want revision %d, %s = %d", i, ch, i+1, fmt.Sprint("k", i%7), i)
			}
		case <-ctx.Done():
			t.Fatalf("the watcher got %d of %d changes", i-1, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, rev := range revs {
		if rev != uint64(i+2) {
			t.Fatalf("EventApplied got revisions %v; want 2 to %d in order", revs, n+1)
		}
	}
	if len(revs) != n {
		t.Fatalf("EventApplied got %d revisions; want %d", len(revs), n)
	}
	if s := rx.Stats(); s.Gaps != 0 || s.Losses != 0 || s.Snapshots != 1 {
		t.Fatalf("stats %+v; want no gap, loss or snapshot after the first", s)
	}
}
