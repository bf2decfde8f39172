package contextd_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
)

// The faults of combined Modify calls (combine.go): commits of unknown
// outcome, calls that leave, functions that fail, panics outside them.

// hookedCommits commits through the memory backend, letting hook decide
// per commit (numbered from 1) what happens: do makes the commit.
type hookedCommits struct {
	*memory.Backend
	n    atomic.Int32
	hook func(ctx context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error)
}

func (h *hookedCommits) Commit(ctx context.Context, name string, b backend.Batch) (backend.Head, error) {
	return h.hook(ctx, h.n.Add(1), func() (backend.Head, error) { return h.Backend.Commit(ctx, name, b) })
}

func (h *hookedCommits) CommitAndPublish(ctx context.Context, name string, b backend.Batch, ch string) (backend.Head, error) {
	return h.hook(ctx, h.n.Add(1), func() (backend.Head, error) { return h.Backend.CommitAndPublish(ctx, name, b, ch) })
}

// increment is the function of most calls here.
func increment(v int, _ bool) (int, error) { return v + 1, nil }

var errReplyLost = errors.New("read tcp: connection reset by peer")

// combinedPair starts a leader L and a call B that joins it: the first
// commit (L alone) is refused with ErrLocked once B has joined, so the
// second carries both; second is that commit's hook.
func combinedPair(t *testing.T, lctx, bctx context.Context, second func(ctx context.Context, a *contextd.Context[int], do func() (backend.Head, error)) (backend.Head, error)) (a *contextd.Context[int], lres, bres <-chan error) {
	t.Helper()
	gate, first := make(chan struct{}), make(chan struct{})
	w := &hookedCommits{Backend: newMemory(t, nil)}
	w.hook = func(ctx context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		switch n {
		case 1:
			close(first)
			<-gate
			return backend.Head{}, backend.ErrLocked
		case 2:
			return second(ctx, a, do)
		}
		return do()
	}
	a = open[int](t, w, "ctx", nil)
	l, b := make(chan error, 1), make(chan error, 1)
	go func() { _, err := a.Modify(lctx, "n", increment); l <- err }()
	<-first
	go func() { _, err := a.Modify(bctx, "n", increment); b <- err }()
	eventually(t, "B joined", func() bool { return a.Stats().ModifyJoined == 1 })
	close(gate)
	return a, l, b
}

// TestModifyCombinedInDoubtCommitNotRepeated: a combined commit is made,
// its reply lost, and the leader's ctx ends meanwhile. The other call
// reports the commit's error; it is not run again by a next leader, which
// would apply its increment twice.
func TestModifyCombinedInDoubtCommitNotRepeated(t *testing.T) {
	lctx, lcancel := context.WithCancel(context.Background())
	defer lcancel()
	a, lres, bres := combinedPair(t, lctx, context.Background(), func(_ context.Context, _ *contextd.Context[int], do func() (backend.Head, error)) (backend.Head, error) {
		if _, err := do(); err != nil {
			return backend.Head{}, err
		}
		lcancel()
		return backend.Head{}, errReplyLost
	})
	if err := <-lres; err == nil {
		t.Error("the leader reported success for a commit whose reply was lost")
	}
	if err := <-bres; !errors.Is(err, errReplyLost) {
		t.Errorf("B reported %v; want the commit's error", err)
	}
	if v, _, err := a.Get(context.Background(), "n", contextd.Fresh()); err != nil || v != 2 {
		t.Errorf("n = %d (%v); want 2: one commit carried both increments", v, err)
	}
}

// TestModifyWithdrawnCallReportsInDoubtCommit: B's ctx ends while a commit
// carrying it is on its way; the commit is made, its reply lost. B
// reports the commit's error, not context.Canceled (nothing written).
func TestModifyWithdrawnCallReportsInDoubtCommit(t *testing.T) {
	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	withdrew := make(chan bool, 1)
	_, lres, bres := combinedPair(t, context.Background(), bctx, func(_ context.Context, a *contextd.Context[int], do func() (backend.Head, error)) (backend.Head, error) {
		h, err := do()
		if err != nil {
			return h, err
		}
		bcancel()
		// Wait (not on the test's goroutine: no t.Fatal here) until B
		// has seen its ctx end, so that it withdraws from this commit.
		deadline := time.Now().Add(time.Minute)
		for !contextd.ModifyWithdrawn(a, "n") && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling a condition, bounded
		}
		withdrew <- contextd.ModifyWithdrawn(a, "n")
		return backend.Head{}, errReplyLost
	})
	if !<-withdrew {
		t.Fatal("B did not withdraw within a minute of its ctx ending")
	}
	<-lres
	if err := <-bres; errors.Is(err, context.Canceled) || !errors.Is(err, errReplyLost) {
		t.Errorf("B reported %v; want the commit's error (its increment may be in)", err)
	}
}

