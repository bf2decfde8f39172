package conformance

import (
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/contextd-go/contextd/contextd"
)

// testContextAPI runs the Context features built on conditions and the
// change log against the backend: conditional writes and Create from many
// instances at once, transactions mixing puts, deletes and conditions, and
// a watch that resumes from a revision.
func testContextAPI(t *testing.T, h Harness) {
	t.Run("CreateOneWinner", func(t *testing.T) {
		t.Parallel()
		cs := instances[int](t, h, uniqueName(t), 3, nil)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := cs[i%3].Create(t.Context(), "leader", i)
				switch {
				case err == nil:
					wins.Add(1)
				case !errors.Is(err, contextd.ErrConflict):
					t.Errorf("Create: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d of 12 concurrent Creates of one key succeeded, want exactly 1", wins.Load())
		}
	})

	t.Run("IfRevisionLosesNoUpdate", func(t *testing.T) {
		t.Parallel()
		cs := instances[int](t, h, uniqueName(t), 3, nil)
		ctx := t.Context()
		var acked atomic.Int64
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for acked.Load() < 30 {
					e, _, err := c.GetEntry(ctx, "n", contextd.Fresh())
					if err != nil {
						t.Errorf("instance %d: GetEntry: %v", i, err)
						return
					}
					switch err := c.UpdateContext(ctx, "n", e.Value+1, contextd.IfRevision(e.Revision)); {
					case err == nil:
						acked.Add(1)
					case !errors.Is(err, contextd.ErrConflict):
						t.Errorf("instance %d: UpdateContext IfRevision: %v", i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		got, _, err := cs[0].Get(ctx, "n", contextd.Fresh())
		if err != nil || int64(got) != acked.Load() {
			t.Fatalf("counter %d (%v) after %d acknowledged compare-and-set increments", got, err, acked.Load())
		}
	})

	t.Run("TxnMixesPutsDeletesConditions", func(t *testing.T) {
		t.Parallel()
		name := uniqueName(t)
		cs := instances[int](t, h, name, 2, nil)
		ctx := t.Context()
		if err := cs[0].TransactionalUpdate(ctx, map[string]int{"a": 1, "b": 2, "guard": 7}); err != nil {
			t.Fatal(err)
		}
		guard, _, err := cs[0].GetEntry(ctx, "guard")
		if err != nil {
			t.Fatal(err)
		}
		rev, err := cs[0].Txn().Put("a", 10).Delete("b").Put("c", 3).IfRevision("guard", guard.Revision).Commit(ctx)
		if err != nil {
			t.Fatalf("Txn.Commit: %v", err)
		}
		waitRevision(t, rev, cs...)
		want := map[string]int{"a": 10, "c": 3, "guard": 7}
		if got, _ := cs[1].GetContext(ctx); !maps.Equal(got, want) {
			t.Errorf("after the transaction the other instance has %v, want %v", got, want)
		}
		if _, err := cs[1].Txn().Put("a", 0).IfRevision("guard", guard.Revision+1).Commit(ctx); !errors.Is(err, contextd.ErrConflict) {
			t.Errorf("Txn with a condition that does not hold = %v, want ErrConflict", err)
		}
		if got, _ := storeState[int](t, h, name); !maps.Equal(got, want) {
			t.Errorf("a refused transaction changed the store to %v", got)
		}
	})

	t.Run("WatchFromRevision", func(t *testing.T) {
		t.Parallel()
		name := uniqueName(t)
		cs := instances[int](t, h, name, 2, nil)
		ctx := t.Context()
		var revs []uint64
		for i := range 6 {
			if err := cs[0].UpdateContext(ctx, "k", i); err != nil {
				t.Fatal(err)
			}
			revs = append(revs, cs[0].Revision())
		}
		waitRevision(t, revs[5], cs[1])
		w := cs[1].Watch(ctx, contextd.FromRevision(revs[2]))
		if !h.Capabilities.ChangeLog {
			// Without a log: a Reset and the current state.
			if ch := nextChange(t, w); !ch.Initial || ch.Value != 5 {
				t.Fatalf("FromRevision without a change log began with %+v, want the current state", ch)
			}
			return
		}
		for i := 3; i < 6; i++ {
			if ch := nextChange(t, w); ch.Revision != revs[i] || ch.Value != i {
				t.Fatalf("replayed %+v, want k=%d at revision %d", ch, i, revs[i])
			}
		}
		if ch := nextChange(t, w); !ch.UpToDate {
			t.Fatalf("after the replay: %+v, want UpToDate", ch)
		}
		if err := cs[0].UpdateContext(ctx, "k", 6); err != nil {
			t.Fatal(err)
		}
		if ch := nextChange(t, w); ch.Value != 6 || ch.Revision != revs[5]+1 {
			t.Fatalf("live change %+v, want k=6 at revision %d", ch, revs[5]+1)
		}
	})
}
