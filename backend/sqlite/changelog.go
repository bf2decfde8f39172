package sqlite

import (
	"context"
	"errors"
	"fmt"

	"github.com/contextd-go/contextd/backend"
)

// logChange appends a commit's event to the context's change log and, every
// trimEvery revisions, trims the log to Options.ChangeLogLength events (so
// it holds up to trimEvery-1 more). A commit that creates a new epoch first
// drops whatever the log held. It runs in the commit's write transaction.
func (b *Backend) logChange(ctx context.Context, c *dbConn, name string, rev uint64, event []byte, fresh bool) error {
	if fresh {
		if _, err := c.exec(ctx, sqlClearChanges, name); err != nil {
			return err
		}
	}
	if _, err := c.exec(ctx, sqlAppendChange, name, int64(rev), event); err != nil {
		return err
	}
	if keep := uint64(b.opts.ChangeLogLength); rev > keep && rev%trimEvery == 0 {
		if _, err := c.exec(ctx, sqlTrimChanges, name, int64(rev-keep)); err != nil {
			return err
		}
	}
	return nil
}

// ChangesSince returns the logged events of context name above revision
// after, read with the context's head in one read transaction. It returns
// an error matching backend.ErrLogTruncated if the context's epoch is not
// epoch, if after is above the head, or if the log does not reach back to
// after+1; an empty slice if after is the head. It fails with an error
// matching errors.ErrUnsupported if Options.DisableChangeLog is set.
func (b *Backend) ChangesSince(ctx context.Context, name, epoch string, after uint64) ([]backend.Event, error) {
	op := fmt.Sprintf("changes of %q since %d", name, after)
	if b.opts.DisableChangeLog {
		return nil, unsupported(op, "DisableChangeLog")
	}
	if err := b.begin(ctx, op); err != nil {
		return nil, err
	}
	var events []backend.Event
	err := b.readTx(ctx, func(ctx context.Context, c *dbConn) error {
		events = nil
		var h backend.Head
		var codec string
		if _, err := readHead(ctx, c, name, &h, &codec); err != nil {
			return err
		}
		switch {
		case h.Epoch != epoch:
			return fmt.Errorf("epoch is %q, not %q: %w", h.Epoch, epoch, backend.ErrLogTruncated)
		case after > h.Revision:
			return fmt.Errorf("the context is at revision %d, behind the caller: %w", h.Revision, backend.ErrLogTruncated)
		case after == h.Revision:
			events = []backend.Event{}
			return nil
		case h.Revision-after > uint64(b.opts.ChangeLogLength):
			return fmt.Errorf("%d events missing, the log keeps %d: %w", h.Revision-after, b.opts.ChangeLogLength, backend.ErrLogTruncated)
		}
		rows, err := c.query(ctx, sqlChanges, name, int64(after))
		if err != nil {
			return err
		}
		defer rows.Close()
		events = make([]backend.Event, 0, h.Revision-after)
		want := after + 1
		for rows.Next() {
			var rev int64
			var payload []byte
			if err := rows.Scan(&rev, &payload); err != nil {
				return err
			}
			// A gap (a writer with the log switched off, or trimmed
			// meanwhile by a writer with a shorter log) or an event that
			// does not decode makes the log useless for this catch-up: a
			// snapshot still works.
			if uint64(rev) != want {
				return fmt.Errorf("the log has revision %d where %d belongs: %w", rev, want, backend.ErrLogTruncated)
			}
			ev, err := backend.DecodeEvent(payload)
			if err != nil {
				return fmt.Errorf("revision %d: %w: %w", rev, backend.ErrLogTruncated, err)
			}
			if ev.Epoch != epoch || ev.Revision != want {
				return fmt.Errorf("logged event %s/%d under revision %d: %w", ev.Epoch, ev.Revision, rev, backend.ErrLogTruncated)
			}
			events = append(events, ev)
			want++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if want != h.Revision+1 {
			return fmt.Errorf("the log ends at revision %d, the head is %d: %w", want-1, h.Revision, backend.ErrLogTruncated)
		}
		return nil
	})
	if errors.Is(err, backend.ErrLogTruncated) {
		return nil, fmt.Errorf("sqlite: %s: %w", op, err)
	}
	if err != nil {
		return nil, b.wrap(ctx, op, err)
	}
	return events, nil
}