// errRefused is the error of failingOnce's function.
var errRefused = errors.New("refused by fn")

// failingOnce starts a Modify of "n" on a whose function fails with
// errRefused the first time it runs and adds 100 after; runs counts its
// runs.
func failingOnce(a *contextd.Context[int], runs *atomic.Int32) <-chan error {
	res := make(chan error, 1)
	go func() {
		_, err := a.Modify(context.Background(), "n", func(v int, _ bool) (int, error) {
			if runs.Add(1) == 1 {
				return 0, errRefused
			}
			return v + 100, nil
		})
		res <- err
	}()
	return res
}

// TestModifyCombinedFuncErrorIsFinal: a joined call whose function fails
// gets that error, as a lone Modify would, even when the attempt then
// loses a race and the others' functions run again.
func TestModifyCombinedFuncErrorIsFinal(t *testing.T) {
	mem := newMemory(t, nil)
	other := open[int](t, mem, "ctx", nil)
	gate, first := make(chan struct{}), make(chan struct{})
	w := &hookedCommits{Backend: mem}
	w.hook = func(ctx context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		switch n {
		case 1:
			close(first)
			<-gate
			return backend.Head{}, backend.ErrLocked
		case 2: // another instance writes first: a real conflict
			if _, err := other.Modify(context.Background(), "n", func(v int, _ bool) (int, error) { return v + 10, nil }); err != nil {
				return backend.Head{}, err
			}
		}
		return do()
	}
	a := open[int](t, w, "ctx", nil)
	bg := context.Background()
	lres := make(chan error, 1)
	go func() {
		_, err := a.Modify(bg, "n", increment)
		lres <- err
	}()
	<-first
	var runs atomic.Int32
	bres := failingOnce(a, &runs)
	eventually(t, "B joined", func() bool { return a.Stats().ModifyJoined == 1 })
	close(gate)
	if err := <-lres; err != nil {
		t.Errorf("the leader: %v", err)
	}
	if err := <-bres; !errors.Is(err, errRefused) || runs.Load() != 1 {
		t.Errorf("B reported %v after %d runs of its function; want its function's error, after 1", err, runs.Load())
	}
	if v, _, err := a.Get(bg, "n", contextd.Fresh()); err != nil || v != 11 {
		t.Errorf("n = %d (%v); want 11", v, err)
	}
}

// panicky encodes as JSON, but panics on 13.
type panicky int

func (p panicky) MarshalJSON() ([]byte, error) {
	if p == 13 {
		panic("unlucky")
	}
	return []byte{byte('0' + p%10)}, nil
}

// TestModifyPanicOutsideFuncHandsGroupOn: a panic in the goroutine that
// leads a key's calls, outside their functions (here in the backend's
// commit), reaches that goroutine, and a call that joined meanwhile is
// handed the lead instead of waiting for the leader that is gone.
func TestModifyPanicOutsideFuncHandsGroupOn(t *testing.T) {
	gate, first := make(chan struct{}), make(chan struct{})
	w := &hookedCommits{Backend: newMemory(t, nil)}
	w.hook = func(_ context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		if n == 1 {
			close(first)
			<-gate
			panic("backend bug")
		}
		return do()
	}
	a := open[int](t, w, "ctx", nil)
	lres := make(chan any, 1)
	go func() {
		defer func() { lres <- recover() }()
		_, _ = a.Modify(context.Background(), "n", increment)
	}()
	<-first
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bres := make(chan error, 1)
	go func() { _, err := a.Modify(ctx, "n", increment); bres <- err }()
	eventually(t, "B joined", func() bool { return a.Stats().ModifyJoined == 1 })
	close(gate)
	if r := <-lres; r != "backend bug" {
		t.Errorf("the leader's goroutine got %v; want the backend's panic", r)
	}
	if err := <-bres; err != nil {
		t.Fatalf("B, which joined the leader that panicked: %v", err)
	}
	if v, _, err := a.Get(ctx, "n", contextd.Fresh()); err != nil || v != 1 {
		t.Errorf("n = %d (%v); want 1 (B's increment)", v, err)
	}
}

