package contextd

import (
	"context"
	"time"

	"github.com/contextd-go/contextd/internal/backoff"
)

// conflictBackoff spaces out the retries of a conditional write that lost
// to another writer, on a store without fair queues: pauses start at a
// millisecond and double up to a ceiling, each drawn uniformly from
// [d/2, 3d/2) so that contenders do not retry in lockstep.
type conflictBackoff struct {
	next time.Duration
}

// wait pauses before the next retry, or returns ctx.Err() if ctx ends
// first. ceiling bounds the mean pause.
func (b *conflictBackoff) wait(ctx context.Context, ceiling time.Duration) error {
	const first = time.Millisecond
	if b.next == 0 {
		b.next = first
	}
	d := backoff.Jitter(min(b.next, max(ceiling, first)))
	b.next *= 2
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
