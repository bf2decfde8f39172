package redis

import (
	"context"
	"errors"
	"fmt"

	"github.com/contextd-go/contextd/backend"
)

// ChangesSince returns the logged events after revision after, read with
// the context's head in one script.
func (b *Backend) ChangesSince(ctx context.Context, name, epoch string, after uint64) ([]backend.Event, error) {
	op := fmt.Sprintf("changes of %q since %d", name, after)
	if b.opts.DisableChangeLog {
		return nil, fmt.Errorf("redis: %s: the change log is switched off: %w", op, errors.ErrUnsupported)
	}
	k := keysOf(name)
	logLen := b.opts.ChangeLogLength
	res, err := changesScript.Run(ctx, b.client, []string{k.meta, k.ring}, after, logLen).Slice()
	if err != nil {
		return nil, scriptFailed(ctx, op, k, err, nil, nil)
	}
	if len(res) != 3 {
		return nil, fmt.Errorf("redis: %s: script returned %d elements", op, len(res))
	}
	have, _ := res[0].(string)
	head, err := parseUint(res[1])
	if err != nil {
		return nil, fmt.Errorf("redis: %s: %w", op, err)
	}
	switch {
	case have != epoch:
		return nil, fmt.Errorf("redis: %s: epoch is %q, not %q: %w", op, have, epoch, backend.ErrLogTruncated)
	case after > head:
		return nil, fmt.Errorf("redis: %s: the context is at revision %d, behind the caller: %w", op, head, backend.ErrLogTruncated)
	case after == head:
		return []backend.Event{}, nil
	}
	entries, ok := res[2].([]any)
	if !ok || uint64(len(entries)) != head-after {
		return nil, fmt.Errorf("redis: %s: the log does not reach back to %d: %w", op, after+1, backend.ErrLogTruncated)
	}
	events := make([]backend.Event, len(entries))
	for i, raw := range entries {
		rev := after + 1 + uint64(i)
		// Each revision has its field (revision modulo the log's length):
		// a missing field, an older event in it (overwritten, or logged by
		// an instance with another ChangeLogLength), another epoch's event
		// or one that does not parse (another program wrote it) make the
		// log useless for this catch-up; a snapshot still works.
		payload, ok := raw.(string)
		if !ok {
			return nil, fmt.Errorf("redis: %s: revision %d is not in the log: %w", op, rev, backend.ErrLogTruncated)
		}
		ev, err := backend.DecodeEvent([]byte(payload))
		if err != nil {
			return nil, fmt.Errorf("redis: %s: revision %d: %w: %w", op, rev, backend.ErrLogTruncated, err)
		}
		if ev.Epoch != epoch || ev.Revision != rev {
			return nil, fmt.Errorf("redis: %s: the log holds event %s/%d where revision %d belongs: %w", op, ev.Epoch, ev.Revision, rev, backend.ErrLogTruncated)
		}
		events[i] = ev
	}
	return events, nil
}