// bystanderLeaves starts C, a Modify of "n" on a that joins the calls
// waiting behind leaderThen's (B has joined), lets the leader's function
// return — B then leads an attempt that carries C, and bIn tells that B's
// function runs — ends C's ctx, and checks that C returns at once with
// context.Canceled, without waiting for B's function.
func bystanderLeaves(t *testing.T, a *contextd.Context[int], releaseA func(), bIn <-chan struct{}) {
	t.Helper()
	cctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cres := make(chan error, 1)
	go func() {
		_, err := a.Modify(cctx, "n", increment)
		cres <- err
	}()
	eventually(t, "C joined", func() bool { return a.Stats().ModifyJoined == 2 })
	releaseA()
	<-bIn
	cancel()
	select {
	case err := <-cres:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("C: %v; want context.Canceled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("C waited for B's function, though its ctx ended")
	}
}

// TestModifyLeavesWhileOthersFunctionsRun: a call whose ctx ends while
// the functions of an attempt it rides on run (another call's is slow)
// returns at once with its ctx's error; the attempt is applied again
// without it.
func TestModifyLeavesWhileOthersFunctionsRun(t *testing.T) {
	a := open[int](t, newMemory(t, nil), "ctx", nil)
	releaseA, _ := leaderThen(t, a, increment)
	bIn, releaseB, bres := slowModify(context.Background(), a)
	eventually(t, "B joined", func() bool { return a.Stats().ModifyJoined == 1 })
	bystanderLeaves(t, a, releaseA, bIn)
	releaseB()
	if err := <-bres; err != nil {
		t.Errorf("B: %v", err)
	}
	if v, _, err := a.Get(context.Background(), "n", contextd.Fresh()); err != nil || v != 2 {
		t.Errorf("n = %d (%v); want 2 (A and B, not C)", v, err)
	}
}

// TestModifyNestedCallHoldsOnlyItself: a function that calls Modify of
// its own key (which it must not: that call waits for it) holds up its
// own call, not a bystander whose ctx ends.
func TestModifyNestedCallHoldsOnlyItself(t *testing.T) {
	a := open[int](t, newMemory(t, nil), "ctx", nil)
	releaseA, _ := leaderThen(t, a, increment)
	nctx, ncancel := context.WithCancel(context.Background())
	defer ncancel()
	bIn, bres := make(chan struct{}, 1), make(chan error, 1)
	go func() {
		_, err := a.Modify(context.Background(), "n", func(v int, _ bool) (int, error) {
			select {
			case bIn <- struct{}{}:
			default:
			}
			_, _ = a.Modify(nctx, "n", func(v int, _ bool) (int, error) { return v, nil })
			return v + 1, nil
		})
		bres <- err
	}()
	eventually(t, "B joined", func() bool { return a.Stats().ModifyJoined == 1 })
	bystanderLeaves(t, a, releaseA, bIn)
	ncancel() // the nested call gives up; B then commits
	if err := <-bres; err != nil {
		t.Errorf("B: %v", err)
	}
}

// leaderThen starts a Modify of "n" on a whose function blocks (the first
// time) until release, and returns once that function runs: calls started
// meanwhile join its group and are led, once it committed alone, by the
// first of them. The test's end releases it and waits for it.
func leaderThen[T any](t *testing.T, a *contextd.Context[T], fn func(T, bool) (T, error)) (release func(), res <-chan error) {
	t.Helper()
	in, unblock, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	out := make(chan error, 1)
	var once atomic.Bool
	go func() {
		defer close(done)
		_, err := a.Modify(context.Background(), "n", func(v T, ok bool) (T, error) {
			if once.CompareAndSwap(false, true) {
				close(in)
				<-unblock
			}
			return fn(v, ok)
		})
		out <- err
	}()
	<-in
	var closed atomic.Bool
	release = func() {
		if closed.CompareAndSwap(false, true) {
			close(unblock)
		}
	}
	t.Cleanup(func() { release(); <-done })
	return release, out
}

// slowModify starts an increment of "n" on a with ctx whose function, each
// time it runs, tells in and then waits for release.
func slowModify(ctx context.Context, a *contextd.Context[int]) (in <-chan struct{}, release func(), res <-chan error) {
	entered, unblock, out := make(chan struct{}, 1), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := a.Modify(ctx, "n", func(v int, _ bool) (int, error) {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-unblock
			return v + 1, nil
		})
		out <- err
	}()
	return entered, func() { close(unblock) }, out
}

