package conformance

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/contextd"
)

// testContext runs multi-instance scenarios of contextd.Context over the
// harness's backends, each instance on its own backend as a separate
// process would be.
func testContext(t *testing.T, h Harness) {
	t.Run("Converge", func(t *testing.T) { t.Parallel(); testConverge(t, h) })
	t.Run("UpdateSeenByOthers", func(t *testing.T) { t.Parallel(); testUpdateSeen(t, h) })
	t.Run("TransactionalUpdateIsAtomic", func(t *testing.T) { t.Parallel(); testNoHalfTransaction(t, h) })
	t.Run("ModifyLosesNoIncrement", func(t *testing.T) { t.Parallel(); testModifyCounter(t, h) })
	t.Run("ModifyCombinesConcurrentCalls", func(t *testing.T) { t.Parallel(); testModifyCombines(t, h) })
	t.Run("HeldLockBlocksUpdate", func(t *testing.T) { t.Parallel(); testLockBlocks(t, h) })
	t.Run("ExpiredLockFreesKey", func(t *testing.T) { t.Parallel(); testLockExpiry(t, h) })
	t.Run("LostLockWriteRefused", func(t *testing.T) { t.Parallel(); testLostLockRefused(t, h) })
	t.Run("WatchInRevisionOrder", func(t *testing.T) { t.Parallel(); testWatchOrder(t, h) })
}

// waitTimeout bounds every wait for propagation; propagation normally takes
// microseconds, so hitting it means a lost change.
const waitTimeout = 15 * time.Second

// instances opens n initialized Contexts of one context, each on a backend
// of its own; they are closed when the test ends.
func instances[T any](t *testing.T, h Harness, name string, n int, opts *contextd.Options) []*contextd.Context[T] {
	t.Helper()
	out := make([]*contextd.Context[T], n)
	for i := range out {
		c, err := contextd.New[T](h.NewBackend(t), name, opts)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		err = c.Initialize(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Initialize instance %d: %v", i, err)
		}
		t.Cleanup(func() {
			if err := c.Close(); err != nil {
				t.Errorf("Close instance %d: %v", i, err)
			}
		})
		out[i] = c
	}
	return out
}

// waitRevision waits until every instance has applied revision rev.
func waitRevision[T any](t *testing.T, rev uint64, cs ...*contextd.Context[T]) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for i, c := range cs {
		for c.Revision() < rev {
			if time.Now().After(deadline) {
				t.Fatalf("instance %d stuck at revision %d, want %d (stats %+v)", i, c.Revision(), rev, c.Stats())
			}
			time.Sleep(time.Millisecond) // polling a condition, with a deadline
		}
	}
}

// storeState reads the context's state straight from the store.
func storeState[T any](t *testing.T, h Harness, name string) (map[string]T, uint64) {
	t.Helper()
	c := instances[T](t, h, name, 1, nil)[0]
	m, err := c.GetContext(context.Background())
	if err != nil {
		t.Fatalf("GetContext of a fresh instance: %v", err)
	}
	return m, c.Revision()
}

