package contextd_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
)

// converged waits until c holds exactly the store's state.
func converged[T comparable](t *testing.T, b *memory.Backend, c *contextd.Context[T]) {
	t.Helper()
	ctx := context.Background()
	eventually(t, "the instance holds the store's state", func() bool {
		snap, err := b.Load(ctx, c.Name())
		if err != nil {
			t.Fatal(err)
		}
		if c.Revision() != snap.Revision {
			return false
		}
		got, err := c.GetContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]T{}
		for _, e := range snap.Entries {
			v, _, err := c.Get(ctx, e.Key, contextd.Fresh())
			if err != nil {
				t.Fatal(err)
			}
			want[e.Key] = v
		}
		return maps.Equal(got, want)
	})
}

func TestLossSignalResyncs(t *testing.T) {
	b := newMemory(t, nil)
	w := open[int](t, b, "ctx", nil)
	r := open[int](t, b, "ctx", nil)
	ctx := context.Background()
	for i := range 10 {
		if err := w.UpdateContext(ctx, fmt.Sprint(i%3), i); err != nil {
			t.Fatal(err)
		}
		if i == 5 {
			b.BreakSubscriptions()
		}
	}
	converged(t, b, r)
	if r.Stats().Losses == 0 {
		t.Error("no loss counted after BreakSubscriptions")
	}
}

func TestOverflowResyncs(t *testing.T) {
	for _, log := range []bool{true, false} {
		t.Run(fmt.Sprintf("changelog=%v", log), func(t *testing.T) {
			b := newMemory(t, &memory.Options{SubscriberBuffer: 2, DisableChangeLog: !log})
			w := open[int](t, b, "ctx", nil)
			r := open[int](t, b, "ctx", nil)
			ctx := context.Background()
			if err := w.TransactionalUpdate(ctx, map[string]int{"a": 0, "b": 0}); err != nil {
				t.Fatal(err)
			}
			for i := range 200 {
				if err := w.TransactionalUpdate(ctx, map[string]int{"a": i, "b": i}); err != nil {
					t.Fatal(err)
				}
			}
			converged(t, b, r)
		})
	}
}

func TestGapFilledFromLogOrSnapshot(t *testing.T) {
	for _, log := range []bool{true, false} {
		t.Run(fmt.Sprintf("changelog=%v", log), func(t *testing.T) {
			b := newMemory(t, &memory.Options{DisableChangeLog: !log})
			w := open[string](t, b, "ctx", &contextd.Options{ResyncInterval: -1})
			r := open[string](t, b, "ctx", &contextd.Options{ResyncInterval: -1})
			ctx := context.Background()
			// A commit whose event is never published, as when a writer
			// dies between commit and publish on a generic backend.
			if _, err := b.Commit(ctx, "ctx", backend.Batch{Ops: []backend.Op{{Key: "silent", Value: []byte(`"s"`)}}, Codec: "json"}); err != nil {
				t.Fatal(err)
			}
			before := r.Stats()
			if err := w.UpdateContext(ctx, "loud", "l"); err != nil {
				t.Fatal(err)
			}
			converged(t, b, r)
			after := r.Stats()
			if after.Gaps == before.Gaps {
				t.Error("the gap was not noticed")
			}
			if log && after.LogCatchUps == before.LogCatchUps {
				t.Error("the gap was not filled from the change log")
			}
			if !log && after.Snapshots == before.Snapshots {
				t.Error("the gap was not filled from a snapshot")
			}
		})
	}
}

func TestPeriodicCheckFindsSilentLoss(t *testing.T) {
	b := newMemory(t, nil)
	r := open[string](t, b, "ctx", &contextd.Options{ResyncInterval: 10 * time.Millisecond})
	if _, err := b.Commit(context.Background(), "ctx", backend.Batch{Ops: []backend.Op{{Key: "silent", Value: []byte(`"s"`)}}, Codec: "json"}); err != nil {
		t.Fatal(err)
	}
	converged(t, b, r)
}

func TestWipeIsANewEpoch(t *testing.T) {
	b := newMemory(t, nil)
	w := open[string](t, b, "ctx", nil)
	r := open[string](t, b, "ctx", &contextd.Options{ResyncInterval: -1})
	ctx := context.Background()
	if err := w.TransactionalUpdate(ctx, map[string]string{"old1": "a", "old2": "b"}); err != nil {
		t.Fatal(err)
	}
	converged(t, b, r)
	watch := r.Watch(ctx)
	b.Wipe("ctx")
	if err := w.UpdateContext(ctx, "new", "n"); err != nil {
		t.Fatal(err)
	}
	converged(t, b, r)
	converged(t, b, w)
	if m, _ := r.GetContext(ctx); len(m) != 1 || m["new"] != "n" {
		t.Fatalf("after a wipe the reader holds %v, want only the new key", m)
	}
	if ch := <-watch; !ch.Reset {
		t.Errorf("watcher got %+v after a wipe, want a Reset", ch)
	}
}

