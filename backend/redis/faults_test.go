package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// Fault-injection tests: contextd.Context instances, each on a Backend with
// a go-redis client of its own as separate processes would have, under
// faults of the connection, the server and the data. Every test that kills
// or restarts a server starts its own; each asserts that all instances
// converge to what a freshly initialized instance reads, and that no
// acknowledged write is lost while Redis keeps its data.

// faultWait bounds every wait for a condition; normally they hold within
// milliseconds, or within the reconnect backoff (at most 2 s).
const faultWait = 15 * time.Second

// faultCtx is a context for one test's operations, bounded so that a hung
// call fails the test instead of the binary.
func faultCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// bugWait bounds the waits of the regression tests, for conditions that
// hold within milliseconds when the code is right; it keeps a regression
// from making the run slow.
const bugWait = 3 * time.Second

// eventually polls cond until it returns nil, and fails the test with its
// last error after faultWait.
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	eventuallyWithin(t, faultWait, what, cond)
}

func eventuallyWithin(t testing.TB, limit time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s: %v", limit, what, err)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition, with a deadline
	}
}

// openInstance returns an initialized Context on b (a Backend, or one
// wrapped by a test), closed when the test ends (before b, whose cleanup
// was registered first).
func openInstance[T any](t *testing.T, b backend.Backend, name string, opts *contextd.Options) *contextd.Context[T] {
	t.Helper()
	c, err := contextd.New[T](b, name, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), faultWait)
	defer cancel()
	if err := c.Initialize(ctx); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// instances opens n instances of context name, each on a backend (and
// go-redis client) of its own.
func instances[T any](t *testing.T, srv *redistest.Server, name string, n int, opts *contextd.Options, ropts *redis.Options) []*contextd.Context[T] {
	t.Helper()
	cs := make([]*contextd.Context[T], n)
	for i := range cs {
		cs[i] = openInstance[T](t, newBackend(t, srv, ropts), name, opts)
	}
	return cs
}

// noResync turns the periodic revision check off, so that convergence
// after a fault must come from the fault's own signal (a loss reported by
// the subscription, an epoch change, a gap), not from the check.
var noResync = &contextd.Options{ResyncInterval: -1}

// clientBackend returns a Backend on a client of its own made with copts
// (named after the test unless copts names it); both are closed when the
// test ends.
func clientBackend(t *testing.T, copts goredis.Options, ropts *redis.Options) *redis.Backend {
	t.Helper()
	if copts.ClientName == "" {
		copts.ClientName = clientName(t)
	}
	return backendOn(t, goredis.NewClient(&copts), ropts)
}

// openedBackend returns a Backend made by redis.Open, so with the client
// configuration the library itself chooses, that reaches its server
// through p; ropts gives the other options (its Host and Port are set
// here).
func openedBackend(t *testing.T, p *redistest.Proxy, ropts redis.Options) *redis.Backend {
	t.Helper()
	host, port, err := net.SplitHostPort(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	ropts.Host = host
	if ropts.Port, err = strconv.Atoi(port); err != nil {
		t.Fatal(err)
	}
	b, err := redis.Open(&ropts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// storeState returns what a freshly initialized instance reads: the
// store's entries and revision.
func storeState[T any](t *testing.T, srv *redistest.Server, name string) (map[string]T, uint64) {
	t.Helper()
	c := openInstance[T](t, newBackend(t, srv, nil), name, noResync)
	defer c.Close()
	m, err := c.GetContext(context.Background())
	if err != nil {
		t.Fatalf("GetContext of a fresh instance: %v", err)
	}
	return m, c.Revision()
}

// waitConverged waits until every instance is at revision rev with exactly
// the entries want.
func waitConverged[T comparable](t *testing.T, want map[string]T, rev uint64, cs ...*contextd.Context[T]) {
	t.Helper()
	waitConvergedWithin(t, faultWait, want, rev, cs...)
}

func waitConvergedWithin[T comparable](t *testing.T, limit time.Duration, want map[string]T, rev uint64, cs ...*contextd.Context[T]) {
	t.Helper()
	for i, c := range cs {
		eventuallyWithin(t, limit, fmt.Sprintf("instance %d converges to the store's revision %d", i, rev), func() error {
			r := c.Revision()
			got, err := c.GetContext(context.Background())
			if err != nil {
				return err
			}
			if r != rev || !maps.Equal(got, want) {
				return fmt.Errorf("instance at revision %d with %v; store at %d with %v (stats %+v)", r, got, rev, want, c.Stats())
			}
			return nil
		})
	}
}

// metaField reads a field of the context's meta hash straight from Redis.
func metaField(ctx context.Context, srv *redistest.Server, name, field string) (string, error) {
	v, err := srv.Do(ctx, "HGET", "{contextd:"+name+"}:meta", field)
	if err != nil {
		return "", err
	}
	s, _ := v.(string)
	return s, nil
}

// ---------------------------------------------------------------------------
// The ledger of acknowledged writes.

// outcome is the state a write leaves a key in.
type outcome struct {
	v       int
	deleted bool
}

func (o outcome) String() string {
	if o.deleted {
		return "deleted"
	}
	return fmt.Sprint(o.v)
}

// ledger records the writes of per-key writers (every key has one writer,
// which writes sequentially), so "the last acknowledged write" of a key is
// well defined. A write that returned an error may or may not have been
// applied (the connection can break after Redis ran it), so it is kept as
// possible until a later write of the key is acknowledged.
type ledger struct {
	mu       sync.Mutex
	last     map[string]outcome   // last acknowledged write per key
	possible map[string][]outcome // failed writes since then
	incAcked int                  // acknowledged increments of the counter
	incMaybe int                  // failed increments
	acks     int
	fails    int
	firstErr error
}

// counterKey is the key every writer increments with Modify.
const counterKey = "n"

func newLedger() *ledger {
	return &ledger{last: make(map[string]outcome), possible: make(map[string][]outcome)}
}

func (l *ledger) record(err error, writes map[string]outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count(err)
	for k, o := range writes {
		if err == nil {
			l.last[k] = o
			delete(l.possible, k)
		} else {
			l.possible[k] = append(l.possible[k], o)
		}
	}
}

func (l *ledger) recordInc(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count(err)
	if err == nil {
		l.incAcked++
	} else {
		l.incMaybe++
	}
}

func (l *ledger) count(err error) {
	if err == nil {
		l.acks++
		return
	}
	l.fails++
	if l.firstErr == nil {
		l.firstErr = err
	}
}

func (l *ledger) stats() (acks, fails int, firstErr error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acks, l.fails, l.firstErr
}

// check compares the store's final entries with the ledger: every key holds
// its last acknowledged write or a failed write made after it, and the
// counter holds every acknowledged increment and at most the failed ones
// on top.
func (l *ledger) check(t *testing.T, final map[string]int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, want := range l.last {
		v, ok := final[k]
		got := outcome{v: v, deleted: !ok}
		if got == want || slices.Contains(l.possible[k], got) {
			continue
		}
		t.Errorf("key %q is %v; the last acknowledged write left %v (failed writes after it: %v)", k, got, want, l.possible[k])
	}
	if n := final[counterKey]; n < l.incAcked || n > l.incAcked+l.incMaybe {
		t.Errorf("counter %q is %d after %d acknowledged and %d failed increments", counterKey, n, l.incAcked, l.incMaybe)
	}
}

// startWriters makes every instance write its own keys until stop is
// closed: w<i> by UpdateContext, w<i> and t<i> by TransactionalUpdate, d<i>
// put and deleted in turn, and the shared counter by Modify. Each call gets
// opTimeout. The returned function waits for the writers to end.
func startWriters(cs []*contextd.Context[int], led *ledger, stop <-chan struct{}, opTimeout time.Duration) (wait func()) {
	inc := func(cur int, _ bool) (int, error) { return cur + 1, nil }
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, tk, d := fmt.Sprintf("w%d", i), fmt.Sprintf("t%d", i), fmt.Sprintf("d%d", i)
			for j := 1; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				var err error
				switch j % 5 {
				case 0:
					err = c.UpdateContext(ctx, w, j)
					led.record(err, map[string]outcome{w: {v: j}})
				case 1, 3:
					_, err = c.Modify(ctx, counterKey, inc)
					led.recordInc(err)
				case 2:
					err = c.TransactionalUpdate(ctx, map[string]int{w: j, tk: j})
					led.record(err, map[string]outcome{w: {v: j}, tk: {v: j}})
				case 4:
					if j%10 == 4 {
						err = c.UpdateContext(ctx, d, j)
						led.record(err, map[string]outcome{d: {v: j}})
					} else {
						err = c.Delete(ctx, d)
						led.record(err, map[string]outcome{d: {deleted: true}})
					}
				}
				cancel()
				if err != nil {
					// Pacing only: a server that is down refuses at once, and
					// the writer need not spin meanwhile.
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
			}
		}()
	}
	return wg.Wait
}

// ---------------------------------------------------------------------------
// 1. Pub/sub connections killed.

// TestFaultPubSubKilledWhileWriting kills the pub/sub connections of three
// writing instances again and again (CLIENT KILL TYPE pubsub). Every kill
// must be reported to each instance as a loss once it has resubscribed;
// afterwards all converge to the store, which holds every acknowledged
// write. The periodic check is off, so only the loss signals can heal. It
// runs with every capability, without the change log (catch-ups load
// snapshots) and with none (events published after the commit, locks
// taken around each write).
func TestFaultPubSubKilledWhileWriting(t *testing.T) {
	t.Parallel()
	for _, cfg := range []struct {
		name string
		opts redis.Options
	}{
		{"all", redis.Options{}},
		{"no-change-log", redis.Options{DisableChangeLog: true}},
		{"generic", redis.Options{DisableAtomicPublish: true, DisableLockAwareCommit: true, DisableChangeLog: true, DisableReleaseNotify: true}},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			testPubSubKilled(t, &cfg.opts)
		})
	}
}