func testConverge(t *testing.T, h Harness) {
	name := uniqueName(t)
	cs := instances[int](t, h, name, 3, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				key := fmt.Sprintf("k%d", j%7)
				var err error
				switch j % 4 {
				case 0, 1:
					err = c.UpdateContext(ctx, key, i*100+j)
				case 2:
					err = c.TransactionalUpdate(ctx, map[string]int{key: j, fmt.Sprintf("t%d", i): j})
				case 3:
					err = c.Delete(ctx, key)
				}
				if err != nil {
					t.Errorf("instance %d write %d: %v", i, j, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want, rev := storeState[int](t, h, name)
	waitRevision(t, rev, cs...)
	for i, c := range cs {
		got, err := c.GetContext(ctx)
		if err != nil {
			t.Fatalf("instance %d GetContext: %v", i, err)
		}
		if !maps.Equal(got, want) {
			t.Errorf("instance %d converged to %v, store has %v", i, got, want)
		}
	}
}

type user struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

func testUpdateSeen(t *testing.T, h Harness) {
	name := uniqueName(t)
	cs := instances[user](t, h, name, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	w1, w2 := cs[1].Watch(ctx), cs[2].Watch(ctx)
	want := user{Name: "John Doe", Email: "john@example.com"}
	if err := cs[0].UpdateContext(ctx, "user", want); err != nil {
		t.Fatalf("UpdateContext: %v", err)
	}
	for i, w := range []<-chan contextd.Change[user]{w1, w2} {
		select {
		case ch := <-w:
			if ch.Key != "user" || ch.Value != want || ch.Origin != cs[0].ID() {
				t.Errorf("instance %d saw %+v, want key user = %+v from %s", i+1, ch, want, cs[0].ID())
			}
		case <-ctx.Done():
			t.Fatalf("instance %d never saw the update", i+1)
		}
		got, ok, err := cs[i+1].Get(ctx, "user")
		if err != nil || !ok || got != want {
			t.Errorf("instance %d Get = %+v, %v, %v after the change arrived; want %+v", i+1, got, ok, err, want)
		}
	}
}

func testNoHalfTransaction(t *testing.T, h Harness) {
	name := uniqueName(t)
	cs := instances[int](t, h, name, 3, nil)
	ctx := context.Background()
	const rounds = 100
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range cs[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := c.GetContext(ctx)
				if err != nil {
					t.Errorf("reader %d: %v", i, err)
					return
				}
				if m["a"] != m["b"] || m["b"] != m["c"] {
					t.Errorf("reader %d saw half a transaction: %v", i, m)
					return
				}
				select {
				case <-done:
					return
				default:
				}
			}
		}()
	}
	for j := 1; j <= rounds; j++ {
		if err := cs[0].TransactionalUpdate(ctx, map[string]int{"a": j, "b": j, "c": j}); err != nil {
			t.Fatalf("TransactionalUpdate %d: %v", j, err)
		}
	}
	waitRevision(t, rounds, cs...)
	close(done)
	wg.Wait()
	for i, c := range cs {
		m, _ := c.GetContext(ctx)
		if m["a"] != rounds {
			t.Errorf("instance %d ended with %v, want every key %d", i, m, rounds)
		}
	}
}

// testModifyCounter has 24 goroutines on three instances increment one
// counter with Modify. Every acknowledged increment must be in the final
// count and no refused one (ErrLockNotAcquired: it gave up waiting) may
// be. Where the backend serves lock waiters in turn (FairLocks with
// ReleaseNotify), no increment may be refused: each waits only for the 23
// queued before it at most, and the wait budget (a minute) is far above
// that even on a machine so loaded that each increment takes a second.
// Elsewhere waiters poll with jittered pauses and one can lose to the
// others every time, so refusals are counted, not failed.
func testModifyCounter(t *testing.T, h Harness) {
	name := uniqueName(t)
	cs := instances[int](t, h, name, 3, &contextd.Options{RetryDelay: 100 * time.Millisecond, MaxRetries: 600})
	ctx := context.Background()
	const goroutines, increments = 8, 25
	var acked, refused atomic.Int64
	var longest atomic.Int64
	var wg sync.WaitGroup
	for i, c := range cs {
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range increments {
					start := time.Now()
					_, err := c.Modify(ctx, "counter", func(cur int, _ bool) (int, error) { return cur + 1, nil })
					took := int64(time.Since(start))
					for old := longest.Load(); took > old && !longest.CompareAndSwap(old, took); old = longest.Load() {
					}
					switch {
					case err == nil:
						acked.Add(1)
					case errors.Is(err, contextd.ErrLockNotAcquired):
						refused.Add(1)
					default:
						t.Errorf("instance %d goroutine %d: Modify: %v", i, g, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("%d increments acknowledged, %d refused; longest Modify %v", acked.Load(), refused.Load(), time.Duration(longest.Load()))
	got, _, err := cs[0].Get(ctx, "counter", contextd.Fresh())
	if err != nil || int64(got) != acked.Load() {
		t.Fatalf("counter = %d (%v) after %d acknowledged and %d refused increments: increments were lost or refused ones counted", got, err, acked.Load(), refused.Load())
	}
	if fair := h.Capabilities.FairLocks && h.Capabilities.ReleaseNotify; fair && refused.Load() > 0 {
		t.Errorf("%d increments gave up waiting on a backend with fair lock queues: a waiter's wait must be bounded by the work queued before it", refused.Load())
	}
	if acked.Load() == 0 {
		t.Fatal("no increment was acknowledged")
	}
	_, rev := storeState[int](t, h, name)
	waitRevision(t, rev, cs...)
	for i, c := range cs {
		if v, _, _ := c.Get(ctx, "counter"); v != got {
			t.Errorf("instance %d has counter %d, want %d", i, v, got)
		}
	}
}

// testModifyCombines: Modify calls of one key that wait together in one
// instance (another instance holds the key's lock) are committed in one
// commit, each function applied to the value the one before it left.
func testModifyCombines(t *testing.T, h Harness) {
	name := uniqueName(t)
	// The revision each write committed at: one commit, one revision.
	var mu sync.Mutex
	revs := map[uint64]int{}
	trace := &contextd.Trace{WriteStart: func(ctx context.Context, _ int) (context.Context, func(uint64, error)) {
		return ctx, func(rev uint64, _ error) {
			mu.Lock()
			revs[rev]++
			mu.Unlock()
		}
	}}
	cs := instances[int](t, h, name, 2, &contextd.Options{RetryDelay: 20 * time.Millisecond, MaxRetries: 3000, Trace: trace})
	a, b := cs[0], cs[1]
	ctx := context.Background()
	if err := a.UpdateContext(ctx, "n", 0); err != nil {
		t.Fatalf("UpdateContext: %v", err)
	}
	lock, err := b.AcquireLock(ctx, contextd.LockOptions{Key: "n", LockTimeout: time.Minute})
	if err != nil {
		t.Fatalf("AcquireLock: %v", err)
	}
	mu.Lock()
	clear(revs)
	mu.Unlock()
	joined := a.Stats().ModifyJoined
	const n = 6
	results := make(chan int, n)
	errs := make(chan error, n)
	var tries [n]atomic.Int64 // how often each call's function ran
	for i := range n {
		go func() {
			v, err := a.Modify(ctx, "n", func(cur int, _ bool) (int, error) { tries[i].Add(1); return cur + 1, nil })
			results <- v
			errs <- err
		}()
	}
	deadline := time.Now().Add(waitTimeout)
	for a.Stats().ModifyJoined < joined+n-1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d Modify calls joined the first while the key was locked", a.Stats().ModifyJoined-joined, n-1)
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
	if h.Capabilities.LockAwareCommit {
		// The leader tries while the lock is held; an attempt made before
		// the last call joined may be on its way when the lock is
		// released. Two more attempts of every call, and the latest
		// started after they had all joined.
		least := func() int64 {
			m := tries[0].Load()
			for i := range tries {
				m = min(m, tries[i].Load())
			}
			return m
		}
		for want := least() + 2; least() < want; {
			if time.Now().After(deadline) {
				t.Fatal("the calls' functions were not tried while the key was locked")
			}
			time.Sleep(time.Millisecond) // polling a condition, with a deadline
		}
	}
	if err := lock.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	var got []int
	for range n {
		got = append(got, <-results)
		if err := <-errs; err != nil {
			t.Fatalf("Modify: %v", err)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{1, 2, 3, 4, 5, 6}) {
		t.Errorf("results %v; want 1 to %d, each function on the value of the one before", got, n)
	}
	mu.Lock()
	if len(revs) != 1 {
		t.Errorf("%d concurrent Modify calls committed at revisions %v; want one commit", n, revs)
	}
	mu.Unlock()
	if v, _, err := b.Get(ctx, "n", contextd.Fresh()); err != nil || v != n {
		t.Errorf("the other instance reads %d (%v); want %d", v, err, n)
	}
}

func testLockBlocks(t *testing.T, h Harness) {
	name := uniqueName(t)
	cs := instances[string](t, h, name, 2, &contextd.Options{RetryDelay: 5 * time.Millisecond, MaxRetries: 2})
	patient := instances[string](t, h, name, 1, &contextd.Options{RetryDelay: 5 * time.Millisecond, MaxRetries: 2000})[0]
	ctx := context.Background()
	l, err := cs[0].AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: time.Minute})
	if err != nil {
		t.Fatalf("AcquireLock: %v", err)
	}
	// A writer with little patience gives up while the lock is held...
	err = cs[1].UpdateContext(ctx, "k", "impatient")
	if !errors.Is(err, contextd.ErrLockNotAcquired) {
		t.Fatalf("UpdateContext of a locked key = %v, want ErrLockNotAcquired", err)
	}
	// ...an unrelated key is free...
	if err := cs[1].UpdateContext(ctx, "other", "x"); err != nil {
		t.Fatalf("UpdateContext of an unlocked key: %v", err)
	}
	// ...a patient one waits, and the holder writes first.
	done := make(chan error, 1)
	go func() { done <- patient.UpdateContext(ctx, "k", "after") }()
	if err := cs[0].UpdateContext(ctx, "k", "holder", contextd.WithLock(l)); err != nil {
		t.Fatalf("UpdateContext WithLock by the holder: %v", err)
	}
	if v, _, _ := cs[0].Get(ctx, "k", contextd.Fresh()); v != "holder" {
		t.Fatalf("while the lock is held the value is %q, want the holder's", v)
	}
	select {
	case err := <-done:
		t.Fatalf("a write to a locked key finished while the lock was held: %v", err)
	default:
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("waiting UpdateContext after release: %v", err)
	}
	if v, _, _ := cs[0].Get(ctx, "k", contextd.Fresh()); v != "after" {
		t.Fatalf("after release the value is %q, want the waiting writer's", v)
	}
}

func testLockExpiry(t *testing.T, h Harness) {
	name := uniqueName(t)
	cs := instances[string](t, h, name, 2, &contextd.Options{RetryDelay: 5 * time.Millisecond, MaxRetries: 2000})
	ctx := context.Background()
	ttl := 2 * h.shortTTL()
	start := time.Now()
	if _, err := cs[0].AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: ttl}); err != nil {
		t.Fatalf("AcquireLock: %v", err)
	}
	if err := cs[1].UpdateContext(ctx, "k", "v"); err != nil {
		t.Fatalf("UpdateContext after the holder's lock expired: %v", err)
	}
	if waited := time.Since(start); waited < ttl/2 {
		t.Fatalf("UpdateContext of a locked key returned after %v, before the %v lock could expire", waited, ttl)
	}
}

func testLostLockRefused(t *testing.T, h Harness) {
	name := uniqueName(t)
	cs := instances[string](t, h, name, 2, nil)
	ctx := context.Background()
	l, err := cs[0].AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: h.shortTTL()})
	if err != nil {
		t.Fatalf("AcquireLock: %v", err)
	}
	select {
	case <-l.Lost():
	case <-time.After(waitTimeout):
		t.Fatal("Lost() not closed after the lock's TTL")
	}
	l2, err := cs[1].AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: time.Minute})
	if err != nil {
		t.Fatalf("AcquireLock after expiry: %v", err)
	}
	if l2.Token() <= l.Token() {
		t.Errorf("fencing token %d after %d: want strictly larger", l2.Token(), l.Token())
	}
	err = cs[0].UpdateContext(ctx, "k", "stale holder", contextd.WithLock(l))
	if !errors.Is(err, contextd.ErrLockLost) {
		t.Fatalf("write with a lost lock = %v, want ErrLockLost", err)
	}
	if err := cs[1].UpdateContext(ctx, "k", "new holder", contextd.WithLock(l2)); err != nil {
		t.Fatalf("write by the new holder: %v", err)
	}
	if v, _, _ := cs[0].Get(ctx, "k", contextd.Fresh()); v != "new holder" {
		t.Fatalf("value %q, want the new holder's", v)
	}
	if err := l.Extend(ctx, time.Second); !errors.Is(err, contextd.ErrLockLost) {
		t.Errorf("Extend of a lost lock = %v, want ErrLockLost", err)
	}
}

