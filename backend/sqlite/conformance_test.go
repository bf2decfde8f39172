package sqlite_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/sqlite"
	"github.com/contextd-go/contextd/conformance"
)

// TestConformance runs the suite with every capability on, with each
// switched off in turn, and with all off. Each configuration has a file of
// its own, and every NewBackend call opens a new Backend on it (new
// connections, a poller of its own), as a separate process would.
func TestConformance(t *testing.T) {
	configs := []struct {
		name string
		opts sqlite.Options
	}{
		{"all", sqlite.Options{}},
		{"no-atomic-publish", sqlite.Options{DisableAtomicPublish: true}},
		{"no-lock-aware-commit", sqlite.Options{DisableLockAwareCommit: true}},
		{"no-change-log", sqlite.Options{DisableChangeLog: true}},
		{"no-release-notify", sqlite.Options{DisableReleaseNotify: true}},
		{"generic", sqlite.Options{DisableAtomicPublish: true, DisableLockAwareCommit: true, DisableChangeLog: true, DisableReleaseNotify: true, DisableExpiry: true}},
	}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "conformance.db")
			opts := cfg.opts
			// The suite runs 24 writers on one file, under -race, on a
			// machine other tests load too: a writer may wait for the
			// file's write lock far longer than the default 5 s, and the
			// suite is about what it writes, not how long that takes.
			opts.BusyTimeout = time.Minute
			conformance.Run(t, conformance.Harness{
				// Declared from the options, not asked of the backend, so
				// the suite's check that it reports exactly these means
				// something.
				Capabilities: backend.Capabilities{
					AtomicPublish:   !opts.DisableAtomicPublish,
					LockAwareCommit: !opts.DisableLockAwareCommit,
					ChangeLog:       !opts.DisableChangeLog,
					ReleaseNotify:   !opts.DisableReleaseNotify,
					Expiry:          !opts.DisableExpiry,
				},
				NewBackend: func(t *testing.T) backend.Backend { return openBackend(t, path, &opts) },
				ListLocks:  true,
				// No OverflowAfter: messages reach a Subscription when its
				// poller reads them, a poll interval after they were
				// published, so a reader that starts reading once it has
				// published SubscriberBuffer+1 messages may take the first
				// before the poller brings the last, and nothing overflows.
				// TestOverflowReportsLoss checks overflow with the poller
				// known to have read everything.
				// The loss a poller sees in practice: the message log
				// trimmed past what it had read.
				BreakSubscriptions: func(t *testing.T) { trimMessageLog(t, path) },
			})
		})
	}
}
