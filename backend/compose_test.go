package backend_test

import (
	"context"
	"errors"
	"testing"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/locker"
)

// follower is a memory backend that also follows turns, recording the
// calls it gets.
type follower struct {
	*memory.Backend
	calls int
}

func (f *follower) WatchTurnAfter(ctx context.Context, name string, w locker.Waiter, after func(uint64), keys ...string) (<-chan struct{}, func(), error) {
	f.calls++
	return make(chan struct{}), func() {}, nil
}

// Compose forwards TurnFollower only when the store is the locker (turns
// handed on by commits need lock-aware commits).
func TestComposeForwardsTurnFollower(t *testing.T) {
	m := memory.New(nil)
	defer m.Close()
	f := &follower{Backend: m}
	ctx := context.Background()
	same, _ := backend.Compose(f, f, f)
	if _, stop, err := same.(backend.TurnFollower).WatchTurnAfter(ctx, "c", locker.Waiter{}, func(uint64) {}, "k"); err != nil || f.calls != 1 {
		t.Fatalf("WatchTurnAfter of parts of one follower = %v (%d calls); want it forwarded", err, f.calls)
	} else {
		stop()
	}
	other := memory.New(nil)
	defer other.Close()
	mixed, _ := backend.Compose(other, f, f)
	if _, _, err := mixed.(backend.TurnFollower).WatchTurnAfter(ctx, "c", locker.Waiter{}, func(uint64) {}, "k"); !errors.Is(err, errors.ErrUnsupported) || f.calls != 1 {
		t.Errorf("WatchTurnAfter with another store = %v (%d calls); want ErrUnsupported, not forwarded", err, f.calls)
	}
}

func TestComposeCapabilities(t *testing.T) {
	a := memory.New(nil)
	defer a.Close()
	other := memory.New(nil)
	defer other.Close()

	same, err := backend.Compose(a, a, a)
	if err != nil {
		t.Fatal(err)
	}
	if got := backend.CapabilitiesOf(same); got != (backend.Capabilities{AtomicPublish: true, LockAwareCommit: true, ChangeLog: true, ReleaseNotify: true, FairLocks: true, Expiry: true}) {
		t.Errorf("parts of one backend: %+v, want all", got)
	}
	mixed, err := backend.Compose(a, other, other)
	if err != nil {
		t.Fatal(err)
	}
	got := backend.CapabilitiesOf(mixed)
	if got.AtomicPublish || got.LockAwareCommit {
		t.Errorf("store of one backend, locker and broadcaster of another: %+v; atomic publish and lock-aware commit must be off", got)
	}
	if !got.ChangeLog || !got.ReleaseNotify {
		t.Errorf("single-part capabilities lost: %+v", got)
	}
	ctx := context.Background()
	if _, err := mixed.(backend.AtomicPublisher).CommitAndPublish(ctx, "c", backend.Batch{}, "ch"); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("CommitAndPublish of a composed backend without the capability = %v", err)
	}
	off := memory.New(&memory.Options{DisableChangeLog: true})
	defer off.Close()
	noLog, _ := backend.Compose(off, a, a)
	if backend.CapabilitiesOf(noLog).ChangeLog {
		t.Error("a store whose change log is off gave the composed backend one")
	}
	if _, err := backend.Compose(nil, a, a); err == nil {
		t.Error("Compose with a nil store succeeded")
	}
	// The composed backend works: a write through it is seen by the parts.
	if _, err := mixed.Commit(ctx, "c", backend.Batch{Ops: []backend.Op{{Key: "k", Value: []byte("1")}}}); err != nil {
		t.Fatal(err)
	}
	if e, err := a.Get(ctx, "c", "k"); err != nil || string(e.Value) != "1" {
		t.Fatalf("composed commit not in the store: %v, %v", e, err)
	}
}
