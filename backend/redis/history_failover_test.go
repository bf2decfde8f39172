package redis_test

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/checker"
	"github.com/contextd-go/contextd/internal/redistest"
)

// TestHistoryFailoverForgetsLostWrites is a failover history the random
// scenarios rarely produce, made deterministic. After a Sentinel failover
// the new master takes writes (revisions 2–4) that a reader subscribed on
// the old master does not hear of; then a process whose client has not
// followed the failover writes key x to the old master, at revision 2 of
// the old history (acknowledged without WAIT; ErrNotReplicated with it, but
// applied all the same). The reader applies it. Once the old master
// replicates the new one, the reader catches up from revision 2 with the
// new master's log, and must notice that it continues another history: it
// must drop x, which the new master never had, and converge to the new
// master's state, as the README promises after a failover.
//
// The periodic check is set to a minute, so it plays no part: it would not
// help either, since the new master's revision is never below the reader's.
func TestHistoryFailoverForgetsLostWrites(t *testing.T) {
	t.Parallel()
	for _, mode := range failoverModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testFailoverForgetsLostWrites(t, mode.waitReplicas)
		})
	}
}

func testFailoverForgetsLostWrites(t *testing.T, waitReplicas int) {
	s := redistest.StartSentinel(t)
	ctx := faultCtx(t)
	const name = "history-failover-lost"
	ropts := redis.Options{WaitReplicas: waitReplicas, WaitTimeout: 100 * time.Millisecond}
	opts := &contextd.Options{ResyncInterval: time.Minute}
	var ps []*process
	open := func(suffix string, client goredis.UniversalClient) *contextd.Context[checker.Value] {
		p := newProcess(t, clientName(t)+suffix, client, ropts)
		ps = append(ps, p)
		return openInstance[checker.Value](t, p.b, name, opts)
	}
	reader := open("-reader", failoverClient(s, clientName(t)+"-reader"))
	writer := open("-writer", failoverClient(s, clientName(t)+"-writer"))
	old := s.Master()
	// A process whose client has not followed the failover (yet).
	stale := open("-stale", goredis.NewClient(historyClient(old.Addr(), clientName(t)+"-stale")))

	v := func(s uint64) checker.Value { return checker.Value{W: 1, S: s} }
	if err := writer.UpdateContext(ctx, "a", v(1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the reader has revision 1", func() error {
		if r := reader.Revision(); r != 1 {
			return fmt.Errorf("at revision %d", r)
		}
		return nil
	})
	if err := s.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failover clients' command connections leave the old master", func() error {
		if n, err := namedClients(ctx, old, "normal", ps[:2]); err != nil || n > 0 {
			return fmt.Errorf("%d connections left (%v)", n, err)
		}
		return nil
	})
	// Without a replica yet, the new master applies writes but cannot
	// have them acknowledged in the WAIT mode.
	for i := range 3 {
		if err := writer.UpdateContext(ctx, "y", v(uint64(2+i))); err != nil && !(waitReplicas > 0 && errors.Is(err, redis.ErrNotReplicated)) {
			t.Fatalf("write to the new master: %v", err)
		}
	}
	// The old master still takes writes until Sentinel demotes it.
	err := stale.UpdateContext(ctx, "x", v(5))
	if waitReplicas == 0 && err != nil || waitReplicas > 0 && !errors.Is(err, redis.ErrNotReplicated) {
		t.Fatalf("write to the old master after the failover: %v", err)
	}
	eventually(t, "the reader, subscribed on the old master, applies the write there", func() error {
		if _, ok, _ := reader.Get(ctx, "x"); !ok {
			return fmt.Errorf("not yet (revision %d, stats %+v)", reader.Revision(), reader.Stats())
		}
		return nil
	})
	// What Sentinel does some 10 s later.
	host, port, _ := net.SplitHostPort(s.Master().Addr())
	if _, err := old.Do(ctx, "REPLICAOF", host, port); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the old master replicates the new one", func() error {
		info, err := old.Info(ctx, "replication")
		if err != nil || info["role"] != "slave" || info["master_link_status"] != "up" {
			return fmt.Errorf("role %s, link %s (%v)", info["role"], info["master_link_status"], err)
		}
		return nil
	})
	// A write to the new master reaches the reader through the old one
	// (the replica may not acknowledge it in time yet, but it has it).
	if err := writer.UpdateContext(ctx, "y", v(6)); err != nil && !(waitReplicas > 0 && errors.Is(err, redis.ErrNotReplicated)) {
		t.Fatal(err)
	}

	fresh := open("-fresh", failoverClient(s, clientName(t)+"-fresh"))
	want, err := fresh.GetContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := want["x"]; ok {
		t.Fatalf("the new master has the old master's lost write: %v", want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for i, c := range []*contextd.Context[checker.Value]{reader, writer} {
		for {
			got, err := c.GetContext(ctx)
			if err == nil && checker.Diff(want, got) == "" && c.Revision() == fresh.Revision() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("instance %d does not converge to the new master within 5 s: at revision %d, new master at %d; differences: %s (stats %+v; reader at %d, stats %+v)",
					i, c.Revision(), fresh.Revision(), checker.Diff(want, got), c.Stats(), reader.Revision(), reader.Stats())
			}
			time.Sleep(2 * time.Millisecond) // polling a condition, with a deadline
		}
	}
}
