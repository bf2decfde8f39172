package postgres_test

import (
	"context"
	"testing"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/postgres"
	"github.com/contextd-go/contextd/conformance"
)

// TestConformance runs the suite on the shared cluster with every
// capability on, with each switched off in turn, and with all off; each
// configuration in a database of its own, so BreakSubscriptions hits only
// its own listeners.
func TestConformance(t *testing.T) {
	configs := []struct {
		name string
		opts postgres.Options
	}{
		{"all", postgres.Options{}},
		{"no-atomic-publish", postgres.Options{DisableAtomicPublish: true}},
		{"no-lock-aware-commit", postgres.Options{DisableLockAwareCommit: true}},
		{"no-change-log", postgres.Options{DisableChangeLog: true}},
		{"no-release-notify", postgres.Options{DisableReleaseNotify: true}},
		{"generic", postgres.Options{DisableAtomicPublish: true, DisableLockAwareCommit: true, DisableChangeLog: true, DisableReleaseNotify: true, DisableExpiry: true}},
	}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			db := newDB(t)
			opts := cfg.opts
			conformance.Run(t, conformance.Harness{
				Capabilities: backend.Capabilities{
					AtomicPublish:   !opts.DisableAtomicPublish,
					LockAwareCommit: !opts.DisableLockAwareCommit,
					ChangeLog:       !opts.DisableChangeLog,
					ReleaseNotify:   !opts.DisableReleaseNotify,
					Expiry:          !opts.DisableExpiry,
				},
				NewBackend: func(t *testing.T) backend.Backend { return newBackend(t, db, &opts) },
				ListLocks:  true,
				BreakSubscriptions: func(t *testing.T) {
					n, err := db.cluster.TerminateConnections(context.Background(), db.name, listenerApp)
					if err != nil || n == 0 {
						t.Fatalf("terminating the listening connections: ended %d, %v", n, err)
					}
				},
			})
		})
	}
}
