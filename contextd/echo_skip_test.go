package contextd_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/contextd"
)

// Review of the memory backend's skipped own echoes (SkipOwnEchoes): what
// happens when another instance's event reaches a writer's read loop
// between its commit and the commit's reply.

// nextCounting hands out subscriptions that count their reader's calls of
// Next, so a test can tell that a read loop has handled every message it
// took (it asks for the next one only then). SkipOwnEchoes is passed on.
type nextCounting struct {
	*hookedCommits
	mu   sync.Mutex
	subs []*countingSub
}

type countingSub struct {
	broadcaster.Subscription
	nexts atomic.Int32
	// msgs counts the messages with a payload Next returned.
	msgs atomic.Int32
	// fail makes the first Next fail (set before the subscription is
	// handed out).
	fail bool
}

func (s *countingSub) Next(ctx context.Context) (broadcaster.Message, error) {
	if s.nexts.Add(1) == 1 && s.fail {
		return broadcaster.Message{}, errors.New("test: subscription broken")
	}
	m, err := s.Subscription.Next(ctx)
	if err == nil && m.Payload != nil {
		s.msgs.Add(1)
	}
	return m, err
}

func (s *countingSub) SkipOwnEchoes(origin string) {
	s.Subscription.(interface{ SkipOwnEchoes(string) }).SkipOwnEchoes(origin)
}

func (n *nextCounting) Subscribe(ctx context.Context, ch string) (broadcaster.Subscription, error) {
	s, err := n.hookedCommits.Subscribe(ctx, ch)
	if err != nil {
		return nil, err
	}
	cs := &countingSub{Subscription: s}
	n.mu.Lock()
	n.subs = append(n.subs, cs)
	n.mu.Unlock()
	return cs, nil
}

func (n *nextCounting) sub(i int) *countingSub {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.subs[i]
}

// raceOthersEvent opens a and b on one memory backend (a subscribes
// first) and makes a's first commit let b commit, and a's read loop take
// b's event and either handle it or wait for a's reply, before a's commit
// returns its reply.
func raceOthersEvent(t *testing.T, mopts *memory.Options) (a, b *contextd.Context[int], write func(key string, v int)) {
	t.Helper()
	w := &hookedCommits{Backend: newMemory(t, mopts)}
	nb := &nextCounting{hookedCommits: w}
	opts := &contextd.Options{ResyncInterval: -1}
	a = open[int](t, nb, "ctx", opts)
	b = open[int](t, nb, "ctx", opts)
	var waiting atomic.Bool
	contextd.SetAwaitingOwnReply(a, func() { waiting.Store(true) })
	ctx := context.Background()
	w.hook = func(_ context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		if n != 1 {
			return do()
		}
		h, err := do()
		if err != nil {
			return h, err
		}
		if err := b.UpdateContext(ctx, "k", 2); err != nil {
			t.Errorf("b: UpdateContext: %v", err)
			return h, err
		}
		// a's read loop took b's event and waits for a's reply below it,
		// or asked for the next message: it has done with b's event,
		// whatever it made of it.
		eventually(t, "a's read loop handled b's event or waits for a's reply", func() bool {
			return waiting.Load() || nb.sub(0).nexts.Load() >= 2
		})
		return h, nil
	}
	return a, b, func(key string, v int) {
		if err := a.UpdateContext(ctx, key, v); err != nil {
			t.Fatalf("a: UpdateContext: %v", err)
		}
	}
}

// TestEchoSkipOthersEventBeforeOwnReplyIsNoGap: with its own echo left out,
// a writer whose read loop gets another instance's event at N+1 before its
// own commit's reply at N has applied N finds a revision gap that is none,
// counts it (Stats.Gaps, Trace.Gap "gap") and catches up from the log.
// Before the change the echo of N came first in the subscription.
func TestEchoSkipOthersEventBeforeOwnReplyIsNoGap(t *testing.T) {
	a, _, write := raceOthersEvent(t, nil)
	write("k", 1)
	eventually(t, "a has b's write", func() bool { return a.Revision() == 2 })
	if v, _, err := a.Get(context.Background(), "k"); err != nil || v != 2 {
		t.Fatalf("a: k = %d, %v; want 2", v, err)
	}
	if s := a.Stats(); s.Gaps != 0 || s.LogCatchUps != 0 || s.Snapshots != 1 {
		t.Fatalf("a's stats %+v: want no gap, no catch-up and only the first snapshot (own echo skipped taken for a lost event)", s)
	}
}

