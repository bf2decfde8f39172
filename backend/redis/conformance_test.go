package redis_test

import (
	"context"
	"testing"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/conformance"
	"github.com/contextd-go/contextd/internal/redistest"
)

// TestConformance runs the suite on one redis-server with every capability
// on, and with each switched off in turn.
func TestConformance(t *testing.T) {
	srv := redistest.Start(t, nil)
	configs := []struct {
		name string
		opts redis.Options
	}{
		{"all", redis.Options{}},
		{"no-atomic-publish", redis.Options{DisableAtomicPublish: true}},
		{"no-lock-aware-commit", redis.Options{DisableLockAwareCommit: true}},
		{"no-change-log", redis.Options{DisableChangeLog: true}},
		{"no-release-notify", redis.Options{DisableReleaseNotify: true}},
		{"generic", redis.Options{DisableAtomicPublish: true, DisableLockAwareCommit: true, DisableChangeLog: true, DisableReleaseNotify: true}},
	}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			opts := cfg.opts
			conformance.Run(t, conformance.Harness{
				Capabilities: backend.Capabilities{
					AtomicPublish:   !opts.DisableAtomicPublish,
					LockAwareCommit: !opts.DisableLockAwareCommit,
					ChangeLog:       !opts.DisableChangeLog,
					ReleaseNotify:   !opts.DisableReleaseNotify,
				},
				NewBackend: func(t *testing.T) backend.Backend { return newBackend(t, srv, &opts) },
				BreakSubscriptions: func(t *testing.T) {
					n, err := srv.KillNamedClients(context.Background(), "pubsub", clientName(t))
					if err != nil || n == 0 {
						t.Fatalf("killing the test's pub/sub connections: killed %d, %v", n, err)
					}
				},
			})
		})
	}
}
