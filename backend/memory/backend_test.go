package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/locker"
)

func TestDefaultsOfferEveryCapability(t *testing.T) {
	b := newBackend(t, nil)
	want := backend.Capabilities{AtomicPublish: true, LockAwareCommit: true, ChangeLog: true, ReleaseNotify: true, FairLocks: true, Expiry: true}
	if got := b.Capabilities(); got != want {
		t.Fatalf("Capabilities = %+v, want %+v", got, want)
	}
	if got := backend.CapabilitiesOf(b); got != want {
		t.Fatalf("CapabilitiesOf = %+v, want %+v", got, want)
	}
}

func TestOptionsAreCopied(t *testing.T) {
	opts := &memory.Options{}
	b := newBackend(t, opts)
	opts.DisableChangeLog = true
	if !b.Capabilities().ChangeLog {
		t.Fatal("changing Options after New changed the backend")
	}
}

func TestDisabledAtomicPublishIsOff(t *testing.T) {
	b := newBackend(t, &memory.Options{DisableAtomicPublish: true})
	if backend.CapabilitiesOf(b).AtomicPublish {
		t.Fatal("AtomicPublish reported")
	}
	s := mustSubscribe(t, b, "ch")
	if _, err := b.CommitAndPublish(context.Background(), "c", put("k", "v"), "ch"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CommitAndPublish = %v, want ErrUnsupported", err)
	}
	if snap, _ := mustLoad(t, b, "c"); snap.Revision != 0 {
		t.Fatal("refused CommitAndPublish wrote something")
	}
	expectNothing(t, s)
}

func TestDisabledLockAwareCommitIgnoresLocks(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, &memory.Options{DisableLockAwareCommit: true})
	if backend.CapabilitiesOf(b).LockAwareCommit {
		t.Fatal("LockAwareCommit reported")
	}
	l, err := b.TryAcquire(ctx, "c", "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	mustCommit(t, b, "c", put("k", "someone else")) // locked key: written anyway
	if err := b.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	bt := put("k", "stale holder")
	bt.Leases = []locker.Lease{l} // released lease: ignored
	if h := mustCommit(t, b, "c", bt); h.Revision != 2 {
		t.Fatalf("head = %+v", h)
	}
}

func TestDisabledChangeLogIsOff(t *testing.T) {
	b := newBackend(t, &memory.Options{DisableChangeLog: true})
	if backend.CapabilitiesOf(b).ChangeLog {
		t.Fatal("ChangeLog reported")
	}
	h := mustCommit(t, b, "c", put("k", "v"))
	if _, err := b.ChangesSince(context.Background(), "c", h.Epoch, 0); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("ChangesSince = %v, want ErrUnsupported", err)
	}
}

func TestDisabledReleaseNotifyIsOff(t *testing.T) {
	b := newBackend(t, &memory.Options{DisableReleaseNotify: true})
	if backend.CapabilitiesOf(b).ReleaseNotify {
		t.Fatal("ReleaseNotify reported")
	}
	if _, _, err := b.WatchRelease(context.Background(), "c", "k"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("WatchRelease = %v, want ErrUnsupported", err)
	}
}

// calls exercises every method of the backend once; each returns the
// method's error.
func calls(b *memory.Backend) map[string]func(ctx context.Context) error {
	lease := locker.Lease{Name: "c", Key: "k", Token: "t"}
	return map[string]func(ctx context.Context) error{
		"Load":     func(ctx context.Context) error { _, err := b.Load(ctx, "c"); return err },
		"Get":      func(ctx context.Context) error { _, err := b.Get(ctx, "c", "k"); return err },
		"Revision": func(ctx context.Context) error { _, err := b.Revision(ctx, "c"); return err },
		"Commit":   func(ctx context.Context) error { _, err := b.Commit(ctx, "c", put("k", "v")); return err },
		"CommitAndPublish": func(ctx context.Context) error {
			_, err := b.CommitAndPublish(ctx, "c", put("k", "v"), "ch")
			return err
		},
		"ChangesSince": func(ctx context.Context) error { _, err := b.ChangesSince(ctx, "c", "", 0); return err },
		"TryAcquire":   func(ctx context.Context) error { _, err := b.TryAcquire(ctx, "c", "k", time.Second); return err },
		"Release":      func(ctx context.Context) error { return b.Release(ctx, lease) },
		"Extend":       func(ctx context.Context) error { return b.Extend(ctx, lease, time.Second) },
		"WatchRelease": func(ctx context.Context) error {
			_, stop, err := b.WatchRelease(ctx, "c", "k")
			if stop != nil {
				stop()
			}
			return err
		},
		"Publish":   func(ctx context.Context) error { return b.Publish(ctx, "ch", []byte("x")) },
		"Subscribe": func(ctx context.Context) error { _, err := b.Subscribe(ctx, "ch"); return err },
	}
}

func TestEveryMethodHonoursADoneContext(t *testing.T) {
	b := newBackend(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, call := range calls(b) {
		if err := call(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("%s = %v, want context.Canceled", name, err)
		}
	}
	if snap, _ := mustLoad(t, b, "c"); snap.Revision != 0 {
		t.Fatal("a call with a done ctx wrote something")
	}
}

func TestEveryMethodFailsAfterClose(t *testing.T) {
	b := memory.New(nil)
	s, err := b.Subscribe(context.Background(), "ch")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, call := range calls(b) {
		if err := call(context.Background()); !errors.Is(err, memory.ErrClosed) || !errors.Is(err, broadcaster.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if _, err := s.Next(context.Background()); !errors.Is(err, broadcaster.ErrClosed) {
		t.Errorf("Next after Close = %v, want ErrClosed", err)
	}
	// Fault injection after Close does nothing, and does not panic.
	b.Wipe("c")
	b.Checkpoint("c")()
	b.BreakSubscriptions()
}

func TestNilContextIsAnErrorNotAPanic(t *testing.T) {
	b := newBackend(t, nil)
	for name, call := range calls(b) {
		if err := call(nil); err == nil {
			t.Errorf("%s(nil ctx) succeeded", name)
		}
	}
	s := mustSubscribe(t, b, "ch")
	//lint:ignore SA1012 a nil ctx is the bad input under test
	if _, err := s.Next(nil); err == nil {
		t.Error("Next(nil ctx) succeeded")
	}
}
