package redis_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/conformance"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// clusterBackend returns a Backend on a cluster client of its own.
func clusterBackend(t testing.TB, c *redistest.Cluster) *redis.Backend {
	t.Helper()
	return backendOn(t, goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs(), ClientName: clientName(t)}), nil)
}

// TestClusterConformance runs the suite on a 3-master Redis Cluster: one
// slot per context (the hash tag), sharded pub/sub, scripts routed by key.
func TestClusterConformance(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	conformance.Run(t, conformance.Harness{
		Capabilities: backend.Capabilities{AtomicPublish: true, LockAwareCommit: true, ChangeLog: true, ReleaseNotify: true, FairLocks: true, Expiry: true},
		NewBackend:   func(t *testing.T) backend.Backend { return clusterBackend(t, c) },
		ListLocks:    true,
		BreakSubscriptions: func(t *testing.T) {
			killed := 0
			for _, n := range c.Nodes() {
				k, err := n.KillNamedClients(context.Background(), "pubsub", clientName(t))
				if err != nil {
					t.Fatal(err)
				}
				killed += k
			}
			if killed == 0 {
				t.Fatal("no pub/sub connection of the test found on any node")
			}
		},
	})
}

// TestClusterSlotMigration moves a live context's slot to another shard:
// the instances' sharded subscriptions are dropped by Redis (sunsubscribe),
// they subscribe again on the new owner and converge.
func TestClusterSlotMigration(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	ctx := context.Background()
	const name = "migrating"
	cs := make([]*contextd.Context[int], 3)
	for i := range cs {
		cx, err := contextd.New[int](clusterBackend(t, c), name, &contextd.Options{ResyncInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := cx.Initialize(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cx.Close() })
		cs[i] = cx
	}
	for i := range 10 {
		if err := cs[i%3].UpdateContext(ctx, fmt.Sprint("k", i), i); err != nil {
			t.Fatal(err)
		}
	}
	slot := redistest.KeySlot("{contextd:" + name + "}")
	owner, err := c.SlotOwner(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MigrateSlot(ctx, slot, (owner+1)%3); err != nil {
		t.Fatal(err)
	}
	// Writes after the move reach every instance through the new shard.
	for i := 10; i < 20; i++ {
		if err := cs[i%3].UpdateContext(ctx, fmt.Sprint("k", i%12), i); err != nil {
			t.Fatalf("write after migration: %v", err)
		}
	}
	if err := cs[0].Sync(ctx); err != nil {
		t.Fatal(err)
	}
	want, err := cs[0].GetContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	head := cs[0].Revision()
	if head != 20 {
		t.Fatalf("store at revision %d after 20 writes", head)
	}
	deadline := time.Now().Add(10 * time.Second)
	for i, cx := range cs {
		for {
			got, _ := cx.GetContext(ctx)
			if cx.Revision() == head && maps.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("instance %d stuck at revision %d of %d after the slot moved (stats %+v)", i, cx.Revision(), head, cx.Stats())
			}
			time.Sleep(time.Millisecond) // polling a condition, with a deadline
		}
	}
	// The move was noticed as a possible loss, not missed silently. (The
	// periodic check may heal an instance first: the subscription follows
	// the slot only once the client's view of the cluster has caught up.)
	for i, cx := range cs {
		for cx.Stats().Losses == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("instance %d reported no loss when its subscription was moved (stats %+v)", i, cx.Stats())
			}
			time.Sleep(time.Millisecond) // polling a condition, with a deadline
		}
	}
}

// TestSentinelClient runs contexts over a Sentinel failover client: writes,
// propagation and locks work through it, and the load runs on the
// client's main pool, not its (default) pipeline pool.
func TestSentinelClient(t *testing.T) {
	s := redistest.StartSentinel(t)
	ctx := context.Background()
	var clients []*goredis.Client
	newInstance := func() *contextd.Context[string] {
		client := goredis.NewFailoverClient(&goredis.FailoverOptions{MasterName: s.MasterName(), SentinelAddrs: []string{s.SentinelAddr()}})
		clients = append(clients, client)
		t.Cleanup(func() { _ = client.Close() })
		b, err := redis.New(client, nil)
		if err != nil {
			t.Fatal(err)
		}
		cx, err := contextd.New[string](b, "sentinel", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := cx.Initialize(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cx.Close() })
		return cx
	}
	a, o := newInstance(), newInstance()
	watch := o.Watch(ctx)
	if err := a.UpdateContext(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if ch := <-watch; ch.Key != "k" || ch.Value != "v" {
		t.Fatalf("other instance saw %+v", ch)
	}
	l, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateContext(ctx, "k", "locked", contextd.WithLock(l)); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		if ps := c.PoolStats().PipelineStats; ps == nil || ps.TotalConns != 0 {
			t.Errorf("instance %d: pipeline pool %+v; want one with no connection (pipelines on the main pool)", i, ps)
		}
	}
}

// TestWaitForReplicas checks the WAIT-for-replicas mode: writes and locks
// succeed when enough replicas acknowledge, and fail with ErrNotReplicated
// (saying so) when not in time.
func TestWaitForReplicas(t *testing.T) {
	s := redistest.StartSentinel(t)
	ctx := context.Background()
	open := func(replicas int) (*contextd.Context[int], *redis.Backend) {
		client := goredis.NewClient(&goredis.Options{Addr: s.Master().Addr()})
		t.Cleanup(func() { _ = client.Close() })
		b, err := redis.New(client, &redis.Options{WaitReplicas: replicas, WaitTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		cx, err := contextd.New[int](b, "wait", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := cx.Initialize(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cx.Close() })
		return cx, b
	}
	one, _ := open(1)
	for i := range 5 {
		if err := one.UpdateContext(ctx, "k", i); err != nil {
			t.Fatalf("write acknowledged by the one replica: %v", err)
		}
	}
	l, err := one.AcquireLock(ctx, contextd.LockOptions{Key: "k"})
	if err != nil {
		t.Fatalf("lock with one replica: %v", err)
	}
	if err := l.Extend(ctx, 0); err != nil {
		t.Fatalf("extend with one replica: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// The replica has what the master acknowledged.
	if v, err := s.Replica().Do(ctx, "HGET", "{contextd:wait}:data", "k"); err != nil || v != "4" {
		t.Fatalf("replica holds %v (%v), want the last acknowledged write", v, err)
	}

	two, _ := open(2)
	start := time.Now()
	err = two.UpdateContext(ctx, "k", 99)
	if !errors.Is(err, redis.ErrNotReplicated) || !strings.Contains(err.Error(), "1 of 2 replicas") {
		t.Fatalf("write wanting 2 replicas of 1 = %v, want ErrNotReplicated saying 1 of 2", err)
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Errorf("gave up after %v, before the 200ms WaitTimeout", waited)
	}
	if _, err := two.AcquireLock(ctx, contextd.LockOptions{Key: "other", MaxRetries: -1}); !errors.Is(err, redis.ErrNotReplicated) {
		t.Fatalf("lock wanting 2 replicas of 1 = %v, want ErrNotReplicated", err)
	}
	unused := goredis.NewClient(&goredis.Options{Addr: s.Master().Addr()})
	defer unused.Close()
	if _, err := redis.New(unused, &redis.Options{WaitReplicas: -1}); err == nil {
		t.Error("negative WaitReplicas accepted")
	}
}
