package contextd_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/contextd-go/contextd/contextd"
)

func TestWatchOverflowGivesReset(t *testing.T) {
	b := newMemory(t, nil)
	c := open[int](t, b, "ctx", &contextd.Options{WatchBuffer: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := c.Watch(ctx)
	// Nobody reads while 50 changes happen: the writes must not block.
	for i := range 50 {
		if err := c.UpdateContext(ctx, fmt.Sprint(i%5), i); err != nil {
			t.Fatal(err)
		}
	}
	// The buffered changes come first, in order, then one Reset for the
	// changes that did not fit.
	var last uint64
	for ch := range watch {
		if ch.Reset {
			break
		}
		if ch.Revision != last+1 {
			t.Fatalf("buffered change at revision %d after %d", ch.Revision, last)
		}
		last = ch.Revision
	}
	if last != 4 {
		t.Fatalf("%d changes before the Reset, want the buffer's 4", last)
	}
	// After the Reset, fresh changes flow again.
	if err := c.UpdateContext(ctx, "after", 1); err != nil {
		t.Fatal(err)
	}
	// It arrives as a change, or is covered by another Reset after which a
	// re-read shows it.
	for ch := range watch {
		if ch.Key == "after" {
			return
		}
		if _, ok, _ := c.Get(ctx, "after"); ch.Reset && ok {
			return
		}
	}
	t.Fatal("watch closed before the change after the Reset")
}

func TestWatchEndsWithItsContext(t *testing.T) {
	c := open[int](t, newMemory(t, nil), "ctx", nil)
	ctx, cancel := context.WithCancel(context.Background())
	watch := c.Watch(ctx)
	if err := c.UpdateContext(context.Background(), "k", 1); err != nil {
		t.Fatal(err)
	}
	if ch := <-watch; ch.Key != "k" || ch.Value != 1 || ch.Origin != c.ID() || ch.Revision != 1 {
		t.Fatalf("got %+v", ch)
	}
	cancel()
	for range watch {
	}
}

func TestWatchClosedByClose(t *testing.T) {
	b := newMemory(t, nil)
	c, err := contextd.New[int](b, "ctx", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Initialize(context.Background()); err != nil {
		t.Fatal(err)
	}
	watch := c.Watch(context.Background())
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-watch; ok {
		t.Fatal("watch delivered after Close")
	}
}

func TestWatchSeesDeletes(t *testing.T) {
	c := open[int](t, newMemory(t, nil), "ctx", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := c.Watch(ctx)
	if err := c.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	<-watch
	if ch := <-watch; ch.Key != "k" || !ch.Deleted || ch.Revision != 2 {
		t.Fatalf("got %+v, want the delete of k at revision 2", ch)
	}
}

func TestGetDoesNotAllocate(t *testing.T) {
	type point struct{ X, Y int }
	c := open[point](t, newMemory(t, nil), "ctx", nil)
	ctx := context.Background()
	if err := c.UpdateContext(ctx, "p", point{1, 2}); err != nil {
		t.Fatal(err)
	}
	var sink point
	allocs := testing.AllocsPerRun(1000, func() {
		v, _, _ := c.Get(ctx, "p")
		sink = v
	})
	if allocs != 0 {
		t.Fatalf("Get allocates %.1f times per call for a pointer-free T, want 0", allocs)
	}
	_ = sink
}
