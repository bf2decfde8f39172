package contextd_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/contextd-go/contextd/contextd"
)

// TestModifyCombinedLeaderDeadlineKeepsOthersWaiting: the leader's lock
// wait ends by its ctx's deadline (not a cancel): that wait was not spent,
// so the calls that joined it, whether an attempt carried them or not,
// keep waiting under a new leader and each is counted once when the lock
// is released. Whichever came first on a slow machine — the deadline or an
// attempt carrying the others — the outcome is the same.
func TestModifyCombinedLeaderDeadlineKeepsOthersWaiting(t *testing.T) {
	a, start, release := blockedModify(t)
	ctx := context.Background()
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	before := a.Revision()
	var tried atomic.Int64
	r1 := start(dctx, increment)
	r2 := start(ctx, increment)
	r3 := start(ctx, func(cur int, ok bool) (int, error) {
		tried.Add(1)
		return increment(cur, ok)
	})
	if r := result(t, r1); !errors.Is(r.err, context.DeadlineExceeded) || !errors.Is(r.err, contextd.ErrLockNotAcquired) {
		t.Fatalf("the leader whose deadline passed got %v (%v); want ErrLockNotAcquired and context.DeadlineExceeded", r.v, r.err)
	}
	othersLedAgain(t, a, before, release, &tried, r2, r3)
	if v, _, err := a.Get(ctx, "n", contextd.Fresh()); err != nil || v != 2 {
		t.Errorf("the store holds %d (%v), want 2", v, err)
	}
}
