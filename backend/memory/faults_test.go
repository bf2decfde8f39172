package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

func TestWipeLosesDataAndGivesANewEpoch(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	bt := put("k", "v")
	bt.Codec = "json"
	old := mustCommit(t, b, "c", bt)
	mustCommit(t, b, "other", put("k", "v"))
	if _, err := b.TryAcquire(ctx, "c", "k", time.Minute); err != nil {
		t.Fatal(err)
	}

	b.Wipe("c")

	snap, _ := mustLoad(t, b, "c")
	if snap.Epoch != "" || snap.Revision != 0 || snap.Codec != "" || len(snap.Entries) != 0 {
		t.Fatalf("after Wipe: %+v, want empty", snap)
	}
	if _, err := b.Get(ctx, "c", "k"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Get after Wipe = %v, want ErrNotFound", err)
	}
	// The locks went with the data.
	l, err := b.TryAcquire(ctx, "c", "k", time.Minute)
	if err != nil {
		t.Fatalf("TryAcquire after Wipe = %v", err)
	}
	// The codec record too: another codec is accepted.
	bt.Codec = "msgpack"
	bt.Leases = []locker.Lease{l}
	h := mustCommit(t, b, "c", bt)
	if h.Revision != 1 || h.Epoch == "" || h.Epoch == old.Epoch {
		t.Fatalf("first head after Wipe = %+v, want a new epoch at revision 1 (old %+v)", h, old)
	}
	// Other contexts are untouched.
	if snap, _ := mustLoad(t, b, "other"); snap.Revision != 1 {
		t.Fatalf("other context: %+v", snap)
	}
}

func TestWipeWakesLockWatchers(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	if _, err := b.TryAcquire(ctx, "c", "k", time.Minute); err != nil {
		t.Fatal(err)
	}
	notify, stop, err := b.WatchRelease(ctx, "c", "k")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	b.Wipe("c")
	select {
	case <-notify:
	default:
		t.Fatal("no notification when Wipe dropped the lock")
	}
}

func TestCheckpointRestoreMovesRevisionBackwardsInTheSameEpoch(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	bt := put("a", "1")
	bt.Codec = "json"
	bt.EventValueLimit = 100
	mustCommit(t, b, "c", bt)
	at := mustCommit(t, b, "c", put("b", "2")) // revision 2

	restore := b.Checkpoint("c")
	mustCommit(t, b, "c", put("a", "lost"))
	mustCommit(t, b, "c", backend.Batch{Ops: []backend.Op{{Key: "b", Delete: true}}})
	mustCommit(t, b, "c", put("new", "lost"))
	if h, _ := b.Revision(ctx, "c"); h.Revision != 5 {
		t.Fatalf("revision %d before restore, want 5", h.Revision)
	}

	restore()

	snap, m := mustLoad(t, b, "c")
	if snap.Head != at || snap.Codec != "json" || len(m) != 2 || string(m["a"].Value) != "1" || m["a"].Revision != 1 || string(m["b"].Value) != "2" {
		t.Fatalf("after restore: %+v, want the checkpoint at %+v", snap, at)
	}
	// The change log ends at the checkpoint too.
	if events, err := b.ChangesSince(ctx, "c", at.Epoch, 2); err != nil || len(events) != 0 {
		t.Fatalf("ChangesSince(2) = %v, %v; want nothing after the checkpoint", events, err)
	}
	events, err := b.ChangesSince(ctx, "c", at.Epoch, 0)
	if err != nil || len(events) != 2 || events[1].Revision != 2 {
		t.Fatalf("ChangesSince(0) = %+v, %v; want revisions 1..2", events, err)
	}

	// Writing goes on from the checkpoint, in the same epoch.
	h := mustCommit(t, b, "c", put("a", "after"))
	if h.Epoch != at.Epoch || h.Revision != 3 || h.Parent != at.Commit {
		t.Fatalf("head after restore = %+v, want revision 3 in epoch %q after commit %q", h, at.Epoch, at.Commit)
	}

	// restore can be used again and is unaffected by the later commit.
	restore()
	if h, _ := b.Revision(ctx, "c"); h != at {
		t.Fatalf("second restore: %+v, want %+v", h, at)
	}
}

func TestCheckpointOfEmptyContextRestoresEmpty(t *testing.T) {
	b := newBackend(t, nil)
	restore := b.Checkpoint("c")
	mustCommit(t, b, "c", put("k", "v"))
	restore()
	if snap, _ := mustLoad(t, b, "c"); snap.Epoch != "" || snap.Revision != 0 || len(snap.Entries) != 0 {
		t.Fatalf("after restore: %+v, want empty", snap)
	}
}

func TestCheckpointLeavesLocksAlone(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, nil)
	mustCommit(t, b, "c", put("k", "v"))
	restore := b.Checkpoint("c")
	l, err := b.TryAcquire(ctx, "c", "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	restore()
	if _, err := b.TryAcquire(ctx, "c", "k", time.Minute); !errors.Is(err, locker.ErrNotAcquired) {
		t.Fatalf("TryAcquire after restore = %v, want ErrNotAcquired", err)
	}
	if err := b.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
}
