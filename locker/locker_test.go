package locker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/contextd-go/contextd/locker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errBusy = errors.New("busy")

func busy(err error) bool { return errors.Is(err, errBusy) }

// watcher is a ReleaseWatcher whose notifications the test sends.
type watcher struct {
	mu    sync.Mutex
	ch    chan struct{}
	armed int
}

func (w *watcher) WatchRelease(ctx context.Context, name string, keys ...string) (<-chan struct{}, func(), error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed++
	w.ch = make(chan struct{}, 1)
	return w.ch, func() {}, nil
}

func (w *watcher) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

func TestRetryFirstAttemptArmsNothing(t *testing.T) {
	w := &watcher{}
	err := locker.Retry(context.Background(), "c", []string{"k"}, locker.Policy{MaxRetries: 5, Watcher: w}, func(context.Context, *locker.Waiter) error { return nil }, busy)
	if err != nil || w.armed != 0 {
		t.Fatalf("err %v, armed %d times; want nil, 0", err, w.armed)
	}
}

func TestRetryExhausts(t *testing.T) {
	var attempts int
	err := locker.Retry(context.Background(), "c", []string{"k"}, locker.Policy{RetryDelay: time.Millisecond, MaxRetries: 3},
		func(context.Context, *locker.Waiter) error { attempts++; return errBusy }, busy)
	if !errors.Is(err, errBusy) || attempts != 4 {
		t.Fatalf("err %v after %d attempts; want the last error after 1+3", err, attempts)
	}
	attempts = 0
	err = locker.Retry(context.Background(), "c", nil, locker.Policy{MaxRetries: 0},
		func(context.Context, *locker.Waiter) error { attempts++; return errBusy }, busy)
	if !errors.Is(err, errBusy) || attempts != 1 {
		t.Fatalf("MaxRetries 0: err %v after %d attempts; want one", err, attempts)
	}
}

func TestRetryStopsOnOtherErrors(t *testing.T) {
	other := errors.New("other")
	var attempts int
	err := locker.Retry(context.Background(), "c", nil, locker.Policy{RetryDelay: time.Millisecond, MaxRetries: 10},
		func(context.Context, *locker.Waiter) error {
			attempts++
			if attempts == 2 {
				return other
			}
			return errBusy
		}, busy)
	if !errors.Is(err, other) || attempts != 2 {
		t.Fatalf("err %v after %d attempts", err, attempts)
	}
}

// A notification ends a pause at once and does not use up a retry.
func TestRetryWokenByRelease(t *testing.T) {
	w := &watcher{}
	var attempts atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- locker.Retry(context.Background(), "c", []string{"k"}, locker.Policy{RetryDelay: time.Hour, MaxRetries: 1, Watcher: w},
			func(context.Context, *locker.Waiter) error {
				if attempts.Add(1) < 6 {
					return errBusy
				}
				return nil
			}, busy)
	}()
	// Attempts 1 and 2 happen before and right after arming; each release
	// then allows one more, far more than MaxRetries.
	for attempts.Load() < 6 {
		w.release()
		time.Sleep(time.Millisecond) // pacing the notifications, not synchronisation
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Retry slept its RetryDelay despite release notifications")
	}
}

func TestRetryHonoursContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := locker.Retry(ctx, "c", nil, locker.Policy{RetryDelay: time.Hour, MaxRetries: 5},
		func(context.Context, *locker.Waiter) error { return errBusy }, busy)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errBusy) {
		t.Fatalf("err %v; want both the deadline and the last error", err)
	}
}

// fakeLocker counts Extend calls and fails them on demand.
type fakeLocker struct {
	extends atomic.Int32
	fail    atomic.Pointer[error]
}

func (f *fakeLocker) TryAcquire(context.Context, string, string, time.Duration) (locker.Lease, error) {
	return locker.Lease{}, nil
}
func (f *fakeLocker) Release(context.Context, locker.Lease) error { return nil }
func (f *fakeLocker) Extend(context.Context, locker.Lease, time.Duration) error {
	f.extends.Add(1)
	if p := f.fail.Load(); p != nil {
		return *p
	}
	return nil
}