// TestModifyCombinedCodecPanicIsItsCalls: the codec panics on the value of
// one call (B) of a combined attempt that another (L) leads: the panic is
// B's, raised in B's goroutine after its function ran once; L's value is
// written.
func TestModifyCombinedCodecPanicIsItsCalls(t *testing.T) {
	a := open[panicky](t, newMemory(t, nil), "ctx", nil)
	bg := context.Background()
	// X commits alone; L and B, which joined meanwhile, go together (L leads).
	releaseX, xres := leaderThen(t, a, func(v panicky, _ bool) (panicky, error) { return 1, nil })
	type r struct {
		err      error
		panicked any
	}
	run := func(fn func(panicky, bool) (panicky, error)) <-chan r {
		ch := make(chan r, 1)
		go func() {
			defer func() {
				if p := recover(); p != nil {
					ch <- r{panicked: p}
				}
			}()
			_, err := a.Modify(bg, "n", fn)
			ch <- r{err: err}
		}()
		return ch
	}
	var bRuns atomic.Int32
	lres := run(func(panicky, bool) (panicky, error) { return 2, nil })
	eventually(t, "L joined", func() bool { return a.Stats().ModifyJoined == 1 })
	bres := run(func(panicky, bool) (panicky, error) { bRuns.Add(1); return 13, nil })
	eventually(t, "B joined", func() bool { return a.Stats().ModifyJoined == 2 })
	releaseX()
	if err := <-xres; err != nil {
		t.Fatalf("X: %v", err)
	}
	l, b := <-lres, <-bres
	if l.panicked != nil || l.err != nil {
		t.Errorf("L (value 2, which encodes) got panic %v, error %v; want success: the panic is B's value's", l.panicked, l.err)
	}
	if b.panicked != "unlucky" {
		t.Errorf("B got panic %v, error %v; want its value's codec panic", b.panicked, b.err)
	}
	if n := bRuns.Load(); n != 1 {
		t.Errorf("B's function ran %d times; want 1", n)
	}
}

// TestModifyCombinedFuncErrorFinalWhenCallLeaves: when a call leaves while
// an attempt's functions run, the attempt is applied again without it; a
// function that failed in it is not run again: its error is its call's.
func TestModifyCombinedFuncErrorFinalWhenCallLeaves(t *testing.T) {
	a := open[int](t, newMemory(t, nil), "ctx", nil)
	bg := context.Background()
	releaseX, xres := leaderThen(t, a, increment)
	// L leads the next attempt: L, C (fails the first time), D (slow, leaves).
	lres := make(chan error, 1)
	go func() { _, err := a.Modify(bg, "n", increment); lres <- err }()
	eventually(t, "L joined", func() bool { return a.Stats().ModifyJoined == 1 })
	var cRuns atomic.Int32
	cres := failingOnce(a, &cRuns)
	eventually(t, "C joined", func() bool { return a.Stats().ModifyJoined == 2 })
	dctx, dcancel := context.WithCancel(bg)
	defer dcancel()
	dIn, dRelease, dres := slowModify(dctx, a)
	eventually(t, "D joined", func() bool { return a.Stats().ModifyJoined == 3 })
	releaseX()
	<-dIn // L's and C's functions ran; D's runs
	dcancel()
	if err := <-dres; !errors.Is(err, context.Canceled) {
		t.Errorf("D: %v; want context.Canceled", err)
	}
	dRelease()
	if err := <-xres; err != nil {
		t.Errorf("X: %v", err)
	}
	if err := <-lres; err != nil {
		t.Errorf("L: %v", err)
	}
	if err := <-cres; !errors.Is(err, errRefused) || cRuns.Load() != 1 {
		t.Errorf("C reported %v after %d runs of its function; want its function's error, after 1 run", err, cRuns.Load())
	}
}

