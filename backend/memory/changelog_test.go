package memory_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
)

// commitN makes n commits, each putting key "k" to "v<revision>" with its
// value carried in the event.
func commitN(t *testing.T, b *memory.Backend, name string, n int) backend.Head {
	t.Helper()
	var h backend.Head
	for range n {
		snap, _ := mustLoad(t, b, name)
		bt := put("k", fmt.Sprintf("v%d", snap.Revision+1))
		bt.EventValueLimit = 1 << 10
		h = mustCommit(t, b, name, bt)
	}
	return h
}

func TestChangesSinceReturnsTheMissedEvents(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	h := commitN(t, b, "c", 5)

	events, err := b.ChangesSince(ctx, "c", h.Epoch, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 3 {
		t.Fatalf("%d events, want 3", len(events))
	}
	for i, e := range events {
		rev := uint64(3 + i)
		if e.Epoch != h.Epoch || e.Revision != rev || len(e.Changes) != 1 || string(e.Changes[0].Value) != fmt.Sprintf("v%d", rev) {
			t.Fatalf("event %d = %+v, want revision %d", i, e, rev)
		}
	}

	// The events are copies.
	copy(events[0].Changes[0].Value, "XX")
	again, _ := b.ChangesSince(ctx, "c", h.Epoch, 2)
	if string(again[0].Changes[0].Value) != "v3" {
		t.Fatalf("log changed by a caller: %q", again[0].Changes[0].Value)
	}

	// Nothing missed: empty, no error. Ahead of the store: truncated, as
	// only a snapshot can say what it holds. From 0: everything.
	if events, err := b.ChangesSince(ctx, "c", h.Epoch, 5); err != nil || len(events) != 0 {
		t.Fatalf("ChangesSince(5) = %v, %v; want empty", events, err)
	}
	if _, err := b.ChangesSince(ctx, "c", h.Epoch, 6); !errors.Is(err, backend.ErrLogTruncated) {
		t.Fatalf("ChangesSince(6) at revision 5 = %v; want ErrLogTruncated", err)
	}
	if events, err := b.ChangesSince(ctx, "c", h.Epoch, 0); err != nil || len(events) != 5 {
		t.Fatalf("ChangesSince(0) = %d events, %v; want 5", len(events), err)
	}
}

func TestChangesSinceTruncated(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, &memory.Options{ChangeLogSize: 3})
	h := commitN(t, b, "c", 7) // the log holds revisions 5..7

	for _, after := range []uint64{0, 1, 3} {
		if _, err := b.ChangesSince(ctx, "c", h.Epoch, after); !errors.Is(err, backend.ErrLogTruncated) {
			t.Fatalf("ChangesSince(%d) = %v, want ErrLogTruncated", after, err)
		}
	}
	events, err := b.ChangesSince(ctx, "c", h.Epoch, 4)
	if err != nil || len(events) != 3 || events[0].Revision != 5 || events[2].Revision != 7 {
		t.Fatalf("ChangesSince(4) = %+v, %v; want revisions 5..7", events, err)
	}
}

func TestChangesSinceEpochMismatch(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	h := commitN(t, b, "c", 3)
	if _, err := b.ChangesSince(ctx, "c", "another-epoch", 1); !errors.Is(err, backend.ErrLogTruncated) {
		t.Fatalf("wrong epoch: %v, want ErrLogTruncated", err)
	}
	// Even with nothing missed, another epoch means the caller's state is
	// not this context's.
	if _, err := b.ChangesSince(ctx, "c", "another-epoch", 3); !errors.Is(err, backend.ErrLogTruncated) {
		t.Fatalf("wrong epoch, up to date: %v, want ErrLogTruncated", err)
	}

	b.Wipe("c")
	if _, err := b.ChangesSince(ctx, "c", h.Epoch, 1); !errors.Is(err, backend.ErrLogTruncated) {
		t.Fatalf("after Wipe: %v, want ErrLogTruncated", err)
	}
	h2 := commitN(t, b, "c", 1)
	if _, err := b.ChangesSince(ctx, "c", h.Epoch, 3); !errors.Is(err, backend.ErrLogTruncated) {
		t.Fatalf("old epoch after Wipe and a commit: %v, want ErrLogTruncated", err)
	}
	if events, err := b.ChangesSince(ctx, "c", h2.Epoch, 0); err != nil || len(events) != 1 {
		t.Fatalf("new epoch: %v, %v; want the one new event", events, err)
	}
}
