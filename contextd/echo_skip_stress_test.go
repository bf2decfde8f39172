package contextd_test

import (
	"context"
	"sync"
	"testing"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
)

// TestEchoSkipConcurrentWritersNoSpuriousGaps: two instances on one memory
// backend, each writing from two goroutines: no event is lost, so neither
// should count a gap or catch up (before the change, every own commit's
// echo kept its place in the subscription).
func TestEchoSkipConcurrentWritersNoSpuriousGaps(t *testing.T) {
	m := newMemory(t, nil)
	opts := &contextd.Options{ResyncInterval: -1}
	a := open[int](t, m, "ctx", opts)
	b := open[int](t, m, "ctx", opts)
	ctx := context.Background()
	const n = 300
	writeConcurrently(t, ctx, n, a, b, a, b)
	eventually(t, "both at the last revision", func() bool { return a.Revision() == 4*n && b.Revision() == 4*n })
	sa, sb := a.Stats(), b.Stats()
	t.Logf("a: %+v", sa)
	t.Logf("b: %+v", sb)
	if sa.Gaps+sb.Gaps != 0 || sa.LogCatchUps+sb.LogCatchUps != 0 {
		t.Fatalf("spurious gaps: a %d (%d catch-ups), b %d (%d catch-ups) in %d writes", sa.Gaps, sa.LogCatchUps, sb.Gaps, sb.LogCatchUps, 4*n)
	}
}

// TestEchoSkipConcurrentWritersWatchSeesEveryRevision: the same without a
// change log, watching on each instance: every revision reaches both
// watches, the writer's own among them (one key per write, so revision r
// is one change). A spurious gap is repaired by a snapshot there, which
// leaves out the writer's own revision that the skipped echo would have
// brought.
func TestEchoSkipConcurrentWritersWatchSeesEveryRevision(t *testing.T) {
	// A buffer that cannot overflow: no event is lost.
	m := newMemory(t, &memory.Options{DisableChangeLog: true, SubscriberBuffer: 1 << 16})
	const n = 300
	opts := &contextd.Options{ResyncInterval: -1, WatchBuffer: 8 * n}
	a := open[int](t, m, "ctx", opts)
	b := open[int](t, m, "ctx", opts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watches := []<-chan contextd.Change[int]{a.Watch(ctx), b.Watch(ctx)}
	writeConcurrently(t, ctx, n, a, b, a, b)
	for i, w := range watches {
		var last uint64
		for last < 4*n {
			ch := next(t, w)
			if ch.Reset || ch.Revision != last+1 {
				t.Fatalf("watch %d: after revision %d got %+v: revisions missing (stats a %+v, b %+v)", i, last, ch, a.Stats(), b.Stats())
			}
			last = ch.Revision
		}
	}
}

// TestEchoSkipConcurrentModifyWatchContiguous: combined Modify calls from two
// instances and several goroutines each: every increment lands once, and
// with the change log every revision reaches the writers' watches in order.
func TestEchoSkipConcurrentModifyWatchContiguous(t *testing.T) {
	m := newMemory(t, &memory.Options{SubscriberBuffer: 1 << 16})
	const n, workers = 100, 6
	opts := &contextd.Options{ResyncInterval: -1, WatchBuffer: 4 * n * workers}
	a := open[int](t, m, "ctx", opts)
	b := open[int](t, m, "ctx", opts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watches := []<-chan contextd.Change[int]{a.Watch(ctx), b.Watch(ctx)}
	var wg sync.WaitGroup
	for i := range workers {
		c := a
		if i%2 == 1 {
			c = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if _, err := c.Modify(ctx, "n", func(v int, _ bool) (int, error) { return v + 1, nil }); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	head, err := m.Revision(ctx, "ctx")
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range watches {
		var last uint64
		for last < head.Revision {
			ch := next(t, w)
			if ch.Reset || ch.Revision != last+1 {
				t.Fatalf("watch %d: after revision %d got %+v", i, last, ch)
			}
			last = ch.Revision
		}
	}
	for _, c := range []*contextd.Context[int]{a, b} {
		eventually(t, "the last revision", func() bool { return c.Revision() == head.Revision })
		if v, _, err := c.Get(ctx, "n"); err != nil || v != n*workers {
			t.Fatalf("n = %d, %v; want %d", v, err, n*workers)
		}
	}
}

// writeConcurrently writes key k n times from each of cs (a Context
// listed twice writes from two goroutines) and returns when all are done.
func writeConcurrently(t *testing.T, ctx context.Context, n int, cs ...*contextd.Context[int]) {
	t.Helper()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			for i := range n {
				if err := c.UpdateContext(ctx, "k", i); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