func testWatchOrder(t *testing.T, h Harness) {
	name := uniqueName(t)
	cs := instances[int](t, h, name, 3, &contextd.Options{WatchBuffer: 100000})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	watch := cs[2].Watch(ctx)
	const writes = 50
	var wg sync.WaitGroup
	for i, c := range cs[:2] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range writes {
				var err error
				if j%5 == 0 {
					err = c.TransactionalUpdate(ctx, map[string]int{"x": j, "y": j})
				} else {
					err = c.UpdateContext(ctx, fmt.Sprintf("k%d", j%3), j)
				}
				if err != nil {
					t.Errorf("writer %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want, head := storeState[int](t, h, name)
	// Revisions never go down and transactions arrive whole. Every
	// revision is delivered when no event can be missed (atomic publishing)
	// or missed ones are fetched from the change log; otherwise a catch-up
	// from a snapshot delivers only each key's latest change.
	complete := h.Capabilities.AtomicPublish || h.Capabilities.ChangeLog
	perRev := map[uint64]int{}
	got := map[string]int{}
	var last uint64
	for last < head {
		select {
		case ch, ok := <-watch:
			if !ok {
				t.Fatalf("watch closed at revision %d", last)
			}
			if ch.Reset {
				t.Fatalf("unexpected Reset at revision %d (buffer large enough)", last)
			}
			if ch.Revision < last || complete && ch.Revision > last+1 {
				t.Fatalf("change at revision %d after %d: out of order or skipped", ch.Revision, last)
			}
			last = ch.Revision
			perRev[ch.Revision]++
			if ch.Deleted {
				delete(got, ch.Key)
			} else {
				got[ch.Key] = ch.Value
			}
		case <-ctx.Done():
			t.Fatalf("watch stopped at revision %d of %d", last, head)
		}
	}
	for rev, n := range perRev {
		if n != 1 && n != 2 {
			t.Errorf("revision %d delivered %d changes", rev, n)
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("replaying the watched changes gives %v, the store has %v", got, want)
	}
}
