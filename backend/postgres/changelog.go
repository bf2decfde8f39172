package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/contextd-go/contextd/backend"
)

// ChangesSince returns the logged events after revision after, read with
// the context's head in one statement.
func (b *Backend) ChangesSince(ctx context.Context, name, epoch string, after uint64) ([]backend.Event, error) {
	op := fmt.Sprintf("changes of %q since %d", name, after)
	if b.opts.DisableChangeLog {
		return nil, fmt.Errorf("postgres: %s: the change log is switched off: %w", op, errors.ErrUnsupported)
	}
	if err := b.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", op, err)
	}
	// The log holds up to 15 events more than its length between trims.
	limit := b.opts.ChangeLogLength + 16
	rows, err := b.pool.Query(ctx, b.sql.changes, []byte(name), int64(min(after, 1<<63-1)), limit)
	if err != nil {
		return nil, wrap(ctx, op, err)
	}
	defer rows.Close()
	var (
		have       string
		head       uint64
		events     []backend.Event
		haveMeta   bool
		meta       bool
		rowEpoch   string
		rev        int64
		payload    []byte
		badPayload error
	)
	for rows.Next() {
		if err := rows.Scan(&meta, &rowEpoch, &rev, &payload); err != nil {
			return nil, wrap(ctx, op, err)
		}
		if meta {
			haveMeta, have, head = true, rowEpoch, uint64(rev)
			continue
		}
		ev, err := backend.DecodeEvent(payload)
		if err != nil && badPayload == nil {
			badPayload = fmt.Errorf("revision %d: %w", rev, err)
		}
		if ev.Revision != uint64(rev) && badPayload == nil {
			badPayload = fmt.Errorf("logged event of revision %d under revision %d", ev.Revision, rev)
		}
		events = append(events, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(ctx, op, err)
	}
	if !haveMeta {
		have, head = "", 0
	}
	switch {
	case have != epoch:
		return nil, fmt.Errorf("postgres: %s: epoch is %q, not %q: %w", op, have, epoch, backend.ErrLogTruncated)
	case after > head:
		return nil, fmt.Errorf("postgres: %s: the context is at revision %d, behind the caller: %w", op, head, backend.ErrLogTruncated)
	case after == head:
		return []backend.Event{}, nil
	case badPayload != nil:
		// What another program wrote to the log makes it useless for
		// this catch-up; a snapshot still works.
		return nil, fmt.Errorf("postgres: %s: %w: %w", op, backend.ErrLogTruncated, badPayload)
	}
	// The rows must be exactly after+1 .. head.
	if uint64(len(events)) != head-after || events[0].Revision != after+1 {
		return nil, fmt.Errorf("postgres: %s: the log does not reach back to %d: %w", op, after+1, backend.ErrLogTruncated)
	}
	for i, ev := range events {
		if ev.Epoch != epoch || ev.Revision != after+1+uint64(i) {
			return nil, fmt.Errorf("postgres: %s: logged event %s/%d where revision %d belongs: %w", op, ev.Epoch, ev.Revision, after+1+uint64(i), backend.ErrLogTruncated)
		}
	}
	return events, nil
}