func TestRevisionGoingBackwards(t *testing.T) {
	b := newMemory(t, nil)
	w := open[int](t, b, "ctx", &contextd.Options{ResyncInterval: -1})
	r := open[int](t, b, "ctx", &contextd.Options{ResyncInterval: 10 * time.Millisecond})
	ctx := context.Background()
	if err := w.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	restore := b.Checkpoint("ctx") // a replica that has revision 1 only
	for i := 2; i <= 4; i++ {
		if err := w.UpdateContext(ctx, "k", i); err != nil {
			t.Fatal(err)
		}
	}
	converged(t, b, r)
	restore() // failover: same epoch, revision back to 1
	converged(t, b, r)
	if v, _, _ := r.Get(ctx, "k"); v != 1 {
		t.Fatalf("after the store went back the reader has k=%d, want 1", v)
	}
	// The writer's next commit reuses revision 2; the writer must still
	// read its own write, and the reader must apply it.
	if err := w.UpdateContext(ctx, "k", 20); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := w.Get(ctx, "k"); v != 20 {
		t.Fatalf("writer reads k=%d after its write on a rolled-back store, want 20", v)
	}
	converged(t, b, r)
	converged(t, b, w)
}

// After a failover that lost writes, the store hands out their revisions
// again. An instance that still holds a lost write must not have Modify
// accept it as current because the key's revision matches: the commit id
// in the condition tells the writes apart (a lost update the Redis
// failover history found).
func TestModifyAfterFailoverReusedRevision(t *testing.T) {
	b := newMemory(t, nil)
	a := open[int](t, b, "ctx", &contextd.Options{ResyncInterval: -1})
	ctx := context.Background()
	if err := a.UpdateContext(ctx, "n", 1); err != nil {
		t.Fatal(err)
	}
	restore := b.Checkpoint("ctx") // a replica that has revision 1 only
	inc := func(cur int, _ bool) (int, error) { return cur + 1, nil }
	if _, err := a.Modify(ctx, "n", inc); err != nil { // n=2 at revision 2, then lost
		t.Fatal(err)
	}
	restore()
	// Another writer's commit takes revision 2 on the new history, and a
	// does not hear of it.
	if _, err := b.Commit(ctx, "ctx", backend.Batch{Ops: []backend.Op{{Key: "n", Value: []byte("101")}}}); err != nil {
		t.Fatal(err)
	}
	got, err := a.Modify(ctx, "n", inc)
	if err != nil {
		t.Fatal(err)
	}
	if got != 102 {
		t.Errorf("Modify after a failover returned %d, want 102: it added to a write the store lost", got)
	}
	e, err := b.Get(ctx, "ctx", "n")
	if err != nil || string(e.Value) != "102" {
		t.Errorf("store holds n=%s, %v; want 102", e.Value, err)
	}
}

func TestInvalidEventIgnoredAndCounted(t *testing.T) {
	b := newMemory(t, nil)
	w := open[string](t, b, "ctx", nil)
	r := open[string](t, b, "ctx", nil)
	ctx := context.Background()
	if err := w.UpdateContext(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, backend.DefaultChannel("ctx"), []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the invalid event is counted", func() bool { return r.Stats().InvalidEvents == 1 })
	if err := w.UpdateContext(ctx, "k", "v2"); err != nil {
		t.Fatal(err)
	}
	converged(t, b, r)
}

func TestLargeValuesAreFetched(t *testing.T) {
	b := newMemory(t, nil)
	w := open[string](t, b, "ctx", &contextd.Options{EventValueLimit: 8})
	r := open[string](t, b, "ctx", nil)
	ctx := context.Background()
	big := fmt.Sprintf("%0100d", 7)
	if err := w.TransactionalUpdate(ctx, map[string]string{"big": big, "small": "s"}); err != nil {
		t.Fatal(err)
	}
	converged(t, b, r)
	if v, _, _ := r.Get(ctx, "big"); v != big {
		t.Fatalf("big value not fetched: %q", v)
	}
}

func TestFailClosedReads(t *testing.T) {
	b := memory.New(nil)
	strict := open[int](t, b, "ctx", &contextd.Options{FailClosed: true, ResyncInterval: 10 * time.Millisecond})
	lenient := open[int](t, b, "ctx", &contextd.Options{ResyncInterval: 10 * time.Millisecond})
	ctx := context.Background()
	if err := strict.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	converged(t, b, lenient)
	_ = b.Close() // the backend becomes unreachable
	eventually(t, "the strict instance refuses reads", func() bool {
		_, _, err := strict.Get(ctx, "k")
		return errors.Is(err, contextd.ErrStale)
	})
	if _, err := strict.GetContext(ctx); !errors.Is(err, contextd.ErrStale) {
		t.Errorf("GetContext of a stale strict instance = %v, want ErrStale", err)
	}
	eventually(t, "the lenient instance notices", func() bool {
		_, err := lenient.GetContext(ctx)
		return err == nil && lenient.Stats().Snapshots >= 1
	})
	if v, ok, err := lenient.Get(ctx, "k"); v != 1 || !ok || err != nil {
		t.Errorf("lenient Get while unreachable = %v, %v, %v; want the last known value", v, ok, err)
	}
}

func TestSyncAndFreshAreLinearizable(t *testing.T) {
	b := newMemory(t, nil)
	r := open[string](t, b, "ctx", &contextd.Options{ResyncInterval: -1})
	ctx := context.Background()
	// A write no event announces: only the store knows.
	if _, err := b.Commit(ctx, "ctx", backend.Batch{Ops: []backend.Op{{Key: "k", Value: []byte(`"v"`)}}, Codec: "json"}); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := r.Get(ctx, "k", contextd.Fresh()); v != "v" || !ok || err != nil {
		t.Fatalf("Fresh Get = %q, %v, %v", v, ok, err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := r.Get(ctx, "k"); v != "v" || !ok {
		t.Fatalf("Get after Sync = %q, %v", v, ok)
	}
	if r.Lag() != 0 {
		t.Errorf("Lag after Sync = %d", r.Lag())
	}
}
