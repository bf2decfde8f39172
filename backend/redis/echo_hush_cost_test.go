package redis_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// A commit that fails with ErrNotReplicated was made: the store says so.
// Bringing it into the copy must not cost a full snapshot per commit when
// the change log is switched off (DisableChangeLog): with a replica down,
// every write fails that way, and each would reload the whole context.
func TestNotReplicatedCommitsDoNotEachReloadTheContext(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	const name = "not-replicated-cost"
	// Some entries, so that a snapshot is not free, written without WAIT.
	w := openInstance[int](t, newBackend(t, srv, &redis.Options{DisableChangeLog: true}), name, noResync)
	for i := range 200 {
		if err := w.UpdateContext(ctx, fmt.Sprintf("k%03d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	be := newBackend(t, srv, &redis.Options{WaitReplicas: 1, WaitTimeout: time.Millisecond, DisableChangeLog: true})
	cx := openInstance[int](t, be, name, noResync)
	eventually(t, "the copy holds the setup writes", func() error {
		if v, ok, err := cx.Get(ctx, "k199"); err != nil || !ok || v != 199 {
			return fmt.Errorf("k199 = %d, %v, %v", v, ok, err)
		}
		return nil
	})
	before := cx.Stats().Snapshots
	const n = 20
	for i := 1; i <= n; i++ {
		if err := cx.UpdateContext(ctx, "a", i); !errors.Is(err, redis.ErrNotReplicated) {
			t.Fatalf("UpdateContext: %v; want ErrNotReplicated", err)
		}
	}
	eventually(t, "the copy holds the last write", func() error {
		if v, ok, err := cx.Get(ctx, "a"); err != nil || !ok || v != n {
			return fmt.Errorf("a = %d, %v, %v", v, ok, err)
		}
		return nil
	})
	if got := cx.Stats().Snapshots - before; got > n/4 {
		t.Errorf("%d commits failing with ErrNotReplicated loaded %d snapshots of the context", n, got)
	}
}

// Two instances writing at once: holding own echoes quietly must not make
// either read loop see gaps (the subscription delivers in order, the held
// echo with the next event that wakes it).
func TestConcurrentWritersSeeNoGapsWithHeldEchoes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	const name = "held-echo-gaps"
	a := openInstance[int](t, newBackend(t, srv, nil), name, noResync)
	b := openInstance[int](t, newBackend(t, srv, nil), name, noResync)
	const writers, each = 4, 300
	var wg sync.WaitGroup
	for _, cx := range []*contextd.Context[int]{a, b} {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if err := cx.UpdateContext(ctx, fmt.Sprintf("%s-%d", cx.ID(), w), i); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	want := uint64(2 * writers * each)
	for _, cx := range []*contextd.Context[int]{a, b} {
		eventually(t, "both copies reach the last revision", func() error {
			if r := cx.Revision(); r != want {
				return fmt.Errorf("revision %d, want %d", r, want)
			}
			return nil
		})
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("a: %+v", sa)
	t.Logf("b: %+v", sb)
	for _, s := range []contextd.Stats{sa, sb} {
		if s.Gaps != 0 || s.LogCatchUps != 0 || s.Losses != 0 || s.Snapshots != 1 {
			t.Errorf("stats %+v: want no gap, catch-up or loss, one snapshot", s)
		}
	}
}
