package contextd_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/contextd"
)

// blockedModify sets up the combining tests: instance a, whose Modify
// calls of key "n" wait because instance b holds the key's lock, and
// start, which starts one Modify on a and returns once it is under way —
// waiting for the lock (the first) or joined to the first's group (the
// others) — so that the calls' order is the order of the start calls.
// release gives the lock back.
func blockedModify(t *testing.T) (a *contextd.Context[int], start func(ctx context.Context, fn func(int, bool) (int, error)) <-chan modResult, release func()) {
	t.Helper()
	mem := newMemory(t, nil)
	waiting := make(chan struct{}, 1)
	trace := &contextd.Trace{LockWaitStart: func(ctx context.Context, key string) (context.Context, func(error)) {
		select {
		case waiting <- struct{}{}:
		default:
		}
		return ctx, func(error) {}
	}}
	opts := &contextd.Options{RetryDelay: 5 * time.Millisecond, MaxRetries: 20000, Trace: trace}
	a = open[int](t, mem, "ctx", opts)
	b := open[int](t, mem, "ctx", nil)
	ctx := context.Background()
	lock, err := b.AcquireLock(ctx, contextd.LockOptions{Key: "n", LockTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	started := 0
	var latest atomic.Pointer[atomic.Int64] // tries of the latest call's function
	start = func(ctx context.Context, fn func(int, bool) (int, error)) <-chan modResult {
		res := make(chan modResult, 1)
		joined := a.Stats().ModifyJoined
		tries := new(atomic.Int64)
		inner := fn
		fn = func(cur int, ok bool) (int, error) {
			tries.Add(1)
			return inner(cur, ok)
		}
		latest.Store(tries)
		go func() {
			defer func() {
				if p := recover(); p != nil {
					res <- modResult{panicked: p}
				}
			}()
			v, err := a.Modify(ctx, "n", fn)
			res <- modResult{v: v, err: err}
		}()
		if started == 0 {
			select {
			case <-waiting:
			case <-time.After(time.Minute):
				t.Fatal("the first Modify did not wait for the lock")
			}
		} else {
			eventually(t, "the Modify joined the first", func() bool { return a.Stats().ModifyJoined == joined+1 })
		}
		started++
		return res
	}
	release = func() {
		// The leader tries while the lock is held; an attempt made before
		// the latest call joined may be on its way when the lock is
		// released. Two more tries of the latest call's function: the
		// second attempt started after every call had joined.
		tries := latest.Load()
		want := tries.Load() + 2
		eventually(t, "the latest call was tried twice more", func() bool { return tries.Load() >= want })
		if err := lock.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return a, start, release
}

type modResult struct {
	v        int
	err      error
	panicked any
}

func result(t *testing.T, ch <-chan modResult) modResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(time.Minute):
		t.Fatal("Modify did not return")
		return modResult{}
	}
}

// TestModifyCombinesConcurrentCalls: Modify calls of one key in one
// instance that wait together are committed together, in one commit (one
// revision), each function applied in turn to the value the one before
// it left.
func TestModifyCombinesConcurrentCalls(t *testing.T) {
	a, start, release := blockedModify(t)
	ctx := context.Background()
	before := a.Revision()
	const n = 8
	var results []<-chan modResult
	for i := range n {
		results = append(results, start(ctx, func(cur int, _ bool) (int, error) { return cur*10 + i + 1, nil }))
	}
	release()
	var got []int
	for _, ch := range results {
		r := result(t, ch)
		if r.err != nil {
			t.Fatalf("Modify: %v", r.err)
		}
		got = append(got, r.v)
	}
	// Applied in the order of the calls: 1, 12, 123, ...
	want := []int{1, 12, 123, 1234, 12345, 123456, 1234567, 12345678}
	if !slices.Equal(got, want) {
		t.Errorf("results %v, want %v (each function on the value of the one before)", got, want)
	}
	if commits := a.Revision() - before; commits != 1 {
		t.Errorf("%d concurrent Modify calls made %d commits, want 1", n, commits)
	}
	if v, _, _ := a.Get(ctx, "n", contextd.Fresh()); v != want[n-1] {
		t.Errorf("the store holds %d, want %d", v, want[n-1])
	}
}

// TestModifyCombinedOutcomes: in a combined commit each call gets its own
// outcome — a function's error or panic is its caller's alone and the
// next function gets the value from before it; DeleteKey deletes for the
// calls after it.
func TestModifyCombinedOutcomes(t *testing.T) {
	a, start, release := blockedModify(t)
	ctx := context.Background()
	boom := errors.New("boom")
	before := a.Revision()
	r1 := start(ctx, increment)
	r2 := start(ctx, func(int, bool) (int, error) { return 0, boom })
	r3 := start(ctx, func(cur int, _ bool) (int, error) { return cur + 10, nil })
	r4 := start(ctx, func(int, bool) (int, error) { panic("from the fourth") })
	r5 := start(ctx, func(int, bool) (int, error) { return 0, contextd.DeleteKey })
	r6 := start(ctx, func(cur int, ok bool) (int, error) {
		if ok || cur != 0 {
			return 0, fmt.Errorf("after DeleteKey got %d, %v; want 0, false", cur, ok)
		}
		return 100, nil
	})
	r7 := start(ctx, func(cur int, ok bool) (int, error) { return cur + 1, nil })
	release()
	check := func(name string, r modResult, v int, err error) {
		t.Helper()
		if r.panicked != nil || r.v != v || !errors.Is(r.err, err) || (err == nil) != (r.err == nil) {
			t.Errorf("%s: got %d, %v (panic %v); want %d, %v", name, r.v, r.err, r.panicked, v, err)
		}
	}
	check("first", result(t, r1), 1, nil)
	check("error", result(t, r2), 0, boom)
	check("third", result(t, r3), 11, nil)
	if r := result(t, r4); r.panicked != "from the fourth" {
		t.Errorf("the panicking function's caller got %+v; want its panic", r)
	}
	check("DeleteKey", result(t, r5), 0, nil)
	check("after the delete", result(t, r6), 100, nil)
	check("last", result(t, r7), 101, nil)
	if commits := a.Revision() - before; commits != 1 {
		t.Errorf("%d commits, want 1", commits)
	}
	if v, ok, _ := a.Get(ctx, "n", contextd.Fresh()); v != 101 || !ok {
		t.Errorf("the store holds %d (%v), want 101", v, ok)
	}
}

// TestModifyCombinedCancel: a call whose ctx ends while it waits leaves
// without writing; when the leader's ctx ends, the calls that joined it
// are written all the same.
func TestModifyCombinedCancel(t *testing.T) {
	t.Run("follower", func(t *testing.T) {
		a, start, release := blockedModify(t)
		ctx := context.Background()
		cctx, cancel := context.WithCancel(ctx)
		r1 := start(ctx, increment)
		r2 := start(cctx, increment)
		r3 := start(ctx, increment)
		cancel()
		if r := result(t, r2); !errors.Is(r.err, context.Canceled) {
			t.Errorf("the cancelled call got %+v; want context.Canceled", r)
		}
		release()
		if r1, r3 := result(t, r1), result(t, r3); r1.err != nil || r3.err != nil || r1.v != 1 || r3.v != 2 {
			t.Errorf("the others got %+v, %+v; want 1 and 2", r1, r3)
		}
		if v, _, _ := a.Get(ctx, "n", contextd.Fresh()); v != 2 {
			t.Errorf("the store holds %d, want 2", v)
		}
	})
	t.Run("leader", func(t *testing.T) {
		a, start, release := blockedModify(t)
		ctx := context.Background()
		cctx, cancel := context.WithCancel(ctx)
		before := a.Revision()
		r1 := start(cctx, increment)
		r2 := start(ctx, increment)
		r3 := start(ctx, increment)
		cancel()
		if r := result(t, r1); !errors.Is(r.err, context.Canceled) {
			t.Errorf("the cancelled leader got %+v; want context.Canceled", r)
		}
		release()
		if r2, r3 := result(t, r2), result(t, r3); r2.err != nil || r3.err != nil || r2.v != 1 || r3.v != 2 {
			t.Errorf("the calls that joined got %+v, %+v; want 1 and 2", r2, r3)
		}
		if commits := a.Revision() - before; commits != 1 {
			t.Errorf("%d commits, want 1", commits)
		}
	})
	// The leader's refused attempts carried the others before its ctx
	// ended (the subtest above leaves that to chance): its lock wait,
	// ended by its ctx, was not spent, so theirs goes on.
	t.Run("leader after carrying the others", func(t *testing.T) {
		a, start, release := blockedModify(t)
		ctx := context.Background()
		cctx, cancel := context.WithCancel(ctx)
		before := a.Revision()
		var tried atomic.Int64
		r1 := start(cctx, increment)
		r2 := start(ctx, increment)
		r3 := start(ctx, func(cur int, ok bool) (int, error) {
			tried.Add(1)
			return increment(cur, ok)
		})
		eventually(t, "an attempt carried the last call", func() bool { return tried.Load() > 0 })
		cancel()
		if r := result(t, r1); !errors.Is(r.err, context.Canceled) {
			t.Errorf("the cancelled leader got %+v; want context.Canceled", r)
		}
		othersLedAgain(t, a, before, release, &tried, r2, r3)
	})
}

// TestModifyCombinedLosesNoIncrement: instances with many goroutines each
// increment one counter; some calls fail in their function, some are
// cancelled at random moments. Every increment acknowledged is counted
// once, and no other.
func TestModifyCombinedLosesNoIncrement(t *testing.T) {
	mem := newMemory(t, nil)
	opts := &contextd.Options{RetryDelay: 10 * time.Millisecond, MaxRetries: 6000}
	cs := []*contextd.Context[int]{open[int](t, mem, "ctx", opts), open[int](t, mem, "ctx", opts)}
	const goroutines, increments = 8, 40
	var acked, joinedBefore atomic.Int64
	var wg sync.WaitGroup
	errSkip := errors.New("skip")
	for ci, c := range cs {
		joinedBefore.Add(int64(c.Stats().ModifyJoined))
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(ci), uint64(g)))
				for i := range increments {
					ctx, cancel := context.WithCancel(context.Background())
					if rng.IntN(5) == 0 {
						// Cancelled at some point of the call, or after it.
						yields := rng.IntN(50)
						go func() {
							for range yields {
								time.Sleep(0) // yield: a spread of moments, not synchronisation
							}
							cancel()
						}()
					}
					skip := i%7 == 3
					_, err := c.Modify(ctx, "counter", func(cur int, _ bool) (int, error) {
						if skip {
							return 0, errSkip
						}
						return cur + 1, nil
					})
					cancel()
					switch {
					case err == nil:
						if skip {
							t.Error("a function's error was not returned")
						}
						acked.Add(1)
					case errors.Is(err, errSkip), errors.Is(err, context.Canceled):
					default:
						t.Errorf("Modify: %v", err)
					}
				}
			}()
		}
	}
	wg.Wait()
	v, _, err := cs[0].Get(context.Background(), "counter", contextd.Fresh())
	if err != nil || int64(v) != acked.Load() {
		t.Fatalf("counter = %d (%v), %d increments acknowledged", v, err, acked.Load())
	}
	var joined uint64
	for _, c := range cs {
		joined += c.Stats().ModifyJoined
	}
	t.Logf("%d increments, %d calls joined another's", acked.Load(), joined-uint64(joinedBefore.Load()))
}

// othersLedAgain checks what follows a leader that left its lock wait
// early (its ctx ended): the calls that joined it, r2 and r3 (whose
// function counts its runs in tried), are tried again under a new leader
// and none returns while the lock is held; once release frees the key,
// they get 1 and 2, in one commit after before.
func othersLedAgain(t *testing.T, a *contextd.Context[int], before uint64, release func(), tried *atomic.Int64, r2, r3 <-chan modResult) {
	t.Helper()
	want := tried.Load() + 2
	eventually(t, "the last call was tried twice more under a new leader", func() bool {
		for _, ch := range []<-chan modResult{r2, r3} {
			select {
			case r := <-ch:
				t.Fatalf("a call that joined returned while the lock was held: %v (%v)", r.v, r.err)
			default:
			}
		}
		return tried.Load() >= want
	})
	release()
	if r2, r3 := result(t, r2), result(t, r3); r2.err != nil || r3.err != nil || r2.v != 1 || r3.v != 2 {
		t.Errorf("the calls that joined got %v (%v), %v (%v); want 1 and 2", r2.v, r2.err, r3.v, r3.err)
	}
	if commits := a.Revision() - before; commits != 1 {
		t.Errorf("%d commits, want 1", commits)
	}
}
