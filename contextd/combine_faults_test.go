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
	hook func(n int32, do func() (backend.Head, error)) (backend.Head, error)
}

func (h *hookedCommits) Commit(ctx context.Context, name string, b backend.Batch) (backend.Head, error) {
	return h.hook(h.n.Add(1), func() (backend.Head, error) { return h.Backend.Commit(ctx, name, b) })
}

func (h *hookedCommits) CommitAndPublish(ctx context.Context, name string, b backend.Batch, ch string) (backend.Head, error) {
	return h.hook(h.n.Add(1), func() (backend.Head, error) { return h.Backend.CommitAndPublish(ctx, name, b, ch) })
}

var errReplyLost = errors.New("read tcp: connection reset by peer")

// combinedPair starts a leader L and a call B that joins it: the first
// commit (L alone) is refused with ErrLocked once B has joined, so the
// second carries both; second is that commit's hook.
func combinedPair(t *testing.T, lctx, bctx context.Context, second func(a *contextd.Context[int], do func() (backend.Head, error)) (backend.Head, error)) (a *contextd.Context[int], lres, bres <-chan error) {
	t.Helper()
	gate, first := make(chan struct{}), make(chan struct{})
	w := &hookedCommits{Backend: newMemory(t, nil)}
	w.hook = func(n int32, do func() (backend.Head, error)) (backend.Head, error) {
		switch n {
		case 1:
			close(first)
			<-gate
			return backend.Head{}, backend.ErrLocked
		case 2:
			return second(a, do)
		}
		return do()
	}
	a = open[int](t, w, "ctx", nil)
	inc := func(v int, _ bool) (int, error) { return v + 1, nil }
	l, b := make(chan error, 1), make(chan error, 1)
	go func() { _, err := a.Modify(lctx, "n", inc); l <- err }()
	<-first
	go func() { _, err := a.Modify(bctx, "n", inc); b <- err }()
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
	a, lres, bres := combinedPair(t, lctx, context.Background(), func(_ *contextd.Context[int], do func() (backend.Head, error)) (backend.Head, error) {
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
	_, lres, bres := combinedPair(t, context.Background(), bctx, func(a *contextd.Context[int], do func() (backend.Head, error)) (backend.Head, error) {
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

// TestModifyCombinedFuncErrorIsFinal: a joined call whose function fails
// gets that error, as a lone Modify would, even when the attempt then
// loses a race and the others' functions run again.
func TestModifyCombinedFuncErrorIsFinal(t *testing.T) {
	mem := newMemory(t, nil)
	other := open[int](t, mem, "ctx", nil)
	gate, first := make(chan struct{}), make(chan struct{})
	w := &hookedCommits{Backend: mem}
	w.hook = func(n int32, do func() (backend.Head, error)) (backend.Head, error) {
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
		_, err := a.Modify(bg, "n", func(v int, _ bool) (int, error) { return v + 1, nil })
		lres <- err
	}()
	<-first
	var runs atomic.Int32
	errRefused := errors.New("refused by fn")
	bres := make(chan error, 1)
	go func() {
		_, err := a.Modify(bg, "n", func(v int, _ bool) (int, error) {
			if runs.Add(1) == 1 {
				return 0, errRefused
			}
			return v + 100, nil
		})
		bres <- err
	}()
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
// leads a key's calls, outside their functions (here in the codec),
// reaches that goroutine, and the key's next Modify does not wait for the
// leader that is gone.
func TestModifyPanicOutsideFuncHandsGroupOn(t *testing.T) {
	a := open[panicky](t, newMemory(t, nil), "ctx", nil)
	func() {
		defer func() {
			if r := recover(); r != "unlucky" {
				t.Errorf("recovered %v; want the codec's panic", r)
			}
		}()
		_, _ = a.Modify(context.Background(), "k", func(panicky, bool) (panicky, error) { return 13, nil })
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.Modify(ctx, "k", func(panicky, bool) (panicky, error) { return 1, nil }); err != nil {
		t.Fatalf("the next Modify of the key: %v", err)
	}
}

// blockedLeader starts a Modify of "n" on a whose function waits for
// release; it returns once that function runs.
func blockedLeader(t *testing.T, a *contextd.Context[int]) (release func()) {
	t.Helper()
	in, unblock, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	go func() {
		defer close(done)
		_, _ = a.Modify(context.Background(), "n", func(v int, _ bool) (int, error) {
			if once.CompareAndSwap(false, true) {
				close(in)
			}
			<-unblock
			return v + 1, nil
		})
	}()
	<-in
	var closed atomic.Bool
	release = func() {
		if closed.CompareAndSwap(false, true) {
			close(unblock)
		}
	}
	t.Cleanup(func() { release(); <-done })
	return release
}

// bystanderLeaves starts C, a Modify of "n" on a that joins the calls
// waiting behind blockedLeader's (B has joined), lets the leader's function
// return — B then leads an attempt that carries C, and bIn tells that B's
// function runs — ends C's ctx, and checks that C returns at once with
// context.Canceled, without waiting for B's function.
func bystanderLeaves(t *testing.T, a *contextd.Context[int], releaseA func(), bIn <-chan struct{}) {
	t.Helper()
	cctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cres := make(chan error, 1)
	go func() {
		_, err := a.Modify(cctx, "n", func(v int, _ bool) (int, error) { return v + 1, nil })
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
	releaseA := blockedLeader(t, a)
	bIn, releaseB, bres := make(chan struct{}, 1), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := a.Modify(context.Background(), "n", func(v int, _ bool) (int, error) {
			select {
			case bIn <- struct{}{}:
			default:
			}
			<-releaseB
			return v + 1, nil
		})
		bres <- err
	}()
	eventually(t, "B joined", func() bool { return a.Stats().ModifyJoined == 1 })
	bystanderLeaves(t, a, releaseA, bIn)
	close(releaseB)
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
	releaseA := blockedLeader(t, a)
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
