package memory

import (
	"context"
	"fmt"

	"github.com/contextd-go/contextd/backend"
)

// changeLog keeps the latest events of one context in a ring. Commits
// increment the revision by one, so the events held are always the
// consecutive revisions head-len+1 .. head, and an event is found by
// arithmetic instead of a search.
type changeLog struct {
	size   int             // most events kept
	events []backend.Event // grows up to size, then wraps
	next   int             // once full: where the next event goes, which is the oldest
}

func newChangeLog(size int) *changeLog {
	// The ring grows as events arrive, so a context that sees few commits
	// does not pay for a full ring up front.
	return &changeLog{size: size}
}

func (l *changeLog) append(e backend.Event) {
	if len(l.events) < l.size {
		l.events = append(l.events, e)
		return
	}
	l.events[l.next] = e
	l.next = (l.next + 1) % l.size
}

// since returns the logged events after revision after up to head, the
// revision of the newest one, or false if the log does not reach back to
// after+1. The events share memory with the log.
func (l *changeLog) since(after, head uint64) ([]backend.Event, bool) {
	if l == nil || after >= head {
		return nil, false
	}
	n := uint64(len(l.events))
	if n == 0 || head-after > n {
		return nil, false
	}
	oldest := 0 // ring index of revision head-n+1
	if len(l.events) == l.size {
		oldest = l.next
	}
	out := make([]backend.Event, 0, head-after)
	for r := after + 1; r <= head; r++ {
		out = append(out, l.events[(oldest+int(r-(head-n+1)))%len(l.events)])
	}
	return out, true
}

// clone returns a copy of the log that later appends to either do not
// affect. The events themselves are never modified, so they are shared.
func (l *changeLog) clone() *changeLog {
	if l == nil {
		return nil
	}
	c := *l
	c.events = append(make([]backend.Event, 0, len(l.events)), l.events...)
	return &c
}

// ChangesSince returns copies of the events of context name with revisions
// above after, in revision order, up to the current head. It returns an
// error matching backend.ErrLogTruncated if the context's epoch is not epoch
// or the log no longer holds revision after+1, and an empty slice if after
// is at or above the current revision. It fails with an error matching
// errors.ErrUnsupported if Options.DisableChangeLog is set.
func (b *Backend) ChangesSince(ctx context.Context, name, epoch string, after uint64) ([]backend.Event, error) {
	op := fmt.Sprintf("changes of %q since %d", name, after)
	if b.opts.DisableChangeLog {
		return nil, unsupported(op, "DisableChangeLog")
	}
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errClosed(op)
	}
	var d *contextData
	if sp := b.spaces[name]; sp != nil {
		d = sp.data
	}
	if d == nil {
		d = &contextData{}
	}
	if d.epoch != epoch {
		b.mu.Unlock()
		return nil, fmt.Errorf("memory: %s: epoch is %q, not %q: %w", op, d.epoch, epoch, backend.ErrLogTruncated)
	}
	if after > d.revision {
		b.mu.Unlock()
		return nil, fmt.Errorf("memory: %s: the context is at revision %d, behind the caller: %w", op, d.revision, backend.ErrLogTruncated)
	}
	if after == d.revision {
		b.mu.Unlock()
		return []backend.Event{}, nil
	}
	events, ok := d.log.since(after, d.revision)
	b.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("memory: %s: %w", op, backend.ErrLogTruncated)
	}
	// Logged events are never modified, so they can be copied unlocked.
	for i := range events {
		events[i] = cloneEvent(events[i])
	}
	return events, nil
}

func cloneEvent(e backend.Event) backend.Event {
	changes := make([]backend.Change, len(e.Changes))
	for i, ch := range e.Changes {
		if ch.Value != nil {
			ch.Value = cloneBytes(ch.Value)
		}
		changes[i] = ch
	}
	e.Changes = changes
	return e
}
