package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"

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
	res, err := changesScript.Run(ctx, b.client, []string{k.meta, k.log}, after, b.opts.ChangeLogLength).Slice()
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
		// An entry that does not parse (another program wrote to the
		// stream) makes the log useless for this catch-up: a snapshot
		// still works.
		rev, payload, err := parseLogEntry(raw)
		if err != nil {
			return nil, fmt.Errorf("redis: %s: %w: %w", op, backend.ErrLogTruncated, err)
		}
		// XREVRANGE gives newest first: entry i is revision head-i.
		if rev != head-uint64(i) {
			return nil, fmt.Errorf("redis: %s: the log has revision %d where %d belongs: %w", op, rev, head-uint64(i), backend.ErrLogTruncated)
		}
		ev, err := backend.DecodeEvent([]byte(payload))
		if err != nil {
			return nil, fmt.Errorf("redis: %s: revision %d: %w: %w", op, rev, backend.ErrLogTruncated, err)
		}
		if ev.Epoch != epoch || ev.Revision != rev {
			return nil, fmt.Errorf("redis: %s: logged event %s/%d under revision %d: %w", op, ev.Epoch, ev.Revision, rev, backend.ErrLogTruncated)
		}
		events[i] = ev
	}
	slices.Reverse(events)
	return events, nil
}

// parseLogEntry reads one XRANGE entry: [id, [field, value, ...]].
func parseLogEntry(raw any) (uint64, string, error) {
	entry, ok := raw.([]any)
	if !ok || len(entry) != 2 {
		return 0, "", errors.New("malformed log entry")
	}
	fields, ok := entry[1].([]any)
	if !ok {
		return 0, "", errors.New("malformed log entry fields")
	}
	var rev uint64
	var payload string
	var haveRev, havePayload bool
	for i := 0; i+1 < len(fields); i += 2 {
		switch fields[i] {
		case "r":
			r, err := parseUint(fields[i+1])
			if err != nil {
				return 0, "", fmt.Errorf("log entry revision: %w", err)
			}
			rev, haveRev = r, true
		case "e":
			payload, havePayload = fields[i+1].(string)
		}
	}
	if !haveRev || !havePayload {
		return 0, "", errors.New("log entry without revision or event")
	}
	return rev, payload, nil
}
