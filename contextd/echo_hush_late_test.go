package contextd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
)

// A commit whose reply is lost may be made later than the catch-up its
// failure starts reads the change log (a server that stalled reads the
// commit's connection after the catch-up's). Its echo then arrives after
// the catch-up, and if another own commit is in flight at that moment the
// echo is held quietly, with nothing left to bring the commit in: the copy
// must still get it, as it did when such an echo woke the read loop.
func TestInDoubtCommitMadeAfterItsCatchUpReachesTheCopy(t *testing.T) {
	hb := &hushingBackend{hookedCommits: &hookedCommits{Backend: newMemory(t, nil)}, decisions: make(chan bool, 64)}
	late := make(chan func() (backend.Head, error), 1)
	decision := func(what string) bool {
		select {
		case q := <-hb.decisions:
			return q
		case <-time.After(time.Minute):
			t.Errorf("no quiet decision on %s", what)
			return false
		}
	}
	hb.hook = func(_ context.Context, n int32, do func() (backend.Head, error)) (backend.Head, error) {
		switch n {
		case 2:
			// The reply is lost before the commit is made.
			late <- do
			return backend.Head{}, errReplyLost
		case 3:
			// While this commit is in flight, the lost one is made: its
			// echo arrives after the catch-up its failure started.
			if _, err := (<-late)(); err != nil {
				t.Errorf("the late commit: %v", err)
			}
			decision("the late commit's echo")
		}
		h, err := do()
		if err == nil {
			decision("the echo of commit " + string('0'+rune(n)))
		}
		return h, err
	}
	a := open[int](t, hb, "ctx", &contextd.Options{ResyncInterval: -1})
	ctx := context.Background()
	if err := a.UpdateContext(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateContext(ctx, "a", 1); !errors.Is(err, errReplyLost) {
		t.Fatalf("UpdateContext = %v, want the lost reply's error", err)
	}
	// The catch-up the failure starts (if any: before hushed echoes there
	// was none) runs, and finds nothing yet.
	for end := time.Now().Add(2 * time.Second); a.Stats().LogCatchUps == 0 && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if err := a.UpdateContext(ctx, "b", 1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, ok, err := a.Get(ctx, "a")
		if err == nil && ok && v == 1 && a.Revision() == 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("5s after the late commit: a = %d, %v, %v at revision %d; want 1 at revision 3", v, ok, err, a.Revision())
		}
		time.Sleep(time.Millisecond)
	}
}