// TestModifyCombinedCommitEndsWithEveryCtx: a commit that carries several
// calls outlives the leader's ctx, but not every carried call's: when the
// store stops answering, the calls return (with an error: the commit is in
// doubt) once all their ctxs ended, as a lone Modify would.
func TestModifyCombinedCommitEndsWithEveryCtx(t *testing.T) {
	lctx, lcancel := context.WithCancel(context.Background())
	defer lcancel()
	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	stuck := make(chan struct{})
	giveUp := make(chan struct{})
	defer close(giveUp)
	_, lres, bres := combinedPair(t, lctx, bctx, func(ctx context.Context, _ *contextd.Context[int], do func() (backend.Head, error)) (backend.Head, error) {
		close(stuck)
		select {
		case <-ctx.Done():
			return backend.Head{}, ctx.Err()
		case <-giveUp: // the test's end
			return backend.Head{}, errors.New("test over")
		}
	})
	<-stuck
	lcancel()
	bcancel()
	for name, ch := range map[string]<-chan error{"L": lres, "B": bres} {
		select {
		case err := <-ch:
			if err == nil {
				t.Errorf("%s: nil; want an error (commit given up, in doubt)", name)
			}
		case <-time.After(time.Minute):
			t.Errorf("%s did not return within a minute of its ctx ending: the commit's ctx never ends", name)
		}
	}
}

// TestModifyNilContext: Modify with a nil ctx is refused with an error, and
// leaves no group behind that a later Modify of the key would wait for.
func TestModifyNilContext(t *testing.T) {
	a := open[int](t, newMemory(t, nil), "ctx", nil)
	//lint:ignore SA1012 the misuse under test
	if _, err := a.Modify(nil, "m", increment); err == nil { //nolint:staticcheck
		t.Error("Modify with a nil ctx succeeded; want an error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.Modify(ctx, "m", increment); err != nil {
		t.Errorf("a later Modify of the key: %v", err)
	}
}

// TestModifyCombinedLockWaitOneBudget: calls that wait together for a key
// another holder keeps locked give up together when the leader's lock
// wait (MaxRetries pauses of RetryDelay) is spent: a call that waited
// through it is not handed a budget of its own, which would make the k-th
// call wait k budgets. The leader's retries wait until every call has
// joined (a commit hook), so however slow the machine, all of them wait
// within the first budget.
func TestModifyCombinedLockWaitOneBudget(t *testing.T) {
	w := &hookedCommits{Backend: newMemory(t, nil)}
	allJoined := make(chan struct{})
	w.hook = func(_ context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		if n >= 2 { // a retry: only once every call waits with the leader
			<-allJoined
		}
		return do()
	}
	var waits atomic.Int32
	waiting := make(chan struct{}, 1)
	trace := &contextd.Trace{LockWaitStart: func(ctx context.Context, key string) (context.Context, func(error)) {
		waits.Add(1)
		select {
		case waiting <- struct{}{}:
		default:
		}
		return ctx, func(error) {}
	}}
	a := open[int](t, w, "ctx", &contextd.Options{RetryDelay: 5 * time.Millisecond, MaxRetries: 20, Trace: trace})
	b := open[int](t, w.Backend, "ctx", nil)
	bg := context.Background()
	if _, err := b.AcquireLock(bg, contextd.LockOptions{Key: "n", LockTimeout: time.Hour}); err != nil {
		t.Fatal(err)
	}
	const n = 6
	res := make(chan error, n)
	for i := range n {
		go func() {
			_, err := a.Modify(bg, "n", increment)
			res <- err
		}()
		if i == 0 {
			<-waiting
		} else {
			eventually(t, "joined", func() bool { return a.Stats().ModifyJoined == uint64(i) })
		}
	}
	close(allJoined)
	for range n {
		if err := <-res; !errors.Is(err, contextd.ErrLockNotAcquired) {
			t.Errorf("err %v; want ErrLockNotAcquired", err)
		}
	}
	if w := waits.Load(); w != 1 {
		t.Errorf("%d lock waits for %d calls that waited together; want 1", w, n)
	}
}