func TestKeepAliveRenewsAndReportsLoss(t *testing.T) {
	f := &fakeLocker{}
	lost := make(chan error, 1)
	stop := locker.KeepAlive(f, locker.Lease{TTL: 30 * time.Millisecond}, func(err error) { lost <- err })
	defer stop()
	deadline := time.Now().Add(5 * time.Second)
	for f.extends.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("KeepAlive did not renew")
		}
		time.Sleep(time.Millisecond)
	}
	notHeld := locker.ErrNotHeld
	f.fail.Store(&notHeld)
	select {
	case err := <-lost:
		if !errors.Is(err, locker.ErrNotHeld) {
			t.Fatalf("lost(%v), want ErrNotHeld", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("lost not called after renewal failed")
	}
	stop()
	stop() // idempotent
}

func TestKeepAliveGivesUpWhenUnreachable(t *testing.T) {
	f := &fakeLocker{}
	down := errors.New("connection refused")
	f.fail.Store(&down)
	lost := make(chan error, 1)
	start := time.Now()
	stop := locker.KeepAlive(f, locker.Lease{TTL: 60 * time.Millisecond}, func(err error) { lost <- err })
	defer stop()
	select {
	case err := <-lost:
		if !errors.Is(err, down) {
			t.Fatalf("lost(%v)", err)
		}
		if f.extends.Load() < 2 {
			t.Errorf("gave up after %d attempts; transient failures should be retried", f.extends.Load())
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("took %v to give up on a 60ms lease", time.Since(start))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("lost not called while the backend stayed unreachable")
	}
}

// queue is a FairLocker that records the waiters it sees and dequeues.
type queue struct {
	mu       sync.Mutex
	dequeued []string
}

func (q *queue) TryAcquireQueued(context.Context, string, string, time.Duration, locker.Waiter) (locker.Lease, error) {
	return locker.Lease{}, locker.ErrNotAcquired
}

func (q *queue) Dequeue(_ context.Context, _ string, w locker.Waiter, _ ...string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dequeued = append(q.dequeued, w.ID)
	return nil
}

// TestRetryPanicGivesPlaceUp: an attempt that panics after an earlier one
// was refused and queued (a Modify function that panics) leaves the
// queue on its way out, and the panic reaches the caller.
func TestRetryPanicGivesPlaceUp(t *testing.T) {
	q := &queue{}
	p := locker.Policy{RetryDelay: time.Millisecond, MaxRetries: 3, Queue: q}
	attempts := 0
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v; want the attempt's panic", r)
			}
		}()
		_ = locker.Retry(context.Background(), "c", []string{"k"}, p, func(context.Context, *locker.Waiter) error {
			if attempts++; attempts == 2 {
				panic("boom")
			}
			return errBusy
		}, busy)
	}()
	q.mu.Lock()
	defer q.mu.Unlock()
	if attempts != 2 || len(q.dequeued) != 1 {
		t.Fatalf("%d attempts, dequeued %v; want the waiter of the second attempt dequeued after its panic", attempts, q.dequeued)
	}
}

// TestRetryWithAQueue: every attempt of one wait carries the same waiter,
// with a hold of at least two seconds; a wait that fails gives its place
// up (through Leave when set, else Dequeue), and one that succeeds does not.
func TestRetryWithAQueue(t *testing.T) {
	q := &queue{}
	var ids []string
	try := func(_ context.Context, w *locker.Waiter) error {
		if len(ids) == 0 {
			// The first attempt goes without a place in the queue.
			if w != nil {
				t.Fatalf("first attempt with waiter %+v; want none", w)
			}
			ids = append(ids, "")
			return errBusy
		}
		if w == nil || w.ID == "" || w.Hold < 2*time.Second {
			t.Fatalf("attempt with waiter %+v; want an ID and a hold of 2 s or more", w)
		}
		ids = append(ids, w.ID)
		return errBusy
	}
	p := locker.Policy{RetryDelay: time.Millisecond, MaxRetries: 3, Queue: q}
	if err := locker.Retry(context.Background(), "c", []string{"k"}, p, try, busy); !errors.Is(err, errBusy) {
		t.Fatalf("Retry = %v", err)
	}
	if len(ids) != 4 || ids[1] != ids[3] {
		t.Fatalf("attempts had waiters %v; want none, then one waiter in the other three", ids)
	}
	if len(q.dequeued) != 1 || q.dequeued[0] != ids[1] {
		t.Fatalf("dequeued %v after a failed wait; want %s", q.dequeued, ids[1])
	}
	var left []string
	p.Leave = func(w locker.Waiter, keys []string) { left = append(left, w.ID) }
	ids = nil
	_ = locker.Retry(context.Background(), "c", []string{"k"}, p, try, busy)
	if len(left) != 1 || left[0] != ids[1] || len(q.dequeued) != 1 {
		t.Fatalf("with Leave set: left %v, dequeued %v; want Leave called once instead of Dequeue", left, q.dequeued)
	}
	left, ids = nil, nil
	err := locker.Retry(context.Background(), "c", []string{"k"}, p, func(_ context.Context, w *locker.Waiter) error {
		ids = append(ids, "")
		if len(ids) < 3 {
			return errBusy
		}
		return nil
	}, busy)
	if err != nil || len(left) != 0 {
		t.Fatalf("a wait that succeeded: %v, left %v; want nil and no dequeue (the store dequeues a served waiter)", err, left)
	}
}