// TestEchoSkipOthersEventBeforeOwnReplyWatch: the same race without a change
// log: the spurious gap is repaired by a snapshot, which collapses the
// writer's own revision, so a Watch on the writer misses its own write,
// and the writer's reply then finds its revision passed without an echo
// (resync) and loads a second snapshot.
func TestEchoSkipOthersEventBeforeOwnReplyWatch(t *testing.T) {
	a, _, write := raceOthersEvent(t, &memory.Options{DisableChangeLog: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := a.Watch(ctx)
	write("k", 1)
	for rev, want := range []int{1, 2} {
		ch := next(t, watch)
		if ch.Reset || ch.Key != "k" || ch.Value != want || ch.Revision != uint64(rev+1) {
			t.Fatalf("a's watch: change %+v, want k = %d at revision %d", ch, want, rev+1)
		}
	}
	if s := a.Stats(); s.Gaps != 0 || s.Snapshots != 1 {
		t.Fatalf("a's stats %+v: want no gap and only the first snapshot", s)
	}
}

// TestInDoubtCommitLandingLateReachesCopyByResync: the commit's error
// comes before the commit itself is made (a wrapper that gives up waiting
// for a call it leaves running, as timeout wrappers do). The one catch-up
// the error starts finds nothing, and with its echo skipped on the memory
// backend nothing but the periodic check brings the write in (Options.
// ResyncInterval says so); on a store that sends echoes the echo does.
func TestInDoubtCommitLandingLateReachesCopyByResync(t *testing.T) {
	gate, landed := make(chan struct{}), make(chan error, 1)
	w := &hookedCommits{Backend: newMemory(t, nil)}
	w.hook = func(_ context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		if n != 2 {
			return do()
		}
		go func() {
			<-gate
			_, err := do()
			landed <- err
		}()
		return backend.Head{}, errReplyLost
	}
	a := open[int](t, w, "ctx", &contextd.Options{ResyncInterval: 20 * time.Millisecond})
	ctx := context.Background()
	if err := a.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateContext(ctx, "k", 2); !errors.Is(err, errReplyLost) {
		t.Fatalf("UpdateContext = %v, want the lost reply's error", err)
	}
	eventually(t, "the catch-up the error started is done", func() bool { return a.Stats().LogCatchUps >= 1 })
	close(gate)
	if err := <-landed; err != nil {
		t.Fatalf("the late commit: %v", err)
	}
	eventually(t, "the copy holds the commit made after its error", func() bool {
		v, ok, err := a.Get(ctx, "k")
		return err == nil && ok && v == 2 && a.Revision() == 2
	})
}

// TestEchoSkipOwnRepliesOutOfOrder: two writes of one instance whose replies
// come back in the other order: the later one is read at once (read your
// writes), but the copy's revision and its watchers wait for the earlier
// one, and then see both in order.
func TestEchoSkipOwnRepliesOutOfOrder(t *testing.T) {
	second := make(chan error, 1)
	var a *contextd.Context[int]
	ctx := context.Background()
	w := &hookedCommits{Backend: newMemory(t, nil)}
	w.hook = func(_ context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		if n != 1 {
			return do()
		}
		h, err := do()
		go func() { second <- a.UpdateContext(ctx, "b", 2) }()
		if err := <-second; err != nil {
			t.Errorf("second write: %v", err)
		}
		if v, ok, err := a.Get(ctx, "b"); err != nil || !ok || v != 2 {
			t.Errorf("b = %d, %v, %v after its write returned, want 2", v, ok, err)
		}
		if r := a.Revision(); r != 0 {
			t.Errorf("Revision = %d with revision 1 not applied yet, want 0", r)
		}
		return h, err
	}
	a = open[int](t, w, "ctx", &contextd.Options{ResyncInterval: -1})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch := a.Watch(wctx)
	if err := a.UpdateContext(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"a", "b"} {
		ch := next(t, watch)
		if ch.Key != key || ch.Value != i+1 || ch.Revision != uint64(i+1) {
			t.Fatalf("watch: %+v, want %s = %d at revision %d", ch, key, i+1, i+1)
		}
	}
	if r := a.Revision(); r != 2 {
		t.Fatalf("Revision = %d, want 2", r)
	}
	if s := a.Stats(); s.Gaps != 0 || s.LogCatchUps != 0 || s.Snapshots != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestEchoSkipInDoubtThenLaterOwnCommit: a commit made whose reply is lost,
// then another commit of the same instance whose reply comes: the later
// one waits (held ahead) for the catch-up to bring the first in, and the
// watch sees both in order.
func TestEchoSkipInDoubtThenLaterOwnCommit(t *testing.T) {
	w := &hookedCommits{Backend: newMemory(t, nil)}
	w.hook = func(_ context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		h, err := do()
		if n == 1 && err == nil {
			return backend.Head{}, errReplyLost
		}
		return h, err
	}
	a := open[int](t, w, "ctx", &contextd.Options{ResyncInterval: -1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := a.Watch(ctx)
	if err := a.UpdateContext(ctx, "a", 1); !errors.Is(err, errReplyLost) {
		t.Fatalf("UpdateContext = %v", err)
	}
	if err := a.UpdateContext(ctx, "b", 2); err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"a", "b"} {
		ch := next(t, watch)
		if ch.Key != key || ch.Value != i+1 || ch.Revision != uint64(i+1) {
			t.Fatalf("watch: %+v, want %s = %d at revision %d", ch, key, i+1, i+1)
		}
	}
	eventually(t, "revision 2", func() bool { return a.Revision() == 2 })
}

// TestEchoSkipSkipSurvivesResubscribe: after its subscription fails and the
// read loop subscribes again, a Context still gets no echo of its own
// commits, and still gets the others'.
func TestEchoSkipSkipSurvivesResubscribe(t *testing.T) {
	w := &hookedCommits{Backend: newMemory(t, nil)}
	w.hook = func(_ context.Context, _ int32, do func() (backend.Head, error)) (backend.Head, error) { return do() }
	nb := &firstSubBroken{nextCounting: nextCounting{hookedCommits: w}}
	a := open[int](t, nb, "ctx", &contextd.Options{ResyncInterval: -1})
	b := open[int](t, w.Backend, "ctx", &contextd.Options{ResyncInterval: -1})
	ctx := context.Background()
	// The first subscription fails at its first Next; wait for the second.
	eventually(t, "a subscribed again", func() bool {
		nb.mu.Lock()
		defer nb.mu.Unlock()
		return len(nb.subs) == 2 && nb.subs[1].nexts.Load() >= 1
	})
	for i := range 10 {
		if err := a.UpdateContext(ctx, "a", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.UpdateContext(ctx, "b", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a has b's write", func() bool { return a.Revision() == 11 })
	if got := nb.sub(1).msgs.Load(); got != 1 {
		t.Fatalf("a's new subscription delivered %d messages, want 1 (b's): own echoes not skipped after resubscribing", got)
	}
}

// firstSubBroken is nextCounting whose first subscription fails at once.
type firstSubBroken struct {
	nextCounting
}

func (f *firstSubBroken) Subscribe(ctx context.Context, ch string) (broadcaster.Subscription, error) {
	s, err := f.nextCounting.Subscribe(ctx, ch)
	if err != nil {
		return nil, err
	}
	cs := s.(*countingSub)
	f.mu.Lock()
	first := len(f.subs) == 1
	f.mu.Unlock()
	cs.fail = first
	return cs, nil
}

// TestEchoSkipInDoubtCommitThenRollbackReadYourWrites: a commit whose reply
// was lost is brought in by a catch-up (its event noted as an echo, whose
// reply never comes); the store then goes back before it (a failover to a
// replica that missed it) and hands the same revision to the next write,
// whose reply is taken for that old echo's (a duplicate): the write that
// just returned is not in the copy. Not new with skipped echoes: an echo
// delivered for the in-doubt commit was noted the same way.
func TestEchoSkipInDoubtCommitThenRollbackReadYourWrites(t *testing.T) {
	w := &hookedCommits{Backend: newMemory(t, nil)}
	w.hook = func(_ context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		h, err := do()
		if n == 2 && err == nil {
			return backend.Head{}, errReplyLost
		}
		return h, err
	}
	a := open[int](t, w, "ctx", &contextd.Options{ResyncInterval: -1})
	ctx := context.Background()
	if err := a.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	restore := w.Checkpoint("ctx")
	if err := a.UpdateContext(ctx, "k", 2); !errors.Is(err, errReplyLost) {
		t.Fatalf("UpdateContext = %v", err)
	}
	eventually(t, "the in-doubt commit reached the copy", func() bool { return a.Revision() == 2 })
	restore()
	if err := a.UpdateContext(ctx, "j", 3); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := a.Get(ctx, "j"); err != nil || !ok || v != 3 {
		t.Fatalf("j = %d, %v, %v right after its write returned, want 3 (read your writes)", v, ok, err)
	}
}

// TestEchoSkipReapBeforeOwnCommitReachesWriter: a write that finds an expired
// key makes the store delete it first, in a commit of its own with no
// origin: that event is still delivered to the writer (only its own commit
// is skipped), and its watch sees the delete, then its write, in order.
func TestEchoSkipReapBeforeOwnCommitReachesWriter(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	m := newMemory(t, &memory.Options{Clock: func() time.Time { return time.Unix(0, now.Load()) }})
	a := open[int](t, m, "ctx", &contextd.Options{ResyncInterval: -1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.UpdateContext(ctx, "k", 1, contextd.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	watch := a.Watch(ctx)
	now.Add(int64(2 * time.Hour))
	if err := a.UpdateContext(ctx, "j", 2); err != nil {
		t.Fatal(err)
	}
	if ch := next(t, watch); ch.Key != "k" || !ch.Deleted || ch.Revision != 2 || ch.Origin != "" {
		t.Fatalf("watch: %+v, want the store's delete of k at revision 2", ch)
	}
	if ch := next(t, watch); ch.Key != "j" || ch.Value != 2 || ch.Revision != 3 {
		t.Fatalf("watch: %+v, want j = 2 at revision 3", ch)
	}
	eventually(t, "revision 3", func() bool { return a.Revision() == 3 })
	if _, ok, _ := a.Get(ctx, "k"); ok {
		t.Fatal("k still in the copy")
	}
	if s := a.Stats(); s.Gaps != 0 {
		t.Fatalf("stats %+v", s)
	}
}
