package backend_test

import (
	"context"
	"errors"
	"testing"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
)

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