// turnWatcher is a TurnWatcher that records the waiters it watches for and
// never notifies; with unsupported set it declines every call.
type turnWatcher struct {
	watcher
	unsupported bool
	turns       []string
}

func (w *turnWatcher) WatchTurn(ctx context.Context, name string, wt locker.Waiter, keys ...string) (<-chan struct{}, func(), error) {
	if w.unsupported {
		return nil, nil, fmt.Errorf("no turns here: %w", errors.ErrUnsupported)
	}
	w.turns = append(w.turns, wt.ID)
	return make(chan struct{}), func() {}, nil
}

// TestRetryWatchesTheTurnOfItsWaiter: with a queue, Retry watches the turn
// of the waiter its queued attempts carry; a watcher that declines falls
// back to WatchRelease; and a turn notification that never comes costs
// retries, not the wait.
func TestRetryWatchesTheTurnOfItsWaiter(t *testing.T) {
	w := &turnWatcher{}
	var ids []string
	try := func(_ context.Context, wt *locker.Waiter) error {
		if wt != nil {
			ids = append(ids, wt.ID)
		}
		if len(ids) < 4 {
			return errBusy
		}
		return nil
	}
	p := locker.Policy{RetryDelay: time.Millisecond, MaxRetries: 100, Watcher: w, Queue: &queue{}}
	if err := locker.Retry(context.Background(), "c", []string{"k"}, p, try, busy); err != nil {
		t.Fatalf("Retry without any notification = %v; want the retries to get through", err)
	}
	if len(w.turns) != 1 || w.armed != 0 || len(ids) != 4 || w.turns[0] != ids[0] || ids[0] != ids[3] {
		t.Fatalf("watched turns %v (WatchRelease %d times) for attempts with waiters %v; want one WatchTurn of the attempts' waiter", w.turns, w.armed, ids)
	}

	declines := &turnWatcher{unsupported: true}
	p.Watcher, ids = declines, nil
	if err := locker.Retry(context.Background(), "c", []string{"k"}, p, try, busy); err != nil {
		t.Fatalf("Retry = %v", err)
	}
	if declines.armed != 1 {
		t.Fatalf("a TurnWatcher that declines: WatchRelease armed %d times; want once", declines.armed)
	}

	// Without a queue there is no turn to watch.
	noQueue := &turnWatcher{}
	p.Watcher, p.Queue, ids = noQueue, nil, nil
	attempts := 0
	_ = locker.Retry(context.Background(), "c", []string{"k"}, p, func(context.Context, *locker.Waiter) error {
		if attempts++; attempts < 3 {
			return errBusy
		}
		return nil
	}, busy)
	if len(noQueue.turns) != 0 || noQueue.armed != 1 {
		t.Fatalf("without a queue: %d WatchTurn, %d WatchRelease; want WatchRelease only", len(noQueue.turns), noQueue.armed)
	}
}

