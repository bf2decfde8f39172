package conformance

import (
	"testing"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/locker"
)

func testCapabilities(t *testing.T, h Harness) {
	t.Run("Reported", func(t *testing.T) {
		t.Parallel()
		b := h.NewBackend(t)
		got, want := backend.CapabilitiesOf(b), h.Capabilities
		for _, c := range []struct {
			name      string
			got, want bool
		}{
			{"AtomicPublish", got.AtomicPublish, want.AtomicPublish},
			{"LockAwareCommit", got.LockAwareCommit, want.LockAwareCommit},
			{"ChangeLog", got.ChangeLog, want.ChangeLog},
			{"ReleaseNotify", got.ReleaseNotify, want.ReleaseNotify},
			{"FairLocks", got.FairLocks, want.FairLocks},
			{"Expiry", got.Expiry, want.Expiry},
		} {
			switch {
			case c.want && !c.got:
				t.Errorf("%s is declared by the harness but backend.CapabilitiesOf(%T) does not report it", c.name, b)
			case !c.want && c.got:
				t.Errorf("%s is not declared by the harness but backend.CapabilitiesOf(%T) reports it", c.name, b)
			}
		}
	})

	// AtomicPublish, ChangeLog and ReleaseNotify, when not declared, are
	// only checked above: their methods may exist but must not be used.
	// LockAwareCommit changes what Commit does, so its absence shows.
	if !h.Capabilities.LockAwareCommit {
		t.Run("NoLockAwareCommit", func(t *testing.T) {
			t.Parallel()
			holder, writer, name := h.NewBackend(t), h.NewBackend(t), uniqueName(t)
			mustAcquire(t, holder, name, "k", longTTL)
			h1, err := writer.Commit(t.Context(), name, batch(put("k", "1")))
			if err != nil {
				t.Fatalf("without LockAwareCommit, Commit to a key another holder locks = %v; want success (such a store does not enforce locks)", err)
			}
			released := mustAcquire(t, holder, name, "other", longTTL)
			if err := holder.Release(t.Context(), released); err != nil {
				t.Fatalf("Release: %v", err)
			}
			b := batch(put("k", "2"))
			b.Leases = []locker.Lease{released}
			h2, err := writer.Commit(t.Context(), name, b)
			if err != nil {
				t.Fatalf("without LockAwareCommit, Commit carrying a released lease = %v; want success (such a store ignores Batch.Leases)", err)
			}
			if h2.Revision != h1.Revision+1 {
				t.Errorf("Commit carrying a released lease returned revision %d, want %d", h2.Revision, h1.Revision+1)
			}
			wantEntries(t, "Load after writing a locked key without LockAwareCommit", mustLoad(t, writer, name).Entries,
				entry("k", "2", h2.Revision))
		})
	}
}
