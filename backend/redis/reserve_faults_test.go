package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
	"github.com/contextd-go/contextd/locker"
)

// hookedBackend is a Backend whose atomic commits a test can step into:
// commit, if set before the Context is used, runs each one (run is the
// real commit); dequeue, if set, replaces the Backend's Dequeue (set it
// only while nothing else runs).
type hookedBackend struct {
	*redis.Backend
	commit  func(bt backend.Batch, run func() (backend.Head, error)) (backend.Head, error)
	dequeue func(ctx context.Context) error
}

func (h *hookedBackend) Dequeue(ctx context.Context, name string, w locker.Waiter, keys ...string) error {
	if h.dequeue != nil {
		return h.dequeue(ctx)
	}
	return h.Backend.Dequeue(ctx, name, w, keys...)
}

func (h *hookedBackend) CommitAndPublish(ctx context.Context, name string, bt backend.Batch, channel string) (backend.Head, error) {
	run := func() (backend.Head, error) { return h.Backend.CommitAndPublish(ctx, name, bt, channel) }
	if h.commit == nil {
		return run()
	}
	return h.commit(bt, run)
}

// queueMembers returns the waiter ids queued for key of context name.
func queueMembers(ctx context.Context, t *testing.T, srv *redistest.Server, name, key string) []string {
	t.Helper()
	v, err := srv.Do(ctx, "ZRANGE", "{contextd:"+name+"}:queue:"+key, "0", "-1")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	vs, _ := v.([]any)
	for _, x := range vs {
		s, _ := x.(string)
		ids = append(ids, s)
	}
	return ids
}

// queuedAlone waits until the queue of key holds one waiter.
func queuedAlone(ctx context.Context, t *testing.T, srv *redistest.Server, name, key string) {
	t.Helper()
	eventually(t, "one waiter is queued", func() error {
		if q := queueMembers(ctx, t, srv, name, key); len(q) != 1 {
			return fmt.Errorf("queue %v", q)
		}
		return nil
	})
}

// TestReservationLeftNoPlaceAfterClose makes a contended Modify commit take a
// reservation (backend.Batch.Requeue) while another waiter, w2, stays
// queued behind it, then closes the Context: a closed Context must leave
// no place of its own in the key's queue (w2 alone is left), or the
// others wait for that place's hold — here minutes, as the Context's
// RetryDelay is long; at least 2 s with any options.
//
//   - plain: Close after Modify returned (the reservation is given up by
//     Close, or by its timer before);
//   - closed-mid-commit: Close while the commit that took the place is
//     under way (an application shutting down with calls in flight): the
//     reservation is recorded after Close dropped the others, and its
//     timer's give-up does nothing once closed;
//   - reply-lost: the commit's reply is lost with its connection, and the
//     client (go-redis with retries, Backend.mayResend) sends it again;
//     the script recognises the resend and replies with the original head
//     — without the fifth element, so the Context believes no place was
//     taken and never gives it up.
func TestReservationLeftNoPlaceAfterClose(t *testing.T) {
	for _, tc := range []string{"plain", "closed-mid-commit", "reply-lost"} {
		t.Run(tc, func(t *testing.T) {
			srv := redistest.Start(t, nil)
			ctx := faultCtx(t)
			name, key := "review-reserve-"+tc, "k"
			var proxy *redistest.Proxy
			var hb *hookedBackend
			if tc == "reply-lost" {
				proxy = redistest.StartProxy(t, srv.Addr())
				// A client built by the user, with go-redis's default
				// retries: it resends a command whose connection broke.
				hb = &hookedBackend{Backend: clientBackend(t, goredis.Options{Addr: proxy.Addr(), Password: srv.Password()}, nil)}
			} else {
				hb = &hookedBackend{Backend: newBackend(t, srv, nil)}
			}
			holder := newBackend(t, srv, nil)
			lease, err := holder.TryAcquire(ctx, name, key, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			// A long RetryDelay: no pause ends the waits below, and the
			// places live for minutes (hold 4 × RetryDelay).
			c := openInstance[int](t, hb, name, &contextd.Options{ResyncInterval: -1, RetryDelay: time.Minute})
			// released is closed once the holder let the lock go: the
			// commit after it is the one that goes through.
			released := make(chan struct{})
			requeued := 0
			hb.commit = func(bt backend.Batch, run func() (backend.Head, error)) (backend.Head, error) {
				select {
				case <-released:
				default:
					return run()
				}
				if bt.Requeue == nil {
					return run()
				}
				switch tc {
				case "closed-mid-commit":
					h, err := run()
					if err == nil && bt.Requeue.Queued {
						requeued++
					}
					if err := c.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
					return h, err
				case "reply-lost":
					proxy.StallReplies()
					type result struct {
						h   backend.Head
						err error
					}
					res := make(chan result, 1)
					go func() {
						h, err := run()
						res <- result{h, err}
					}()
					for deadline := time.Now().Add(faultWait); ; {
						if r, _ := metaField(ctx, srv, name, "rev"); r == "1" {
							break
						}
						if time.Now().After(deadline) {
							t.Error("the commit did not run in Redis")
							break
						}
						time.Sleep(2 * time.Millisecond) // polling a condition, with a deadline
					}
					proxy.Break() // the reply is lost with the connection
					proxy.Resume()
					r := <-res
					if r.err == nil {
						requeued++ // the place was taken by the first run
					}
					return r.h, r.err
				}
				h, err := run()
				if err == nil && bt.Requeue.Queued {
					requeued++
				}
				return h, err
			}
			done := modifyQueuedWithOneBehind(ctx, ctx, t, srv, holder, c, name, key, nil)
			close(released)
			if err := holder.Release(ctx, lease); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Modify: %v", err)
			}
			if requeued != 1 {
				t.Fatalf("%d commits took a reservation, want 1", requeued)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if q := queueMembers(ctx, t, srv, name, key); !slices.Equal(q, []string{"w2"}) {
				t.Errorf("after Close the queue holds %v, want [w2] alone: a place the closed Context took is left for its hold", q)
			}
		})
	}
}

// tapDialer dials real connections to Redis and, once stalled, holds back
// what Redis sends on the connections that subscribed (pub/sub), until
// the test ends: commands go on as usual, but no subscription is ever
// confirmed.
type tapDialer struct {
	stalled atomic.Bool
	end     chan struct{}
	mu      sync.Mutex
	subs    []*tapConn
}

type tapConn struct {
	net.Conn
	d      *tapDialer
	sub    atomic.Bool
	closed chan struct{}
	once   sync.Once
}

func (d *tapDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, d: d, closed: make(chan struct{})}, nil
}