// TestRetryContended: with Contended, the waiter is made and its turn
// watched before the first attempt, which carries it, and a refused first
// attempt is followed by the pause, not by an attempt at once (the first
// attempt here ends the wait's ctx, so only an attempt at once could
// follow it). Without Contended the same wait makes that second attempt;
// without a queue Contended changes nothing.
func TestRetryContended(t *testing.T) {
	type attempt struct {
		waiter  string
		watched int // WatchTurn calls before the attempt
	}
	run := func(p locker.Policy, w *turnWatcher) []attempt {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var got []attempt
		err := locker.Retry(ctx, "c", []string{"k"}, p, func(_ context.Context, wt *locker.Waiter) error {
			a := attempt{watched: len(w.turns)}
			if wt != nil {
				a.waiter = wt.ID
			}
			got = append(got, a)
			cancel()
			return errBusy
		}, busy)
		if !errors.Is(err, errBusy) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Retry = %v; want the refusal and the cancellation", err)
		}
		return got
	}
	w := &turnWatcher{}
	q := &queue{}
	p := locker.Policy{RetryDelay: 24 * time.Hour, MaxRetries: 3, Watcher: w, Queue: q, Contended: true}
	got := run(p, w)
	if len(got) != 1 || got[0].waiter == "" || got[0].watched != 1 || len(w.turns) != 1 || w.turns[0] != got[0].waiter {
		t.Fatalf("Contended: attempts %+v, turns watched %v; want one attempt carrying the waiter whose turn was watched before it", got, w.turns)
	}
	if len(q.dequeued) != 1 || q.dequeued[0] != got[0].waiter {
		t.Fatalf("Contended: dequeued %v after the wait ended; want the first attempt's waiter", q.dequeued)
	}
	w = &turnWatcher{}
	p.Watcher, p.Contended = w, false
	if got := run(p, w); len(got) != 2 || got[0].waiter != "" || got[0].watched != 0 || got[1].waiter == "" || got[1].watched != 1 {
		t.Fatalf("not Contended: attempts %+v; want one without a waiter, then one with it at once after the arming", got)
	}
	w = &turnWatcher{}
	p.Watcher, p.Contended, p.Queue = w, true, nil
	if got := run(p, w); len(got) != 2 || got[0].waiter != "" || got[0].watched != 0 || w.armed != 1 {
		t.Fatalf("Contended without a queue: attempts %+v, WatchRelease %d; want the unqueued wait", got, w.armed)
	}
}

// chanTurns is a TurnWatcher whose notifications the test sends.
type chanTurns struct {
	watcher
	ch    chan struct{}
	turns []string
}

func (w *chanTurns) WatchTurn(ctx context.Context, name string, wt locker.Waiter, keys ...string) (<-chan struct{}, func(), error) {
	w.turns = append(w.turns, wt.ID)
	return w.ch, func() {}, nil
}

// TestRetryQueued: a caller that holds its place already (Policy.Queued)
// waits for its turn before its first attempt, which carries that
// waiter; a wait that ctx ends before any attempt leaves the queue.
func TestRetryQueued(t *testing.T) {
	held := locker.Waiter{ID: "held", Hold: time.Minute}
	w := &chanTurns{ch: make(chan struct{}, 1)}
	q := &queue{}
	p := locker.Policy{RetryDelay: 24 * time.Hour, MaxRetries: 3, Watcher: w, Queue: q, Queued: &held}
	w.ch <- struct{}{} // the turn, come before the call
	var got []string
	err := locker.Retry(context.Background(), "c", []string{"k"}, p, func(_ context.Context, wt *locker.Waiter) error {
		if len(w.ch) != 0 {
			t.Error("attempt made before the turn was taken")
		}
		if wt == nil {
			got = append(got, "")
		} else {
			got = append(got, wt.ID)
		}
		return nil
	}, busy)
	if err != nil || len(got) != 1 || got[0] != "held" || len(w.turns) != 1 || w.turns[0] != "held" || len(q.dequeued) != 0 {
		t.Fatalf("Retry = %v, attempts %v, turns watched %v, dequeued %v; want one attempt as the held waiter, after its turn", err, got, w.turns, q.dequeued)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got = nil
	err = locker.Retry(ctx, "c", []string{"k"}, p, func(context.Context, *locker.Waiter) error {
		got = append(got, "attempt")
		return errBusy
	}, busy)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, locker.ErrNotAcquired) || len(got) != 0 || len(q.dequeued) != 1 || q.dequeued[0] != "held" {
		t.Fatalf("cancelled: Retry = %v, attempts %v, dequeued %v; want ErrNotAcquired and context.Canceled, no attempt and the held waiter dequeued", err, got, q.dequeued)
	}
}
