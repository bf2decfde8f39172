package contextd_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
)

// Commits that fail in doubt together (a Redis stall or restart times out
// every write under way) are brought in by their echoes, held quietly
// while they were in flight and read once they failed: not by a catch-up
// each, which would read the change log (or, without one, load the whole
// context) once per failed write, holding the catch-up lock the read
// loop's repairs need.
func TestConcurrentInDoubtCommitsNeedNoCatchUp(t *testing.T) {
	const n = 20
	hb := &hushingBackend{hookedCommits: &hookedCommits{Backend: newMemory(t, nil)}, decisions: make(chan bool, 4*n)}
	var made sync.WaitGroup
	made.Add(n)
	hb.hook = func(_ context.Context, k int32, do func() (backend.Head, error)) (backend.Head, error) {
		h, err := do()
		if k == 1 || err != nil {
			return h, err
		}
		// Every commit is made, and then all their replies are lost.
		made.Done()
		made.Wait()
		return backend.Head{}, errReplyLost
	}
	// Drain the quiet decisions as they come: nobody waits for them here.
	drained := make(chan struct{})
	t.Cleanup(func() { close(drained) }) // after the Context's Close
	go func() {
		for {
			select {
			case <-hb.decisions:
			case <-drained:
				return
			}
		}
	}()
	var catchUps atomic.Int64
	a := open[int](t, hb, "ctx", &contextd.Options{ResyncInterval: -1, Trace: &contextd.Trace{
		CatchUp: func(string, error) { catchUps.Add(1) },
	}})
	ctx := context.Background()
	if err := a.UpdateContext(ctx, "k", 0); err != nil {
		t.Fatal(err)
	}
	before := catchUps.Load()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.UpdateContext(ctx, fmt.Sprintf("k%d", i), i); !errors.Is(err, errReplyLost) {
				t.Errorf("UpdateContext = %v, want the lost reply's error", err)
			}
		}()
	}
	wg.Wait()
	eventually(t, "the copy holds every commit whose reply was lost", func() bool {
		return a.Revision() == n+1
	})
	// A catch-up started would run now; wait until none has run for a
	// while (nothing signals that none is left).
	last, quiet := catchUps.Load(), time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Since(quiet) < 300*time.Millisecond && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		if c := catchUps.Load(); c != last {
			last, quiet = c, time.Now()
		}
	}
	if got := last - before; got != 0 {
		t.Errorf("%d commits that failed in doubt at once caused %d catch-ups", n, got)
	}
}
