package contextd

import (
	"context"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
)

// A watch's initial state is the copy's, which holds this instance's own
// writes above its applied revision (read-your-writes). The revisions
// below such a write arrive later; delivering their changes of that key
// would take the reader back (found by the history checker on Redis, when
// a watch's replay could not be served and it fell back to the state).
func TestInitialStateWithAnOwnWriteAheadDoesNotGoBack(t *testing.T) {
	c := newCache[int]("me")
	c.applyEvent(backend.Head{Epoch: "e1", Revision: 1, Commit: "c1"}, "other", []update[int]{{key: "k", value: 1}})
	if v := c.applyOwn(backend.Head{Epoch: "e1", Revision: 3, Commit: "c3", Parent: "c2"}, "me", []update[int]{{key: "k", value: 3}}); v != applied {
		t.Fatalf("applyOwn = %v", v)
	}

	w := &watcher[int]{out: make(chan Change[int], 16), opts: watchOptions{initial: true}, wake: make(chan struct{}, 1), onReset: func() {}, backfill: true}
	c.mu.Lock()
	c.watchers = append(c.watchers, w)
	at := c.current()
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cx := &Context[int]{}
	go w.run(ctx, make(chan struct{}), func(send func(Change[int]) bool) bool { return cx.backfill(ctx, w, at, send) })

	next := func() Change[int] {
		t.Helper()
		select {
		case ch := <-w.out:
			return ch
		case <-time.After(time.Minute):
			t.Fatal("no change")
		}
		return Change[int]{}
	}
	if ch := next(); !ch.Initial || ch.Key != "k" || ch.Value != 3 || ch.Revision != 3 {
		t.Fatalf("first change %+v, want the initial k=3 at revision 3", ch)
	}
	if ch := next(); !ch.UpToDate || ch.Revision != 1 {
		t.Fatalf("second change %+v, want UpToDate at 1", ch)
	}
	// Revision 2 (another writer's k=2) arrives, then revision 3 becomes
	// contiguous; then revision 4 writes another key.
	c.applyEvent(backend.Head{Epoch: "e1", Revision: 2, Commit: "c2", Parent: "c1"}, "other", []update[int]{{key: "k", value: 2}, {key: "j", value: 2}})
	c.applyEvent(backend.Head{Epoch: "e1", Revision: 4, Commit: "c4", Parent: "c3"}, "other", []update[int]{{key: "k", value: 4}})
	for _, want := range []Change[int]{{Key: "j", Value: 2, Revision: 2}, {Key: "k", Value: 4, Revision: 4}} {
		if ch := next(); ch.Key != want.Key || ch.Value != want.Value || ch.Revision != want.Revision {
			t.Fatalf("change %+v, want %s=%d at %d (k's changes up to its initial revision 3 skipped)", ch, want.Key, want.Value, want.Revision)
		}
	}
}