// subscribed returns the connections that subscribed so far.
func (d *tapDialer) subscribed() []*tapConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.subs)
}

func (c *tapConn) Write(b []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(b), []byte("subscribe")) && !c.sub.Swap(true) {
		c.d.mu.Lock()
		c.d.subs = append(c.d.subs, c)
		c.d.mu.Unlock()
	}
	return c.Conn.Write(b)
}

// Read withholds what it read once the connection subscribed and the
// dialer is stalled: a read under way when the SUBSCRIBE went out (for
// the PONG of the connection's first PING) must not pass the
// confirmation on either.
func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.sub.Load() && c.d.stalled.Load() {
		select {
		case <-c.d.end:
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	return n, err
}

func (c *tapConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// TestReserveDoesNotWaitForSubscription: a contended Modify whose turn
// has come (the lock it waited for is released, it is first in the
// queue) must commit although the pub/sub connection is down: taking a
// reservation (contextd.reserve → WatchTurnAfter → hub.join) must not
// wait for a subscription that is not confirmed. The waiter holds the
// head of the key's queue meanwhile, so every other instance waits too.
//
// The pub/sub connection of the instance is broken and its replacement
// never answers. With the default PingInterval and StallTimeout the join
// waits 3 s per contended commit; here they are long, so that the wait
// outlasts the call's ctx and shows as an error rather than as time.
func TestReserveDoesNotWaitForSubscription(t *testing.T) {
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	const name, key = "review-reserve-sub", "k"
	d := &tapDialer{end: make(chan struct{})}
	t.Cleanup(func() { close(d.end) })
	b := clientBackend(t, goredis.Options{Addr: srv.Addr(), Password: srv.Password(), Dialer: d.dial},
		&redis.Options{PingInterval: time.Minute, StallTimeout: time.Minute})
	holder := newBackend(t, srv, nil)
	lease, err := holder.TryAcquire(ctx, name, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Short pauses: with no notifications, a pause ends the wait.
	hb := &hookedBackend{Backend: b}
	hb.commit = func(bt backend.Batch, run func() (backend.Head, error)) (backend.Head, error) {
		h, err := run()
		if bt.Requeue != nil {
			t.Logf("commit with a requeue request: %v, queued %v, subscribing conns %d", err, bt.Requeue.Queued, len(d.subscribed()))
		}
		return h, err
	}
	c := openInstance[int](t, hb, name, &contextd.Options{ResyncInterval: -1, RetryDelay: 20 * time.Millisecond, MaxRetries: 100000})
	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	done := modifyQueuedWithOneBehind(ctx, mctx, t, srv, holder, c, name, key, nil)
	d.stalled.Store(true)
	before := d.subscribed()
	for _, s := range before {
		_ = s.Close()
	}
	eventually(t, "the subscription is made again (and never confirmed)", func() error {
		if n := len(d.subscribed()); n <= len(before) {
			return fmt.Errorf("%d subscribing connections", n)
		}
		return nil
	})
	if err := holder.Release(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Modify, first in the queue of a free key, failed: %v", err)
	}
}

// TestReservedWaitCancelledIsNotAcquired: two Modify calls wait behind the
// same queued waiter, one with a reservation its Context's previous
// commit took (it waits before any attempt), one without (its attempt was
// refused and queued); both ctxs end. Callers tell a lock wait that ended
// from other failures by ErrLockNotAcquired: both errors should say the
// same. Found: the call with the reservation returns ctx.Err() alone
// (locker.Policy.Queued: "A wait that ctx ends before any attempt
// returns ctx.Err() alone"), the other ErrLockNotAcquired joined with it.
func TestReservedWaitCancelledIsNotAcquired(t *testing.T) {
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	const name, key = "review-claimed-cancel", "k"
	inc := func(cur int, _ bool) (int, error) { return cur + 1, nil }
	waits := make(chan struct{}, 8)
	trace := &contextd.Trace{LockWaitStart: func(ctx context.Context, key string) (context.Context, func(error)) {
		waits <- struct{}{}
		return ctx, func(error) {}
	}}
	holder := newBackend(t, srv, nil)
	lease, err := holder.TryAcquire(ctx, name, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// A long RetryDelay: the reservation is not given up by its timer,
	// and no pause ends the waits.
	opts := &contextd.Options{ResyncInterval: -1, RetryDelay: time.Minute, Trace: trace}
	b := openInstance[int](t, newBackend(t, srv, nil), name, opts)
	c := openInstance[int](t, newBackend(t, srv, nil), name, opts)
	done := modifyQueuedWithOneBehind(ctx, ctx, t, srv, holder, b, name, key, func() { <-waits })
	if err := holder.Release(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if q := queueMembers(ctx, t, srv, name, key); len(q) != 2 || q[0] != "w2" {
		t.Fatalf("queue %v, want w2 and b's reservation", q)
	}
	wait := func(x *contextd.Context[int]) (cancel func() error) {
		wctx, stop := context.WithCancel(ctx)
		res := make(chan error, 1)
		go func() {
			_, err := x.Modify(wctx, key, inc)
			res <- err
		}()
		<-waits
		return func() error {
			stop()
			return <-res
		}
	}
	claimed := wait(b) // waits for its reservation's turn
	plain := wait(c)
	eventually(t, "c's Modify is queued", func() error {
		if q := queueMembers(ctx, t, srv, name, key); len(q) != 3 {
			return fmt.Errorf("queue %v", q)
		}
		return nil
	})
	errClaimed, errPlain := claimed(), plain()
	t.Logf("with a reservation: %v; without: %v", errClaimed, errPlain)
	if !errors.Is(errClaimed, context.Canceled) || !errors.Is(errPlain, context.Canceled) {
		t.Fatalf("errors %v and %v, want both to match context.Canceled", errClaimed, errPlain)
	}
	if a, p := errors.Is(errClaimed, contextd.ErrLockNotAcquired), errors.Is(errPlain, contextd.ErrLockNotAcquired); a != p {
		t.Errorf("a lock wait ended by its ctx matches ErrLockNotAcquired: %v with a reservation, %v without", a, p)
	}
}

// modifyQueuedWithOneBehind starts a Modify (an increment) of key on c
// with mctx while holder keeps the key locked, waits until it is queued
// (after started, if given, returns), and queues waiter w2 behind it, so
// that its commit asks for a place; it returns the Modify's outcome.
func modifyQueuedWithOneBehind(ctx, mctx context.Context, t *testing.T, srv *redistest.Server, holder *redis.Backend, c *contextd.Context[int], name, key string, started func()) <-chan error {
	t.Helper()
	return modifyQueuedWith(ctx, mctx, t, srv, holder, c, name, key, "w2", started)
}

// modifyQueuedWith is modifyQueuedWithOneBehind with waiter behind instead
// of w2 (a waiter keeps its ticket in every queue it joins: one queued
// earlier elsewhere would go ahead of the Modify).
func modifyQueuedWith(ctx, mctx context.Context, t *testing.T, srv *redistest.Server, holder *redis.Backend, c *contextd.Context[int], name, key, behind string, started func()) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := c.Modify(mctx, key, func(cur int, _ bool) (int, error) { return cur + 1, nil })
		done <- err
	}()
	if started != nil {
		started()
	}
	queuedAlone(ctx, t, srv, name, key)
	if _, err := holder.TryAcquireQueued(ctx, name, key, time.Minute, locker.Waiter{ID: behind, Hold: 10 * time.Minute}); !errors.Is(err, locker.ErrNotAcquired) {
		t.Fatalf("TryAcquireQueued of %s = %v, want it queued", behind, err)
	}
	return done
}

// TestWaitEndedAfterCloseLeavesQueue: a write that waits in a key's queue
// and ends (its ctx) after its Context was closed gives its place up: a
// closed Context does no background work, so the place is left at once,
// in the write's goroutine, not to its hold (here 40 s: four times the
// long retry delay, which no pause ends either).
func TestWaitEndedAfterCloseLeavesQueue(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	const name, key = "wait-close", "k"
	holder := newBackend(t, srv, nil)
	if _, err := holder.TryAcquire(ctx, name, key, time.Minute); err != nil {
		t.Fatal(err)
	}
	c, err := contextd.New[int](newBackend(t, srv, nil), name, &contextd.Options{ResyncInterval: -1, RetryDelay: 10 * time.Second, MaxRetries: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- c.UpdateContext(wctx, key, 1) }()
	queuedAlone(ctx, t, srv, name, key)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the write whose ctx ended: %v; want context.Canceled", err)
	}
	if q := queueMembers(ctx, t, srv, name, key); len(q) != 0 {
		t.Fatalf("after Close and the write's return the queue holds %v; want it empty", q)
	}
}

// TestCloseLeavesReservationsWithinOneBound: Close gives up the places of
// the reservations no call claimed (contended Modify calls on two keys left
// one each) within one time bound, not one each: with Redis unreachable,
// each would otherwise wait its own 5 s, one after the other. Here the
// Dequeues fail at once, and each reports the deadline it was given.
func TestCloseLeavesReservationsWithinOneBound(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	const name = "reserve-close-bound"
	hb := &hookedBackend{Backend: newBackend(t, srv, nil)}
	holder := newBackend(t, srv, nil)
	// A long RetryDelay: the places live for minutes, unclaimed.
	c := openInstance[int](t, hb, name, &contextd.Options{ResyncInterval: -1, RetryDelay: time.Minute})
	for _, key := range []string{"k1", "k2"} {
		lease, err := holder.TryAcquire(ctx, name, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		done := modifyQueuedWith(ctx, ctx, t, srv, holder, c, name, key, "behind-"+key, nil)
		if err := holder.Release(ctx, lease); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("Modify of %s: %v", key, err)
		}
		if q := queueMembers(ctx, t, srv, name, key); len(q) != 2 || q[0] != "behind-"+key {
			t.Fatalf("queue of %s holds %v, want behind-%s and the Context's place behind it", key, q, key)
		}
	}
	var mu sync.Mutex
	var deadlines []time.Time
	hb.dequeue = func(ctx context.Context) error {
		d, ok := ctx.Deadline()
		if !ok {
			t.Error("a Dequeue at Close without a deadline")
		}
		mu.Lock()
		deadlines = append(deadlines, d)
		mu.Unlock()
		return errors.New("unreachable")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if len(deadlines) != 2 {
		t.Fatalf("Close made %d Dequeues, want 2 (one per place)", len(deadlines))
	}
	if !deadlines[0].Equal(deadlines[1]) {
		t.Errorf("the places were left within bounds of their own (deadlines %v, %v), not one", deadlines[0].Format(time.StampMicro), deadlines[1].Format(time.StampMicro))
	}
}