func testPubSubKilled(t *testing.T, ropts *redis.Options) {
	srv := redistest.Start(t, nil)
	const name = "fault-pubsub-kill"
	// Writers of the shared counter wait for each other's locks on the
	// generic path: keep the pauses short.
	opts := &contextd.Options{ResyncInterval: -1, RetryDelay: 2 * time.Millisecond, MaxRetries: 5000}
	cs := instances[int](t, srv, name, 3, opts, ropts)
	ctx := faultCtx(t)
	led := newLedger()
	stop := make(chan struct{})
	wait := startWriters(cs, led, stop, 10*time.Second)
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			wait()
		}
	}()

	const rounds = 5
	for round := range rounds {
		before := make([]uint64, len(cs))
		for i, c := range cs {
			before[i] = c.Stats().Losses
		}
		acks, _, _ := led.stats()
		n, err := srv.KillClients(ctx, "pubsub")
		if err != nil {
			t.Fatalf("round %d: CLIENT KILL TYPE pubsub: %v", round, err)
		}
		if n < len(cs) {
			t.Fatalf("round %d: killed %d pub/sub connections, want at least one per instance (%d)", round, n, len(cs))
		}
		// Each instance reports the kill once it has resubscribed, so the
		// next round finds every subscription live again.
		for i, c := range cs {
			eventually(t, fmt.Sprintf("round %d: instance %d reports a loss", round, i), func() error {
				if got := c.Stats().Losses; got <= before[i] {
					return fmt.Errorf("losses still %d (stats %+v)", got, c.Stats())
				}
				return nil
			})
		}
		// And writes go on between kills.
		eventually(t, fmt.Sprintf("round %d: writes go on", round), func() error {
			if now, _, _ := led.stats(); now < acks+20 {
				return fmt.Errorf("%d acknowledged writes, want %d", now, acks+20)
			}
			return nil
		})
	}
	close(stop)
	wait()
	stopped = true

	acks, fails, firstErr := led.stats()
	if fails > 0 {
		t.Errorf("%d of %d writes failed while only pub/sub connections were killed; first: %v", fails, acks+fails, firstErr)
	}
	want, rev := storeState[int](t, srv, name)
	led.check(t, want)
	waitConverged(t, want, rev, cs...)
	for i, c := range cs {
		if s := c.Stats(); s.Losses < rounds {
			t.Errorf("instance %d: %d losses reported after %d kills (stats %+v)", i, s.Losses, rounds, s)
		}
	}
	t.Logf("%d writes to revision %d; stats of instance 0: %+v", acks, rev, cs[0].Stats())
}

// ---------------------------------------------------------------------------
// 2. redis-server restarted.

// probe is one operation tried under a fault.
type probe struct {
	name string
	op   func(ctx context.Context) error
}

// runProbes runs the probes at once, each with a ctx that ends after limit,
// and returns their errors and durations.
func runProbes(probes []probe, limit time.Duration) ([]error, []time.Duration) {
	var wg sync.WaitGroup
	errs := make([]error, len(probes))
	took := make([]time.Duration, len(probes))
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			defer cancel()
			start := time.Now()
			errs[i] = p.op(ctx)
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	return errs, took
}

