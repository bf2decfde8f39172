package memory_test

import (
	"strings"
	"testing"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/memory"
	"github.com/contextd-go/contextd/conformance"
)

// TestConformance runs the suite against every combination of switched-off
// capabilities, so both contextd's fast paths and its generic fallbacks
// run on the memory backend, and the suite can check that a switched-off
// capability is really absent. Fair locks are on in all sixteen, and off
// in two more: with everything else on, and with everything off.
func TestConformance(t *testing.T) {
	const buffer = 1024 // the default, spelled out for OverflowAfter
	for mask := range 18 {
		opts := memory.Options{
			DisableAtomicPublish:   mask&1 != 0,
			DisableLockAwareCommit: mask&2 != 0,
			DisableChangeLog:       mask&4 != 0,
			DisableReleaseNotify:   mask&8 != 0,
			DisableFairLocks:       mask >= 16,
			SubscriberBuffer:       buffer,
		}
		if mask == 17 {
			opts = memory.Options{DisableAtomicPublish: true, DisableLockAwareCommit: true, DisableChangeLog: true,
				DisableReleaseNotify: true, DisableFairLocks: true, DisableExpiry: true, SubscriberBuffer: buffer}
		}
		// One Backend per combination, shared by every NewBackend call:
		// several Contexts over one Backend are several processes over
		// one Redis.
		b := memory.New(&opts)
		t.Cleanup(func() { _ = b.Close() })
		// Declared from the mask, not asked of the backend, so the suite's
		// check that the backend reports exactly these means something.
		caps := backend.Capabilities{
			AtomicPublish:   !opts.DisableAtomicPublish,
			LockAwareCommit: !opts.DisableLockAwareCommit,
			ChangeLog:       !opts.DisableChangeLog,
			ReleaseNotify:   !opts.DisableReleaseNotify,
			FairLocks:       !opts.DisableFairLocks,
			Expiry:          !opts.DisableExpiry,
		}
		t.Run(comboName(caps), func(t *testing.T) {
			conformance.Run(t, conformance.Harness{
				Capabilities:       caps,
				ListLocks:          true,
				NewBackend:         func(*testing.T) backend.Backend { return b },
				OverflowAfter:      buffer + 1,
				BreakSubscriptions: func(*testing.T) { b.BreakSubscriptions() },
			})
		})
	}
}

// comboName names a combination by the capabilities left on, or "generic"
// when none is.
func comboName(c backend.Capabilities) string {
	var on []string
	if c.AtomicPublish {
		on = append(on, "atomic")
	}
	if c.LockAwareCommit {
		on = append(on, "lockaware")
	}
	if c.ChangeLog {
		on = append(on, "log")
	}
	if c.ReleaseNotify {
		on = append(on, "notify")
	}
	if c.FairLocks {
		on = append(on, "fair")
	}
	if c.Expiry {
		on = append(on, "expiry")
	}
	if len(on) == 0 {
		return "generic"
	}
	return strings.Join(on, "+")
}
