package contextd_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/contextd"
)

// next returns the next change of a watch, failing the test after a while.
func next[T any](t *testing.T, w <-chan contextd.Change[T]) contextd.Change[T] {
	t.Helper()
	select {
	case ch, ok := <-w:
		if !ok {
			t.Fatal("watch closed")
		}
		return ch
	case <-time.After(10 * time.Second):
		t.Fatal("no change within 10 s")
	}
	panic("unreachable")
}

func TestWatchWithInitialOnEmptyContext(t *testing.T) {
	c := open[int](t, newMemory(t, nil), "ctx", nil)
	w := c.Watch(t.Context(), contextd.WithInitial())
	if ch := next(t, w); !ch.UpToDate || ch.Revision != 0 {
		t.Fatalf("first change of WithInitial on an empty context = %+v, want the UpToDate marker at revision 0", ch)
	}
	if err := c.UpdateContext(t.Context(), "k", 1); err != nil {
		t.Fatal(err)
	}
	if ch := next(t, w); ch.Key != "k" || ch.Initial || ch.Revision != 1 {
		t.Fatalf("live change = %+v", ch)
	}
}

func TestWatchWithInitialAndPrefix(t *testing.T) {
	c := open[int](t, newMemory(t, nil), "ctx", nil)
	ctx := t.Context()
	if err := c.TransactionalUpdate(ctx, map[string]int{"user:a": 1, "user:b": 2, "other": 3}); err != nil {
		t.Fatal(err)
	}
	w := c.Watch(ctx, contextd.WithInitial(), contextd.KeyPrefix("user:"))
	got := map[string]int{}
	for {
		ch := next(t, w)
		if ch.UpToDate {
			if ch.Revision != 1 {
				t.Fatalf("UpToDate at revision %d, want 1", ch.Revision)
			}
			break
		}
		if !ch.Initial || ch.Revision != 1 {
			t.Fatalf("initial change = %+v", ch)
		}
		got[ch.Key] = ch.Value
	}
	if len(got) != 2 || got["user:a"] != 1 || got["user:b"] != 2 {
		t.Fatalf("initial state %v, want the two user: keys", got)
	}
	if err := c.UpdateContext(ctx, "other", 4); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateContext(ctx, "user:c", 5); err != nil {
		t.Fatal(err)
	}
	if ch := next(t, w); ch.Key != "user:c" || ch.Revision != 3 {
		t.Fatalf("live change = %+v, want user:c at 3 (other filtered out)", ch)
	}
}

func TestWatchKeyFilter(t *testing.T) {
	c := open[int](t, newMemory(t, nil), "ctx", nil)
	ctx := t.Context()
	w := c.Watch(ctx, contextd.Key("a"))
	for _, k := range []string{"ab", "b", "a"} {
		if err := c.UpdateContext(ctx, k, 1); err != nil {
			t.Fatal(err)
		}
	}
	if ch := next(t, w); ch.Key != "a" || ch.Revision != 3 {
		t.Fatalf("change = %+v, want only a", ch)
	}
}

// TestWatchFromRevisionResumes starts watches from every past revision
// while a writer goes on writing: each must see every revision after its
// start exactly once, in order — replayed from the change log, then live,
// with the UpToDate marker between — with no gap or duplicate at the seam.
func TestWatchFromRevisionResumes(t *testing.T) {
	c := open[int](t, newMemory(t, nil), "ctx", nil)
	writer := open[int](t, newMemory(t, nil), "other", nil) // unrelated load
	ctx := t.Context()
	for i := range 20 {
		if err := c.UpdateContext(ctx, "k", i); err != nil {
			t.Fatal(err)
		}
	}
	const total = 60
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 20; i < total; i++ {
			if err := c.UpdateContext(ctx, "k", i); err != nil {
				t.Error(err)
				return
			}
			_ = writer.UpdateContext(ctx, "x", i)
		}
	}()
	for from := uint64(0); from < 25; from += 3 {
		w := c.Watch(ctx, contextd.FromRevision(from))
		want, upToDate := from+1, false
		for want <= total || !upToDate {
			ch := next(t, w)
			switch {
			case ch.UpToDate:
				if upToDate {
					t.Fatalf("from %d: a second UpToDate", from)
				}
				upToDate = true
				if ch.Revision != want-1 {
					t.Fatalf("from %d: UpToDate at %d after revision %d", from, ch.Revision, want-1)
				}
			case ch.Reset || ch.Initial:
				t.Fatalf("from %d: %+v; the log reaches back, so no Reset", from, ch)
			case ch.Revision != want || ch.Value != int(want-1):
				t.Fatalf("from %d: got revision %d (value %d), want revision %d", from, ch.Revision, ch.Value, want)
			default:
				want++
			}
		}
		if !upToDate {
			t.Fatalf("from %d: no UpToDate marker", from)
		}
	}
	wg.Wait()
}

// TestWatchFromRevisionPastTheLog: when the change log no longer reaches
// back, the watcher gets a Reset and the current state, then the marker.
func TestWatchFromRevisionPastTheLog(t *testing.T) {
	c := open[int](t, newMemory(t, &memory.Options{ChangeLogSize: 4}), "ctx", nil)
	ctx := t.Context()
	for i := range 10 {
		if err := c.UpdateContext(ctx, fmt.Sprint(i%3), i); err != nil {
			t.Fatal(err)
		}
	}
	w := c.Watch(ctx, contextd.FromRevision(2))
	if ch := next(t, w); !ch.Reset {
		t.Fatalf("first change = %+v, want a Reset (the log holds 4 events)", ch)
	}
	state := map[string]int{}
	for {
		ch := next(t, w)
		if ch.UpToDate {
			if ch.Revision != 10 {
				t.Fatalf("UpToDate at %d, want 10", ch.Revision)
			}
			break
		}
		if !ch.Initial {
			t.Fatalf("change %+v before UpToDate is not Initial", ch)
		}
		state[ch.Key] = ch.Value
	}
	if len(state) != 3 || state["0"] != 9 || state["1"] != 7 || state["2"] != 8 {
		t.Fatalf("state after the Reset = %v", state)
	}
}