// probeWhileDown runs operations on c while the server is down: each must
// fail with an error of its own, well before its context's deadline.
func probeWhileDown(t *testing.T, c *contextd.Context[int]) {
	t.Helper()
	const limit = 4 * time.Second
	probes := []probe{
		{"UpdateContext", func(ctx context.Context) error { return c.UpdateContext(ctx, "probe", 1) }},
		{"TransactionalUpdate", func(ctx context.Context) error {
			return c.TransactionalUpdate(ctx, map[string]int{"probe": 1, "probe2": 2})
		}},
		{"Delete", func(ctx context.Context) error { return c.Delete(ctx, "probe") }},
		{"Modify", func(ctx context.Context) error {
			_, err := c.Modify(ctx, "probe", func(cur int, _ bool) (int, error) { return cur + 1, nil })
			return err
		}},
		{"Get with Fresh", func(ctx context.Context) error {
			_, _, err := c.Get(ctx, "w0", contextd.Fresh())
			return err
		}},
		{"Sync", c.Sync},
		{"AcquireLock", func(ctx context.Context) error {
			l, err := c.AcquireLock(ctx, contextd.LockOptions{Key: "probe"})
			if err == nil {
				_ = l.Release(ctx)
			}
			return err
		}},
	}
	errs, took := runProbes(probes, limit)
	for i, p := range probes {
		switch err := errs[i]; {
		case err == nil:
			t.Errorf("%s succeeded while the server was down", p.name)
		case errors.Is(err, context.DeadlineExceeded) || took[i] >= limit:
			t.Errorf("%s hung until its %v deadline while the server was down (%v): %v", p.name, limit, took[i], err)
		default:
			t.Logf("%s while down: failed after %v: %v", p.name, took[i].Round(time.Millisecond), err)
		}
	}
	// Plain reads serve the last known state (the default policy).
	if _, ok, err := c.Get(context.Background(), counterKey); err != nil || !ok {
		t.Errorf("Get from the local copy while the server was down = %v, %v; want the last known value", ok, err)
	}
}

// TestFaultRestartWithPersistence kills a redis-server that has an
// append-only file (fsync always) while three instances write, checks that
// operations fail fast while it is down, restarts it, and checks that
// writes succeed again, every instance converges, and no acknowledged
// write was lost.
func TestFaultRestartWithPersistence(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, &redistest.Options{AppendOnly: true})
	const name = "fault-restart-aof"
	// The periodic check stays on here (and frequent): a catch-up that
	// fails is retried only by it. Right after the restart, a client whose
	// pool saw many failed dials during the outage keeps failing commands
	// with the outage's dial error for up to a second (go-redis's dial
	// circuit breaker), so the catch-up a resubscription triggers can fail;
	// TestFaultFailedCatchUpRetried shows that alone it never heals.
	//
	// go-redis's own retries are off: a retry that reaches the restarted
	// server re-runs a commit whose reply the kill lost, which double-counts
	// a Modify (the bug TestFaultLostCommitReplyAppliedOnce shows
	// deterministically) and would make this test fail by chance.
	opts := &contextd.Options{ResyncInterval: 250 * time.Millisecond}
	cs := make([]*contextd.Context[int], 3)
	for i := range cs {
		cs[i] = openInstance[int](t, clientBackend(t, goredis.Options{Addr: srv.Addr(), MaxRetries: -1}, nil), name, opts)
	}
	led := newLedger()
	stop := make(chan struct{})
	wait := startWriters(cs, led, stop, 2*time.Second)
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			wait()
		}
	}()
	eventually(t, "writes are acknowledged before the kill", func() error {
		if acks, _, _ := led.stats(); acks < 100 {
			return fmt.Errorf("%d acknowledged writes", acks)
		}
		return nil
	})

	srv.Kill()
	_, failsBefore, _ := led.stats()
	probeWhileDown(t, cs[0])
	eventually(t, "the writers see failures while the server is down", func() error {
		if _, fails, _ := led.stats(); fails <= failsBefore {
			return errors.New("no write failed yet")
		}
		return nil
	})

	srv.Restart(t)
	acksAfter, _, _ := led.stats()
	eventually(t, "writes succeed again after the restart", func() error {
		if acks, _, _ := led.stats(); acks < acksAfter+100 {
			return fmt.Errorf("%d writes acknowledged since the restart", acks-acksAfter)
		}
		return nil
	})
	close(stop)
	wait()
	stopped = true

	want, rev := storeState[int](t, srv, name)
	led.check(t, want)
	waitConverged(t, want, rev, cs...)
	// The periodic check may heal an instance before its subscription is
	// back (its reconnect backs off up to 2 s); the subscription must come
	// back all the same, and say that it lost messages.
	for i, c := range cs {
		eventually(t, fmt.Sprintf("instance %d reports a loss across the restart", i), func() error {
			if s := c.Stats(); s.Losses == 0 {
				return fmt.Errorf("stats %+v", s)
			}
			return nil
		})
	}
	// A go-redis pool that saw many failed dials starts a redialer that
	// sleeps a second between attempts and looks at Close only when it
	// wakes; let those of this test's clients find the server and end, so
	// that goleak, which checks after the last test, does not catch one
	// asleep.
	eventually(t, "go-redis's background redialers end", func() error {
		buf := make([]byte, 1<<20)
		if bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("pool.(*ConnPool).tryDial")) {
			return errors.New("a redialer is still running")
		}
		return nil
	})
	acks, fails, _ := led.stats()
	t.Logf("%d writes acknowledged, %d failed; store at revision %d", acks, fails, rev)
}

