package postgres_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/pgtest"
)

// convergeTimeout bounds the wait for instances to catch up after a fault;
// catching up normally takes milliseconds.
const convergeTimeout = 30 * time.Second

// workload runs writers on several instances until stopped, each writing
// its own key with increasing numbers (UpdateContext) and incrementing a
// shared counter (Modify), retrying failed writes. It records what was
// acknowledged, to check against the store afterwards.
type workload struct {
	cs     []*contextd.Context[int]
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	acked  []atomic.Int64 // per writer: the last number acknowledged
	incs   atomic.Int64   // increments acknowledged
	tried  atomic.Int64   // increments attempted, acknowledged or not
	errs   atomic.Int64   // failed writes (expected during a fault)
	rounds atomic.Int64   // writes acknowledged, all writers
}

func startWorkload(t *testing.T, cs []*contextd.Context[int]) *workload {
	t.Helper()
	w := &workload{cs: cs, stop: make(chan struct{}), acked: make([]atomic.Int64, len(cs))}
	for i, c := range cs {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			key := fmt.Sprint("w", i)
			for n := int64(1); ; {
				select {
				case <-w.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := c.UpdateContext(ctx, key, int(n))
				if err == nil {
					w.acked[i].Store(n)
					w.rounds.Add(1)
					n++
					w.tried.Add(1)
					_, err = c.Modify(ctx, "counter", func(cur int, _ bool) (int, error) { return cur + 1, nil })
					if err == nil {
						w.incs.Add(1)
						w.rounds.Add(1)
					}
				}
				cancel()
				if err != nil {
					w.errs.Add(1)
					// The server may be down: do not spin.
					select {
					case <-w.stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		}()
	}
	return w
}

// awaitProgress waits until n more writes have been acknowledged.
func (w *workload) awaitProgress(t *testing.T, n int64, what string) {
	t.Helper()
	target := w.rounds.Load() + n
	deadline := time.Now().Add(convergeTimeout)
	for w.rounds.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("%s: only %d of %d more writes acknowledged within %v (%d errors)", what, w.rounds.Load()-target+n, n, convergeTimeout, w.errs.Load())
		}
		time.Sleep(5 * time.Millisecond) // polling a counter, with a deadline
	}
}

// finish stops the writers and waits for them; it is idempotent.
func (w *workload) finish() {
	w.once.Do(func() { close(w.stop) })
	w.wg.Wait()
}

// check verifies that the store holds every acknowledged write and that
// every instance converges to the store's state.
func (w *workload) check(t *testing.T, db testDB, name string) {
	t.Helper()
	fresh := openInstances[int](t, db, name, 1, nil)[0]
	want, err := fresh.GetContext(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range w.cs {
		key := fmt.Sprint("w", i)
		if got, acked := int64(want[key]), w.acked[i].Load(); got < acked {
			t.Errorf("store has %s = %d, but %d was acknowledged: an acknowledged write was lost", key, got, acked)
		}
	}
	if got := int64(want["counter"]); got < w.incs.Load() || got > w.tried.Load() {
		t.Errorf("store has counter = %d; %d increments were acknowledged and %d attempted", got, w.incs.Load(), w.tried.Load())
	}
	rev := fresh.Revision()
	deadline := time.Now().Add(convergeTimeout)
	for i, c := range w.cs {
		for {
			got, err := c.GetContext(context.Background())
			if err == nil && c.Revision() >= rev && maps.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("instance %d did not converge within %v: revision %d (store %d), %v, err %v; store has %v (stats %+v)",
					i, convergeTimeout, c.Revision(), rev, got, err, want, c.Stats())
			}
			time.Sleep(5 * time.Millisecond) // polling convergence, with a deadline
		}
	}
}

// openInstances opens n initialized Contexts of context name, each on a
// Backend of its own; they are closed when the test ends.
func openInstances[T any](t *testing.T, db testDB, name string, n int, opts *contextd.Options) []*contextd.Context[T] {
	t.Helper()
	var cs []*contextd.Context[T]
	for range n {
		c, err := contextd.New[T](newBackend(t, db, nil), name, opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), convergeTimeout)
		err = c.Initialize(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cs = append(cs, c)
	}
	return cs
}

// TestServerRestart restarts the server under a write load (a fast
// shutdown, then a crash): the listeners reconnect, every acknowledged
// write is still in the store, and every instance converges.
func TestServerRestart(t *testing.T) {
	cluster := pgtest.Start(t)
	db := dbOn(t, cluster)
	// No periodic resync: convergence must come from the loss signals.
	cs := openInstances[int](t, db, "restart", 3, &contextd.Options{ResyncInterval: -1})
	w := startWorkload(t, cs)
	defer w.finish()
	w.awaitProgress(t, 30, "before the restart")

	cluster.Stop()
	cluster.Restart(t)
	w.awaitProgress(t, 30, "after a restart")

	cluster.Crash()
	cluster.Restart(t)
	w.awaitProgress(t, 30, "after a crash and restart")

	w.finish()
	if w.errs.Load() == 0 {
		t.Error("no write failed while the server was down: the fault did not happen")
	}
	w.check(t, db, "restart")
	for i, c := range cs {
		if c.Stats().Losses == 0 {
			t.Errorf("instance %d saw no loss signal across two restarts", i)
		}
	}
}

// TestKilledConnections terminates the listening connections (and then the
// pool's connections) of every instance under a write load: each
// subscription reports the loss, resubscribes, and its instance converges.
func TestKilledConnections(t *testing.T) {
	db := newDB(t)
	cs := openInstances[int](t, db, "killed", 3, &contextd.Options{ResyncInterval: -1})
	w := startWorkload(t, cs)
	defer w.finish()
	w.awaitProgress(t, 30, "before the kills")
	ctx := context.Background()

	n, err := db.cluster.TerminateConnections(ctx, db.name, listenerApp)
	if err != nil || n != len(cs) {
		t.Fatalf("terminating the listeners: ended %d, %v; want %d (one per Backend)", n, err, len(cs))
	}
	w.awaitProgress(t, 30, "after the listeners were killed")

	// The pools' connections: commits in flight fail, the pools dial
	// again.
	if n, err := db.cluster.TerminateConnections(ctx, db.name, ""); err != nil || n == 0 {
		t.Fatalf("terminating every connection: ended %d, %v", n, err)
	}
	w.awaitProgress(t, 30, "after every connection was killed")

	w.finish()
	w.check(t, db, "killed")
	for i, c := range cs {
		if c.Stats().Losses == 0 {
			t.Errorf("instance %d saw no loss signal after its listener was killed", i)
		}
	}
}

// TestListenerSharedAndRestored checks that one Backend uses one listening
// connection for all its subscriptions and contexts, that a killed
// listener is reported to every subscription (Interrupted, then Loss), and
// that they all receive again afterwards.
func TestListenerSharedAndRestored(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	b := newBackend(t, db, nil)
	pub := newBackend(t, db, nil)
	channels := []string{"one", "two", "three"}
	type subscriptionT struct {
		ch string
		s  broadcaster.Subscription
	}
	subscriptions := make(map[string]subscriptionT, len(channels))
	for _, ch := range channels {
		for range 2 {
			s, err := b.Subscribe(ctx, ch)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			subscriptions[fmt.Sprint(ch, len(subscriptions))] = subscriptionT{ch: ch, s: s}
		}
	}
	if n, err := db.cluster.CountConnections(ctx, db.name, listenerApp); err != nil || n != 1 {
		t.Fatalf("%d listening connections for 6 subscriptions of one Backend (%v), want 1", n, err)
	}
	if n, err := db.cluster.TerminateConnections(ctx, db.name, listenerApp); err != nil || n != 1 {
		t.Fatalf("terminating the listener: %d, %v", n, err)
	}
	for name, st := range subscriptions {
		m, err := nextMsg(ctx, st.s)
		if err != nil || !m.Interrupted {
			t.Fatalf("%s: first message after the listener was killed: %+v, %v; want Interrupted", name, m, err)
		}
		m, err = nextMsg(ctx, st.s)
		if err != nil || !m.Loss {
			t.Fatalf("%s: second message after the listener was killed: %+v, %v; want Loss", name, m, err)
		}
	}
	for _, ch := range channels {
		if err := pub.Publish(ctx, ch, []byte("after "+ch)); err != nil {
			t.Fatal(err)
		}
	}
	for name, st := range subscriptions {
		m, err := nextMsg(ctx, st.s)
		if err != nil || string(m.Payload) != "after "+st.ch {
			t.Fatalf("%s: after the loss got %+v, %v; want %q", name, m, err, "after "+st.ch)
		}
	}
}

// nextMsg returns the next message of s, waiting at most convergeTimeout.
func nextMsg(ctx context.Context, s broadcaster.Subscription) (broadcaster.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, convergeTimeout)
	defer cancel()
	return s.Next(ctx)
}
