package contextd_test

import (
	"context"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
)

// TestEchoSkipAwaitOwnReplyAcrossWipe: a writer's read loop waits for its
// own commit's reply below another instance's event (awaitOwnBelow), and
// meanwhile the store is wiped (a new epoch) and another own commit's
// reply brings the copy into the new epoch. The reply waited for can no
// longer fill the hole; the copies still end up as the store is.
func TestEchoSkipAwaitOwnReplyAcrossWipe(t *testing.T) {
	w := &hookedCommits{Backend: newMemory(t, nil)}
	opts := &contextd.Options{ResyncInterval: -1}
	var a, b *contextd.Context[int]
	waiting := make(chan struct{}, 1)
	ctx := context.Background()
	w.hook = func(_ context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		if n != 2 {
			return do()
		}
		h, err := do() // a's "x" at revision 2
		if err != nil {
			return h, err
		}
		if err := b.UpdateContext(ctx, "k", 2); err != nil { // revision 3
			t.Errorf("b: UpdateContext: %v", err)
			return h, err
		}
		select {
		case <-waiting:
		case <-time.After(time.Minute):
			t.Error("a's read loop did not wait for the reply below b's event")
		}
		w.Backend.Wipe("ctx")
		if err := a.UpdateContext(ctx, "y", 3); err != nil { // a new epoch
			t.Errorf("a: UpdateContext y: %v", err)
		}
		// Another instance's write in the new epoch reaches a while the
		// reply waited for is still held: a's read loop must go on.
		start := time.Now()
		if err := b.UpdateContext(ctx, "z", 4); err != nil {
			t.Errorf("b: UpdateContext z: %v", err)
		}
		eventually(t, "a has b's write in the new epoch", func() bool {
			z, ok, err := a.Get(ctx, "z")
			return err == nil && ok && z == 4
		})
		// Not asserted (no timed assertions): how long a's read loop
		// stalled in the wait for a reply that could no longer help.
		t.Logf("a got b's write after %v (ownReplyWait bounds the stall)", time.Since(start))
		return h, err
	}
	a = open[int](t, w, "ctx", opts)
	b = open[int](t, w, "ctx", opts)
	contextd.SetAwaitingOwnReply(a, func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	})
	if err := a.UpdateContext(ctx, "init", 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b has a's first write", func() bool { return b.Revision() == 1 })
	if err := a.UpdateContext(ctx, "x", 1); err != nil {
		t.Fatalf("a: UpdateContext x: %v", err)
	}
	for name, c := range map[string]*contextd.Context[int]{"a": a, "b": b} {
		eventually(t, name+" holds the wiped store's writes", func() bool {
			if c.Revision() != 2 {
				return false
			}
			y, ok, err := c.Get(ctx, "y")
			if err != nil || !ok || y != 3 {
				return false
			}
			for _, k := range []string{"init", "x", "k"} {
				if _, ok, _ := c.Get(ctx, k); ok {
					return false
				}
			}
			z, ok, err := c.Get(ctx, "z")
			return err == nil && ok && z == 4
		})
	}
}