// TestFaultRestartWithoutPersistence restarts a redis-server that keeps no
// data: Redis comes back empty. The next commit must start a new epoch;
// every instance must drop the keys of the old one and converge to the new
// state, and watchers must get a Reset.
func TestFaultRestartWithoutPersistence(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "fault-restart-empty"
	cs := instances[int](t, srv, name, 3, noResync, nil)
	ctx := faultCtx(t)
	if err := cs[0].TransactionalUpdate(ctx, map[string]int{"old1": 1, "old2": 2}); err != nil {
		t.Fatal(err)
	}
	if err := cs[1].UpdateContext(ctx, "old3", 3); err != nil {
		t.Fatal(err)
	}
	if err := cs[2].UpdateContext(ctx, "old1", 11); err != nil {
		t.Fatal(err)
	}
	oldState, oldRev := storeState[int](t, srv, name)
	waitConverged(t, oldState, oldRev, cs...)
	oldEpoch, err := metaField(ctx, srv, name, "epoch")
	if err != nil || oldEpoch == "" {
		t.Fatalf("epoch before the restart: %q, %v", oldEpoch, err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watches := make([]<-chan contextd.Change[int], len(cs))
	for i, c := range cs {
		watches[i] = c.Watch(watchCtx)
	}

	srv.Kill()
	srv.Restart(t)
	if n, err := srv.Do(ctx, "EXISTS", "{contextd:"+name+"}:meta"); err != nil || n != int64(0) {
		t.Fatalf("the restarted server still has the context: EXISTS = %v, %v", n, err)
	}

	// The first write after the restart. A pooled connection may still
	// be the dead one; contextd does not retry, so neither does this test
	// more than once.
	if err := cs[1].UpdateContext(ctx, "new", 42); err != nil {
		if err := cs[1].UpdateContext(ctx, "new", 42); err != nil {
			t.Fatalf("the first writes after the restart failed: %v", err)
		}
	}
	newEpoch, err := metaField(ctx, srv, name, "epoch")
	if err != nil || newEpoch == "" || newEpoch == oldEpoch {
		t.Fatalf("epoch after the restart = %q (%v), want a new one (old %q)", newEpoch, err, oldEpoch)
	}
	want, rev := storeState[int](t, srv, name)
	if !maps.Equal(want, map[string]int{"new": 42}) {
		t.Fatalf("store after the restart holds %v, want only the new key", want)
	}
	waitConverged(t, want, rev, cs...)
	for i, c := range cs {
		for _, k := range slices.Sorted(maps.Keys(oldState)) {
			if v, ok, err := c.Get(ctx, k); ok || err != nil {
				t.Errorf("instance %d still has %q = %d (%v) of the lost epoch", i, k, v, err)
			}
		}
	}
	for i, w := range watches {
		eventually(t, fmt.Sprintf("instance %d's watcher gets a Reset", i), func() error {
			for {
				select {
				case ch, ok := <-w:
					if !ok {
						return errors.New("watch channel closed without a Reset")
					}
					if ch.Reset {
						return nil
					}
				default:
					return errors.New("no Reset yet")
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 3. Stalled subscription.

// TestFaultStalledSubscription stalls every connection of one instance (a
// proxy that keeps connections open but forwards nothing) while another
// instance writes. The subscription's ping watchdog must notice the silence,
// replace the connection and, once the network flows again, report a loss,
// after which the instance converges. The periodic check is off, and the
// proxy delivers held bytes after Resume, so without the watchdog the
// instance would converge on the old connection but report no loss.
func TestFaultStalledSubscription(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	proxy := redistest.StartProxy(t, srv.Addr())
	const name = "fault-stall"
	ropts := &redis.Options{PingInterval: 200 * time.Millisecond, StallTimeout: 500 * time.Millisecond}
	stalled := openInstance[int](t, clientBackend(t, goredis.Options{Addr: proxy.Addr()}, ropts), name, noResync)
	direct := openInstance[int](t, newBackend(t, srv, ropts), name, noResync)
	ctx := faultCtx(t)

	if err := direct.UpdateContext(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	want, rev := storeState[int](t, srv, name)
	waitConverged(t, want, rev, stalled, direct)
	losses := stalled.Stats().Losses
	accepted := proxy.Accepted()

	proxy.Stall()
	stalledAt := time.Now()
	for j := range 20 {
		if err := direct.UpdateContext(ctx, fmt.Sprintf("k%d", j%5), j); err != nil {
			t.Fatal(err)
		}
	}
	if err := direct.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	// The watchdog, having pinged into the silence and waited StallTimeout
	// for an answer, closes the connection and dials a new one; nothing
	// else of this instance dials while it neither writes nor checks. The
	// new connection stalls too, until Resume.
	eventually(t, "the stalled subscription's watchdog dials a replacement connection", func() error {
		if n := proxy.Accepted(); n <= accepted {
			return fmt.Errorf("%d connections accepted, as before the stall", n)
		}
		return nil
	})
	t.Logf("the watchdog replaced the connection %v after the stall began", time.Since(stalledAt).Round(time.Millisecond))
	if got := stalled.Revision(); got != rev {
		t.Fatalf("the stalled instance moved from revision %d to %d while nothing reached it", rev, got)
	}

	proxy.Resume()
	want, rev = storeState[int](t, srv, name)
	waitConverged(t, want, rev, stalled, direct)
	if s := stalled.Stats(); s.Losses <= losses {
		t.Errorf("the stalled instance converged without reporting a loss (stats %+v)", s)
	}
}

// ---------------------------------------------------------------------------
// 4. Garbage values.

type item struct {
	N int `json:"n"`
}

// wantDecodeError checks that err matches ErrDecode and names every key.
func wantDecodeError(t *testing.T, what string, err error, keys ...string) {
	t.Helper()
	if !errors.Is(err, contextd.ErrDecode) {
		t.Errorf("%s: error %v, want one matching ErrDecode", what, err)
		return
	}
	for _, k := range keys {
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", k)) {
			t.Errorf("%s: error %q does not name key %q", what, err, k)
		}
	}
}

// checkGarbage checks what c reads when keys bad hold undecodable values
// and good holds decodable ones.
func checkGarbage(t *testing.T, who string, c *contextd.Context[item], good map[string]item, bad ...string) {
	t.Helper()
	ctx := context.Background()
	for _, k := range bad {
		v, ok, err := c.Get(ctx, k)
		if ok || v != (item{}) {
			t.Errorf("%s: Get(%q) = %v, %v; want nothing", who, k, v, ok)
		}
		wantDecodeError(t, fmt.Sprintf("%s: Get(%q)", who, k), err, k)
		_, _, err = c.Get(ctx, k, contextd.Fresh())
		wantDecodeError(t, fmt.Sprintf("%s: Get(%q, Fresh())", who, k), err, k)
	}
	for k, want := range good {
		if v, ok, err := c.Get(ctx, k); err != nil || !ok || v != want {
			t.Errorf("%s: Get(%q) = %v, %v, %v; want %v", who, k, v, ok, err, want)
		}
	}
	m, err := c.GetContext(ctx)
	if !maps.Equal(m, good) {
		t.Errorf("%s: GetContext = %v, want the decodable keys %v", who, m, good)
	}
	wantDecodeError(t, who+": GetContext", err, bad...)
}

// TestFaultGarbageValueInStore has another program write values that do not
// decode straight into the context's hash: a reader must fail for those
// keys only, with an error matching ErrDecode that names the key, and keep
// serving the others; a later good write repairs the key everywhere.
func TestFaultGarbageValueInStore(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "fault-garbage-store"
	ctx := faultCtx(t)
	running := openInstance[item](t, newBackend(t, srv, nil), name, noResync)
	good := map[string]item{"a": {1}, "b": {2}}
	if err := running.TransactionalUpdate(ctx, good); err != nil {
		t.Fatal(err)
	}

	// Another program commits as contextd would (the revision moves on),
	// but with bytes that are not JSON, and JSON of another type.
	tag := "{contextd:" + name + "}"
	rev, err := srv.Do(ctx, "HINCRBY", tag+":meta", "rev", "1")
	if err != nil {
		t.Fatal(err)
	}
	revStr := fmt.Sprint(rev)
	for _, args := range [][]string{
		{"HSET", tag + ":data", "bad", "\xff{not json", "wrongtype", `"a string"`},
		{"HSET", tag + ":revs", "bad", revStr, "wrongtype", revStr},
	} {
		if _, err := srv.Do(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}

	fresh := openInstance[item](t, newBackend(t, srv, nil), name, noResync)
	checkGarbage(t, "fresh instance", fresh, good, "bad", "wrongtype")
	if err := running.Sync(ctx); err != nil {
		t.Fatalf("Sync over undecodable values: %v", err)
	}
	checkGarbage(t, "synced instance", running, good, "bad", "wrongtype")

	// Modify cannot start from a value it cannot read; it writes nothing.
	_, err = running.Modify(ctx, "bad", func(cur item, _ bool) (item, error) { return item{cur.N + 1}, nil })
	wantDecodeError(t, "Modify of an undecodable value", err, "bad")
	if r, _ := metaField(ctx, srv, name, "rev"); r != revStr {
		t.Errorf("Modify of an undecodable value moved the revision to %s", r)
	}

	// A good write repairs the key on every instance.
	if err := running.UpdateContext(ctx, "bad", item{7}); err != nil {
		t.Fatal(err)
	}
	for who, c := range map[string]*contextd.Context[item]{"running": running, "fresh": fresh} {
		eventually(t, who+" reads the repaired key", func() error {
			v, ok, err := c.Get(ctx, "bad")
			if err != nil || !ok || v != (item{7}) {
				return fmt.Errorf("Get = %v, %v, %v", v, ok, err)
			}
			return nil
		})
	}
}

// TestFaultGarbageValueInEvent commits undecodable values through the
// backend directly, so that a running instance meets them on the event
// path: carried in the event, and fetched because the event omitted it.
// Those keys must fail to read with ErrDecode naming them, watchers get the
// change with Err set, and the other keys stay readable.
func TestFaultGarbageValueInEvent(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "fault-garbage-event"
	ctx := faultCtx(t)
	running := openInstance[item](t, newBackend(t, srv, nil), name, noResync)
	good := map[string]item{"a": {1}}
	if err := running.UpdateContext(ctx, "a", item{1}); err != nil {
		t.Fatal(err)
	}
	watch := running.Watch(ctx)

	raw := newBackend(t, srv, nil)
	channel := backend.DefaultChannel(name)
	carried := backend.Batch{Ops: []backend.Op{{Key: "bad2", Value: []byte("{nope")}}, Codec: "json", EventValueLimit: 1 << 16}
	if _, err := raw.CommitAndPublish(ctx, name, carried, channel); err != nil {
		t.Fatal(err)
	}
	omitted := backend.Batch{Ops: []backend.Op{{Key: "bad3", Value: []byte("[1,2")}}, Codec: "json", EventValueLimit: 0}
	h, err := raw.CommitAndPublish(ctx, name, omitted, channel)
	if err != nil {
		t.Fatal(err)
	}
	good["b"] = item{2}
	if err := running.UpdateContext(ctx, "b", item{2}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the instance applies the events", func() error {
		if r := running.Revision(); r < h.Revision+1 {
			return fmt.Errorf("at revision %d", r)
		}
		return nil
	})
	checkGarbage(t, "running instance", running, good, "bad2", "bad3")
	if s := running.Stats(); s.Snapshots != 1 || s.InvalidEvents != 0 {
		t.Errorf("undecodable values made the instance resync or count invalid events: %+v", s)
	}

	seen := map[string]bool{}
	eventually(t, "the watcher gets both undecodable changes with Err set", func() error {
		for {
			select {
			case ch := <-watch:
				if ch.Key == "bad2" || ch.Key == "bad3" {
					wantDecodeError(t, "Change.Err", ch.Err, ch.Key)
					seen[ch.Key] = true
				}
				continue
			default:
			}
			if !seen["bad2"] || !seen["bad3"] {
				return fmt.Errorf("seen %v", seen)
			}
			return nil
		}
	})
}

// ---------------------------------------------------------------------------
// 5. Invalid messages on the channel.

// TestFaultInvalidEventsIgnored publishes payloads that are not valid
// events on a context's channel: each instance must ignore them (state
// unchanged), count each in Stats().InvalidEvents, and still converge after
// further writes.
func TestFaultInvalidEventsIgnored(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "fault-invalid-events"
	ctx := faultCtx(t)
	cs := instances[int](t, srv, name, 2, noResync, nil)
	if err := cs[0].TransactionalUpdate(ctx, map[string]int{"a": 1, "b": 2}); err != nil {
		t.Fatal(err)
	}
	want, rev := storeState[int](t, srv, name)
	waitConverged(t, want, rev, cs...)

	epoch, err := metaField(ctx, srv, name, "epoch")
	if err != nil {
		t.Fatal(err)
	}
	valid, err := backend.EncodeEvent(backend.Event{
		Head:    backend.Head{Epoch: epoch, Revision: rev + 1},
		Origin:  "intruder",
		Changes: []backend.Change{{Key: "a", Value: []byte("100")}, {Key: "c", Deleted: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backend.DecodeEvent(valid); err != nil {
		t.Fatalf("the test's valid event does not decode: %v", err)
	}
	random := make([]byte, 64)
	for i := range random {
		random[i] = byte(i*151 + 7) // not version 1
	}
	version9 := slices.Clone(valid)
	version9[0] = 9
	kind7 := slices.Clone(valid)
	kind7[1] = 7
	payloads := []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"random bytes", random},
		{"valid prefix, truncated", valid[:len(valid)-2]},
		{"header only", valid[:3+len(epoch)+8]},
		{"version 9", version9},
		{"unknown kind", kind7},
		{"trailing bytes", append(slices.Clone(valid), 0)},
	}
	channel := backend.DefaultChannel(name)
	// storeState's instance has closed, but its backend unsubscribes in the
	// background: wait until only the instances under test listen, so that
	// PUBLISH's count below says each payload reached both of them.
	eventually(t, "only the instances under test subscribe", func() error {
		reply, err := srv.Do(ctx, "PUBSUB", "NUMSUB", channel)
		if err != nil {
			return err
		}
		if r, ok := reply.([]any); !ok || len(r) != 2 || r[1] != int64(len(cs)) {
			return fmt.Errorf("PUBSUB NUMSUB %s = %v, want %d", channel, reply, len(cs))
		}
		return nil
	})
	for _, p := range payloads {
		if _, err := backend.DecodeEvent(p.payload); !errors.Is(err, backend.ErrInvalidEvent) {
			t.Fatalf("payload %q decodes (%v); the test wants invalid ones", p.name, err)
		}
		n, err := srv.Do(ctx, "PUBLISH", channel, string(p.payload))
		if err != nil || n != int64(len(cs)) {
			t.Fatalf("PUBLISH %s reached %v subscribers (%v), want %d", p.name, n, err, len(cs))
		}
	}
	for i, c := range cs {
		eventually(t, fmt.Sprintf("instance %d counts every invalid event", i), func() error {
			if s := c.Stats(); s.InvalidEvents != uint64(len(payloads)) {
				return fmt.Errorf("stats %+v, want %d invalid events", s, len(payloads))
			}
			return nil
		})
	}
	waitConverged(t, want, rev, cs...)

	if err := cs[1].UpdateContext(ctx, "a", 10); err != nil {
		t.Fatal(err)
	}
	if err := cs[0].Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	want, rev = storeState[int](t, srv, name)
	if !maps.Equal(want, map[string]int{"a": 10}) {
		t.Fatalf("store holds %v", want)
	}
	waitConverged(t, want, rev, cs...)
}

// ---------------------------------------------------------------------------
// 6. Locks that expire mid-work.

// TestFaultLockExpiresMidWork lets a holder's lock expire while it works:
// another instance takes the lock and writes, and the first holder's late
// write WithLock must be refused with ErrLockLost, leaving the new holder's
// value. It runs with lock-aware commits (the store checks the lease in the
// commit) and without (the core renews the lease before writing), and both
// after the holder noticed the expiry (Lost closed) and before it could
// (the lease vanished in Redis while the holder's own timer still runs, as
// after a long pause of the holder's process).
func TestFaultLockExpiresMidWork(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	for _, cfg := range []struct {
		name string
		opts redis.Options
	}{
		{"lock-aware-commit", redis.Options{}},
		{"generic-commit", redis.Options{DisableLockAwareCommit: true}},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			t.Run("noticed", func(t *testing.T) {
				t.Parallel()
				testLockExpiry(t, srv, &cfg.opts, true)
			})
			t.Run("unnoticed", func(t *testing.T) {
				t.Parallel()
				testLockExpiry(t, srv, &cfg.opts, false)
			})
		})
	}
}

func testLockExpiry(t *testing.T, srv *redistest.Server, ropts *redis.Options, noticed bool) {
	name := "fault-lock-" + clientName(t)
	ctx := faultCtx(t)
	cs := instances[string](t, srv, name, 2, &contextd.Options{RetryDelay: 5 * time.Millisecond}, ropts)
	a, b := cs[0], cs[1]
	ttl := time.Minute
	if noticed {
		ttl = 200 * time.Millisecond
	}
	lockA, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateContext(ctx, "k", "a: started", contextd.WithLock(lockA)); err != nil {
		t.Fatalf("write under a live lock: %v", err)
	}

	if noticed {
		select {
		case <-lockA.Lost():
		case <-time.After(faultWait):
			t.Fatal("Lost() not closed after the lock's TTL")
		}
	} else {
		// The lease runs out in Redis, but not on the holder's clock.
		lockKey := "{contextd:" + name + "}:lock:k"
		if _, err := srv.Do(ctx, "PEXPIRE", lockKey, "1"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the lock expires in Redis", func() error {
			if n, err := srv.Do(ctx, "EXISTS", lockKey); err != nil || n != int64(0) {
				return fmt.Errorf("EXISTS = %v, %v", n, err)
			}
			return nil
		})
		select {
		case <-lockA.Lost():
			t.Fatal("Lost() closed before the holder could know")
		default:
		}
	}

	// A few retries: Redis counts a TTL in whole milliseconds, so it may
	// hold the key up to a millisecond past the moment the holder's timer
	// closed Lost (the safe side).
	lockB, err := b.AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: time.Minute, RetryDelay: 5 * time.Millisecond, MaxRetries: 20})
	if err != nil {
		t.Fatalf("AcquireLock after the first holder's lease ran out: %v", err)
	}
	if lockB.Token() <= lockA.Token() {
		t.Errorf("fencing token %d after %d, want a larger one", lockB.Token(), lockA.Token())
	}
	if err := b.UpdateContext(ctx, "k", "b", contextd.WithLock(lockB)); err != nil {
		t.Fatalf("write by the new holder: %v", err)
	}

	err = a.UpdateContext(ctx, "k", "a: late", contextd.WithLock(lockA))
	if !errors.Is(err, contextd.ErrLockLost) {
		t.Fatalf("late write of the old holder = %v, want ErrLockLost", err)
	}
	select {
	case <-lockA.Lost():
	default:
		t.Error("Lost() still open after a write was refused for the lost lock")
	}
	err = a.TransactionalUpdate(ctx, map[string]string{"k": "a: late txn", "other": "x"}, contextd.WithLock(lockA))
	if !errors.Is(err, contextd.ErrLockLost) {
		t.Errorf("late transactional update of the old holder = %v, want ErrLockLost", err)
	}
	_, err = a.Modify(ctx, "k", func(cur string, _ bool) (string, error) { return cur + " + a", nil }, contextd.WithLock(lockA))
	if !errors.Is(err, contextd.ErrLockLost) {
		t.Errorf("late Modify of the old holder = %v, want ErrLockLost", err)
	}
	// Without the lock, the old holder waits for the new one and gives up.
	err = a.UpdateContext(ctx, "k", "a: unlocked")
	if !errors.Is(err, contextd.ErrLockNotAcquired) {
		t.Errorf("write of the old holder without a lock = %v, want ErrLockNotAcquired while b holds it", err)
	}

	if v, _, err := a.Get(ctx, "k", contextd.Fresh()); err != nil || v != "b" {
		t.Fatalf("store holds %q (%v), want the new holder's value", v, err)
	}
	want, rev := storeState[string](t, srv, name)
	if !maps.Equal(want, map[string]string{"k": "b"}) {
		t.Errorf("store holds %v, want only the new holder's write", want)
	}
	waitConverged(t, want, rev, a, b)
	if err := lockA.Extend(ctx, 0); !errors.Is(err, contextd.ErrLockLost) {
		t.Errorf("Extend of the lost lock = %v, want ErrLockLost", err)
	}
	if err := lockA.Release(ctx); !errors.Is(err, contextd.ErrLockLost) {
		t.Errorf("Release of the lost lock = %v, want ErrLockLost", err)
	}
	if err := lockB.Release(ctx); err != nil {
		t.Errorf("Release by the new holder: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Lost replies.

// TestFaultLostCommitReplyAppliedOnce lets a Modify's commit run in Redis
// and then breaks the connection before the reply arrives (a proxy holds
// the reply back, then closes the connection). Whatever Modify returns,
// the increment may be applied at most once, and exactly once if Modify
// reports success. The Backend is made by redis.Open.
//
// Regression: go-redis used to retry a command whose connection broke
// (MaxRetries, 3 by default), running the commit script again; the retry
// failed its condition, Modify took that for another writer's conflict and
// incremented again. Open now turns retries off, and the script recognises
// an immediate resend of the same commit.
func TestFaultLostCommitReplyAppliedOnce(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	proxy := redistest.StartProxy(t, srv.Addr())
	const name = "fault-lost-reply"
	ctx := faultCtx(t)
	c := openInstance[int](t, openedBackend(t, proxy, redis.Options{}), name, noResync)
	inc := func(cur int, _ bool) (int, error) { return cur + 1, nil }
	if _, err := c.Modify(ctx, counterKey, inc); err != nil {
		t.Fatal(err)
	}

	proxy.StallReplies()
	res := make(chan error, 1)
	go func() {
		_, err := c.Modify(ctx, counterKey, inc)
		res <- err
	}()
	eventually(t, "the commit has run in Redis", func() error {
		if r, err := metaField(ctx, srv, name, "rev"); err != nil || r != "2" {
			return fmt.Errorf("revision %q, %v", r, err)
		}
		return nil
	})
	proxy.Break() // the reply is lost with the connection
	proxy.Resume()
	var err error
	select {
	case err = <-res:
	case <-time.After(faultWait):
		t.Fatal("Modify did not return after its connection broke")
	}

	v, derr := srv.Do(ctx, "HGET", "{contextd:"+name+"}:data", counterKey)
	if derr != nil {
		t.Fatal(derr)
	}
	got, _ := v.(string)
	switch {
	case err == nil && got != "2":
		t.Errorf("Modify acknowledged one increment of 1, but the counter is %s: the commit ran again after its reply was lost", got)
	case err != nil && got != "1" && got != "2":
		t.Errorf("Modify failed (%v), but the counter went from 1 to %s", err, got)
	default:
		t.Logf("Modify returned %v; counter %s", err, got)
	}
}

// TestFaultStalledServerHonoursDeadline stalls every connection of an
// instance whose Backend is made by redis.Open (the server takes commands
// and never answers): each call must give up when its ctx's deadline
// passes, not when the client's read timeout does.
//
// Regression: Open and OpenURL used to leave go-redis's
// ContextTimeoutEnabled off, so every call blocked for the whole
// ReadTimeout whatever its ctx said; and a socket timeout caused by the
// ctx deadline must match context.DeadlineExceeded.
func TestFaultStalledServerHonoursDeadline(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	proxy := redistest.StartProxy(t, srv.Addr())
	const name = "fault-stall-deadline"
	ropts := redis.Options{ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	c := openInstance[int](t, openedBackend(t, proxy, ropts), name, noResync)
	if err := c.UpdateContext(faultCtx(t), "a", 1); err != nil {
		t.Fatal(err)
	}

	proxy.Stall()
	defer proxy.Resume()
	const deadline, slack = 300 * time.Millisecond, 700 * time.Millisecond
	probes := []probe{
		{"UpdateContext", func(ctx context.Context) error { return c.UpdateContext(ctx, "a", 2) }},
		{"Modify", func(ctx context.Context) error {
			_, err := c.Modify(ctx, "a", func(cur int, _ bool) (int, error) { return cur + 1, nil })
			return err
		}},
		{"Get with Fresh", func(ctx context.Context) error {
			_, _, err := c.Get(ctx, "a", contextd.Fresh())
			return err
		}},
		{"Sync", c.Sync},
		{"AcquireLock", func(ctx context.Context) error {
			_, err := c.AcquireLock(ctx, contextd.LockOptions{Key: "a", MaxRetries: -1})
			return err
		}},
	}
	errs, took := runProbes(probes, deadline)
	for i, p := range probes {
		if !errors.Is(errs[i], context.DeadlineExceeded) || took[i] > deadline+slack {
			t.Errorf("%s with a %v deadline on a stalled server returned after %v: %v", p.name, deadline, took[i].Round(time.Millisecond), errs[i])
		}
	}
}

// TestFaultRestartWithoutPersistenceFencingTokens restarts a redis-server
// that keeps no data while an instance holds a lock: a lock taken after
// the restart must get a larger fencing token than every lock taken
// before, as Lock.Token promises, or a system that fences by token would
// refuse the new holder and accept the superseded one.
//
// Regression: the fencing counter lives in the context's meta hash, which
// is lost with the data, and used to start again at 1; a missing counter
// now starts from the server's clock in microseconds.
func TestFaultRestartWithoutPersistenceFencingTokens(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "fault-restart-fence"
	ctx := faultCtx(t)
	cs := instances[string](t, srv, name, 2, noResync, nil)
	var old *contextd.Lock
	for range 3 {
		if old != nil {
			if err := old.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		l, err := cs[0].AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: time.Minute, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		if err := cs[0].UpdateContext(ctx, "k", "old holder", contextd.WithLock(l)); err != nil {
			t.Fatal(err)
		}
		old = l
	}

	srv.Kill()
	srv.Restart(t)
	var l *contextd.Lock
	eventually(t, "the lock can be taken after the restart", func() error {
		var err error
		l, err = cs[1].AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: time.Minute, MaxRetries: -1})
		return err
	})
	if err := cs[0].UpdateContext(ctx, "k", "superseded holder", contextd.WithLock(old)); !errors.Is(err, contextd.ErrLockLost) {
		t.Errorf("write of the holder whose lock was lost with the data = %v, want ErrLockLost", err)
	}
	if l.Token() <= old.Token() {
		t.Errorf("fencing token %d after the restart is not above %d, issued before it", l.Token(), old.Token())
	}
}

// TestFaultGarbageLogEntry has another program commit as contextd would
// (revision, value and change-log entry) but with a log entry that does not
// decode. The instances, which see a revision gap at the next event and
// catch up from the log, must not stay stuck on it: a snapshot can always
// tell them the store's state.
//
// Regression: ChangesSince used to return a log entry's decode error as a
// plain error, so catchUp never fell back to a snapshot and the instances
// stayed behind for good.
func TestFaultGarbageLogEntry(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "fault-garbage-log"
	ctx := faultCtx(t)
	// The periodic check is on, and frequent: even it must not help.
	cs := instances[int](t, srv, name, 2, &contextd.Options{ResyncInterval: 50 * time.Millisecond}, nil)
	if err := cs[0].UpdateContext(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	tag := "{contextd:" + name + "}"
	// One atomic step, as a commit is: done piecemeal, a snapshot taken
	// between the new revision and the new key (the periodic check runs
	// every 50 ms) would rightly show the revision without the key, and
	// the instance would never look again (failed 1 in 150).
	const forge = `local r = redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('HSET', KEYS[2], 'x', '5')
redis.call('HSET', KEYS[3], 'x', tostring(r))
redis.call('HSET', KEYS[4], tostring(r % tonumber(ARGV[1])), 'not an event')
return r`
	if _, err := srv.Do(ctx, "EVAL", forge, "4", tag+":meta", tag+":data", tag+":revs", tag+":ring", fmt.Sprint(redis.DefaultChangeLogLength)); err != nil {
		t.Fatal(err)
	}
	if err := cs[1].UpdateContext(ctx, "a", 2); err != nil {
		t.Fatal(err)
	}
	want, head := storeState[int](t, srv, name)
	if !maps.Equal(want, map[string]int{"a": 2, "x": 5}) {
		t.Fatalf("store holds %v", want)
	}
	waitConvergedWithin(t, bugWait, want, head, cs...)
}

// TestFaultForgedFutureEvent publishes a well-formed event of the context's
// epoch with a revision far ahead of the store's. An instance may catch up
// once, finding nothing missing; after that it must be back to normal: no
// lag reported, and events applied one by one, not a snapshot per event.
//
// Regression: cache.classify used to record a gap's revision in lastEvent
// and known before the catch-up checked it, so one forged revision made
// Lag() wrong for good and every later genuine event cost a snapshot.
func TestFaultForgedFutureEvent(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "fault-forged-event"
	ctx := faultCtx(t)
	cs := instances[int](t, srv, name, 2, noResync, nil)
	if err := cs[0].UpdateContext(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	want, rev := storeState[int](t, srv, name)
	waitConverged(t, want, rev, cs...)
	epoch, err := metaField(ctx, srv, name, "epoch")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := backend.EncodeEvent(backend.Event{
		Head:    backend.Head{Epoch: epoch, Revision: rev + 1<<40},
		Origin:  "forger",
		Changes: []backend.Change{{Key: "a", Value: []byte("666")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Do(ctx, "PUBLISH", backend.DefaultChannel(name), string(forged)); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		eventually(t, fmt.Sprintf("instance %d has handled the forged event", i), func() error {
			if s := c.Stats(); s.Gaps == 0 {
				return fmt.Errorf("stats %+v", s)
			}
			return nil
		})
	}
	for j := range 10 {
		if err := cs[j%2].UpdateContext(ctx, "a", j); err != nil {
			t.Fatal(err)
		}
	}
	want, rev = storeState[int](t, srv, name)
	waitConverged(t, want, rev, cs...)
	for i, c := range cs {
		if lag := c.Lag(); lag != 0 {
			t.Errorf("instance %d is current (revision %d) but reports a lag of %d", i, c.Revision(), lag)
		}
		if s := c.Stats(); s.Snapshots > 2 {
			t.Errorf("instance %d loaded %d snapshots for 10 ordinary writes after one forged event (stats %+v)", i, s.Snapshots, s)
		}
	}
}

// appBackend returns a Backend whose client logs in as the ACL user "app"
// (password "secret"), through p if p is not nil.
func appBackend(t *testing.T, srv *redistest.Server, p *redistest.Proxy) *redis.Backend {
	t.Helper()
	addr := srv.Addr()
	if p != nil {
		addr = p.Addr()
	}
	return clientBackend(t, goredis.Options{Addr: addr, Username: "app", Password: "secret", ClientName: clientName(t) + "-app"}, nil)
}

// aclDenied reports whether Redis's ACL LOG holds a command of user that
// was refused, one of commands.
func aclDenied(ctx context.Context, srv *redistest.Server, user string, commands ...string) bool {
	v, err := srv.Do(ctx, "ACL", "LOG")
	if err != nil {
		return false
	}
	entries, _ := v.([]any)
	for _, e := range entries {
		fields, _ := e.([]any)
		m := make(map[string]any, len(fields)/2)
		for i := 0; i+1 < len(fields); i += 2 {
			if k, ok := fields[i].(string); ok {
				m[k] = fields[i+1]
			}
		}
		if m["username"] == user && m["reason"] == "command" && slices.Contains(commands, fmt.Sprint(m["object"])) {
			return true
		}
	}
	return false
}

var appUser = &redistest.Options{Users: []redistest.User{{Name: "app", Password: "secret"}}}

// setApp changes the ACL rules of the user "app".
func setApp(ctx context.Context, t *testing.T, srv *redistest.Server, rules ...string) {
	t.Helper()
	if _, err := srv.Do(ctx, append([]string{"ACL", "SETUSER", "app"}, rules...)...); err != nil {
		t.Fatalf("ACL SETUSER app %v: %v", rules, err)
	}
}

// TestFaultFailedCatchUpRetried makes the catch-up that follows a reported
// loss fail, then lets the store answer again, with no further writes. The
// instance knows it is behind (its subscription said so), so it must try
// again by itself and converge, even with the periodic check off.
//
// The instance is cut off by a proxy while another writes, and its user
// may not run scripts when it comes back: this reproduces deterministically
// what a restart does by chance (see TestFaultRestartWithPersistence), the
// subscription reconnecting while the client's commands still fail.
//
// Regression: a failed catch-up used to be retried only by the periodic
// check, so with Options.ResyncInterval < 0 nothing retried it, and with
// the default the instance stayed behind for up to 5 s. Failed catch-ups
// are now retried with backoff either way (check-on is the control).
func TestFaultFailedCatchUpRetried(t *testing.T) {
	t.Parallel()
	t.Run("check-off", func(t *testing.T) {
		t.Parallel()
		testFailedCatchUp(t, noResync)
	})
	// The control: the same fault heals when the periodic check is on.
	t.Run("check-on", func(t *testing.T) {
		t.Parallel()
		testFailedCatchUp(t, &contextd.Options{ResyncInterval: 100 * time.Millisecond})
	})
}

func testFailedCatchUp(t *testing.T, opts *contextd.Options) {
	srv := redistest.Start(t, appUser)
	proxy := redistest.StartProxy(t, srv.Addr())
	const name = "fault-catchup-retry"
	ctx := faultCtx(t)
	a := openInstance[int](t, appBackend(t, srv, proxy), name, opts)
	b := openInstance[int](t, newBackend(t, srv, nil), name, noResync)
	if err := b.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	want, rev := storeState[int](t, srv, name)
	waitConverged(t, want, rev, a, b)

	// Cut a off: its connections break, and new ones carry nothing.
	proxy.Stall()
	proxy.Break()
	if err := b.UpdateContext(ctx, "k", 2); err != nil { // a misses it
		t.Fatal(err)
	}
	setApp(ctx, t, srv, "-@scripting")
	if _, err := srv.Do(ctx, "ACL", "LOG", "RESET"); err != nil {
		t.Fatal(err)
	}
	proxy.Resume()
	eventually(t, "a reports the loss once it has resubscribed", func() error {
		if s := a.Stats(); s.Losses == 0 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	// The catch-up that loss triggered could run no script, so failed;
	// once Redis has refused it, the store answers again.
	eventually(t, "the catch-up's script is refused", func() error {
		if !aclDenied(ctx, srv, "app", "evalsha", "eval") {
			return errors.New("no script refused yet")
		}
		return nil
	})
	setApp(ctx, t, srv, "+@all")
	want, rev = storeState[int](t, srv, name)
	waitConvergedWithin(t, bugWait, want, rev, a)
}

// TestFaultRefusedResubscribeRecovers takes the channel permission from an
// instance's user, which disconnects its subscription and makes Redis
// refuse the resubscription (NOPERM), then gives it back. The subscription
// must keep trying, and report the loss, so that the instance converges.
//
// Regression: when the SUBSCRIBE that go-redis sends on its new connection
// was refused, subscription.Next took the error reply for a broken
// connection and backed off, and the subscription stayed unsubscribed for
// good. It now starts over on a new connection.
func TestFaultRefusedResubscribeRecovers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, appUser)
	const name = "fault-resubscribe-refused"
	ctx := faultCtx(t)
	a := openInstance[int](t, appBackend(t, srv, nil), name, noResync)
	b := openInstance[int](t, newBackend(t, srv, nil), name, noResync)
	if err := b.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	want, rev := storeState[int](t, srv, name)
	waitConverged(t, want, rev, a, b)

	setApp(ctx, t, srv, "resetchannels")
	eventually(t, "a's resubscription is refused", func() error {
		v, err := srv.Do(ctx, "CLIENT", "LIST", "TYPE", "normal")
		if err != nil {
			return err
		}
		list, _ := v.(string)
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " name="+clientName(t)+"-app ") && strings.Contains(line, " cmd=subscribe ") {
				return nil
			}
		}
		return errors.New("no refused SUBSCRIBE yet")
	})
	setApp(ctx, t, srv, "allchannels")
	if err := b.UpdateContext(ctx, "k", 2); err != nil {
		t.Fatal(err)
	}
	want, rev = storeState[int](t, srv, name)
	waitConvergedWithin(t, bugWait, want, rev, a)
	if s := a.Stats(); s.Losses == 0 {
		t.Errorf("the instance converged without a loss reported (stats %+v)", s)
	}
}
