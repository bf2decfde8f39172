package redis_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

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
		{"no-fair-locks", redis.Options{DisableFairLocks: true}},
		{"generic", redis.Options{DisableAtomicPublish: true, DisableLockAwareCommit: true, DisableChangeLog: true, DisableReleaseNotify: true, DisableFairLocks: true}},
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
					FairLocks:       !opts.DisableFairLocks,
					Expiry:          true,
				},
				NewBackend: func(t *testing.T) backend.Backend { return newBackend(t, srv, &opts) },
				ListLocks:  true,
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

// envConformanceAddr names a redis-server for TestConformanceChild.
const envConformanceAddr = "CONTEXTD_CONFORMANCE_REDIS_ADDR"

// TestConformanceTwiceOnOneServer runs the suite in two processes, one
// after the other, against one redis-server, as two CI runs against a
// shared Redis would: the second must not trip over the first's data.
func TestConformanceTwiceOnOneServer(t *testing.T) {
	srv := redistest.Start(t, nil)
	for run := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestConformanceChild$", "-test.count", "1")
		cmd.Env = append(os.Environ(), envConformanceAddr+"="+srv.Addr())
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("run %d of the suite on a server that ran it before: %v\n%s", run+1, err, out)
		}
	}
}

// TestConformanceChild runs the suite, every capability on, against the
// server named by CONTEXTD_CONFORMANCE_REDIS_ADDR; without it, it skips.
func TestConformanceChild(t *testing.T) {
	addr := os.Getenv(envConformanceAddr)
	if addr == "" {
		t.Skip("runs as a child of TestConformanceTwiceOnOneServer")
	}
	conformance.Run(t, conformance.Harness{
		Capabilities: backend.Capabilities{AtomicPublish: true, LockAwareCommit: true, ChangeLog: true, ReleaseNotify: true, FairLocks: true, Expiry: true},
		ListLocks:    true,
		NewBackend: func(t *testing.T) backend.Backend {
			return backendOn(t, goredis.NewClient(&goredis.Options{Addr: addr, ClientName: clientName(t)}), nil)
		},
		BreakSubscriptions: func(t *testing.T) {
			admin := goredis.NewClient(&goredis.Options{Addr: addr})
			defer admin.Close()
			if err := admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
				t.Fatalf("killing pub/sub connections: %v", err)
			}
		},
	})
}
