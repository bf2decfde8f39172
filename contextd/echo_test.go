package contextd_test

import (
	"context"
	"errors"
	"testing"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
)

// On the memory backend a Context's subscription leaves out the echoes of
// its own commits (skipEchoes): the commit's reply applies it. A commit
// whose reply is lost after all (here, a wrapper's) must still reach the
// copy, through a catch-up, and a refused commit starts none.

func TestInDoubtCommitWithoutEchoReachesTheCopy(t *testing.T) {
	w := &hookedCommits{Backend: newMemory(t, nil)}
	w.hook = func(_ context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		if n == 2 {
			if _, err := do(); err != nil {
				return backend.Head{}, err
			}
			return backend.Head{}, errReplyLost
		}
		return do()
	}
	// No periodic check: only the catch-up the failed commit starts can
	// bring the write in.
	a := open[int](t, w, "ctx", &contextd.Options{ResyncInterval: -1})
	ctx := context.Background()
	if err := a.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateContext(ctx, "k", 2); !errors.Is(err, errReplyLost) {
		t.Fatalf("UpdateContext = %v, want the lost reply's error", err)
	}
	lostWriteReachesTheCopy(t, a, 2)
}

// lostWriteReachesTheCopy waits until a's copy holds k = lost, the write
// at revision lost whose commit's reply was lost, and checks that the copy
// goes on from there: a later write applies in order.
func lostWriteReachesTheCopy(t *testing.T, a *contextd.Context[int], lost int) {
	t.Helper()
	ctx := context.Background()
	eventually(t, "the copy holds the commit whose reply was lost", func() bool {
		v, ok, err := a.Get(ctx, "k")
		return err == nil && ok && v == lost
	})
	next := lost + 1
	if err := a.UpdateContext(ctx, "k", next); err != nil {
		t.Fatal(err)
	}
	if v, _, err := a.Get(ctx, "k"); err != nil || v != next || a.Revision() != uint64(next) {
		t.Fatalf("k = %d (%v) at revision %d, want %d at %d", v, err, a.Revision(), next, next)
	}
}

// TestOwnEchoesNotDelivered: a Context's own writes do not wake its read
// loop on the memory backend, while another Context's writes reach it.
func TestOwnEchoesNotDelivered(t *testing.T) {
	m := newMemory(t, nil)
	a := open[int](t, m, "ctx", nil)
	b := open[int](t, m, "ctx", nil)
	ctx := context.Background()
	for i := range 10 {
		if err := a.UpdateContext(ctx, "a", i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "b has a's writes", func() bool { return b.Revision() == 10 })
	if err := b.UpdateContext(ctx, "b", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a has b's write", func() bool { return a.Revision() == 11 })
	if v, ok, err := a.Get(ctx, "b"); err != nil || !ok || v != 1 {
		t.Fatalf("a: b = %d, %v, %v", v, ok, err)
	}
	if s := a.Stats(); s.Gaps != 0 || s.LogCatchUps != 0 {
		t.Fatalf("a's stats %+v: want no gap and no catch-up", s)
	}
}
