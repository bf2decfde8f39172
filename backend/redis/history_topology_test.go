package redis_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/internal/checker"
	"github.com/contextd-go/contextd/internal/redistest"
)

// History scenarios on Redis topologies: a Sentinel failover, with and
// without the WAIT-for-replicas mode, and a 3-master Cluster with a live
// context's slot migrated mid-scenario.

// failoverClient returns a Sentinel failover client as redis.New's doc
// asks for one.
func failoverClient(s *redistest.Sentinel, name string) *goredis.Client {
	return goredis.NewFailoverClient(&goredis.FailoverOptions{
		MasterName:            s.MasterName(),
		SentinelAddrs:         []string{s.SentinelAddr()},
		ClientName:            name,
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
	})
}

// namedClients returns how many connections of type typ named as one of ps
// srv has.
func namedClients(ctx context.Context, srv *redistest.Server, typ string, ps []*process) (int, error) {
	v, err := srv.Do(ctx, "CLIENT", "LIST", "TYPE", typ)
	if err != nil {
		return 0, err
	}
	list, _ := v.(string)
	names := map[string]bool{}
	for _, p := range ps {
		names[p.name] = true
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		for _, f := range strings.Fields(line) {
			if name, ok := strings.CutPrefix(f, "name="); ok && names[name] {
				n++
			}
		}
	}
	return n, nil
}

// failoverMode is one way of running the failover scenario.
type failoverMode struct {
	name string
	// waitReplicas is redis.Options.WaitReplicas.
	waitReplicas int
	// loss is what the store may lose: with WAIT only writes of unknown
	// outcome (ErrNotReplicated, say), without it acknowledged ones too.
	loss checker.Loss
}

var failoverModes = []failoverMode{
	{name: "wait", waitReplicas: 1, loss: checker.UnknownMayVanish},
	{name: "async", waitReplicas: 0, loss: checker.AckedMayVanish},
}

// runFailoverScenario runs the workload on a master + replica + Sentinel
// through failover clients, and has Sentinel fail over a third of the way
// in. Strong reads are not recorded from the failover until no instance's
// command connection is left on the old master: until then a client that
// has not heard of the new master reads the old one, which Redis does not
// make linearizable. The old master is then made a replica of the new one,
// as Sentinel does by itself some 10 s later; runs of 5 s or more (soak
// runs) leave that to Sentinel in half of the seeds.
func runFailoverScenario(t *testing.T, mode failoverMode, seed uint64, length time.Duration) checker.Report {
	rng := rand.New(rand.NewPCG(seed, 0))
	waitSentinel := length >= 5*time.Second && rng.IntN(2) == 0
	s := redistest.StartSentinel(t)
	n := 4 + rng.IntN(5)
	w := drawWorkload(rng, false)
	ropts := historyRedisOptions(redis.Options{WaitReplicas: mode.waitReplicas, WaitTimeout: 200 * time.Millisecond})
	ps := make([]*process, n)
	for i := range ps {
		name := fmt.Sprintf("%s-i%d", clientName(t), i)
		ps[i] = newProcess(t, name, failoverClient(s, name), ropts)
	}
	h := newHistory(t, "history-failover", seed, w, ps)
	h.start()
	defer h.halt()
	begin := time.Now()
	sleepUntil(length/3, begin.Add(length))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old := s.Master()
	h.strongOff.Store(true)
	if err := s.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("failover done after %v", time.Since(begin).Round(time.Millisecond))
	eventually(t, "every instance's command connections leave the old master", func() error {
		if n, err := namedClients(ctx, old, "normal", ps); err != nil || n > 0 {
			return fmt.Errorf("%d connections left (%v)", n, err)
		}
		return nil
	})
	h.strongOff.Store(false)
	if waitSentinel {
		t.Log("waiting for Sentinel to demote the old master")
	} else {
		host, port, _ := net.SplitHostPort(s.Master().Addr())
		if _, err := old.Do(ctx, "REPLICAOF", host, port); err != nil {
			t.Fatalf("REPLICAOF on the old master: %v", err)
		}
	}
	eventuallyWithin(t, time.Minute, "the old master replicates the new one", func() error {
		info, err := old.Info(ctx, "replication")
		if err != nil {
			return err
		}
		if info["role"] != "slave" || info["master_link_status"] != "up" {
			return fmt.Errorf("role %s, link %s", info["role"], info["master_link_status"])
		}
		return nil
	})
	t.Logf("the old master replicates the new one after %v", time.Since(begin).Round(time.Millisecond))
	sleepUntil(length*2/3, time.Now().Add(length*2/3))
	h.settle()
	h.halt()

	freshName := clientName(t) + "-fresh"
	fresh := newProcess(t, freshName, failoverClient(s, freshName), ropts)
	rep := h.checkHistory(fresh.b, mode.loss)
	t.Logf("%d acknowledged writes lost in the failover", rep.Lost)
	return rep
}

// TestHistoryFailover runs the Sentinel failover scenario in the
// WAIT-for-replicas mode, where no acknowledged write may be lost and
// every check applies (strong reads during the failover aside), and with
// asynchronous replication, where acknowledged writes may be lost and the
// revision may go back: there every instance must still converge to what
// the new master holds, which must be a history of its own without holes
// and with no half transaction.
func TestHistoryFailover(t *testing.T) {
	t.Parallel()
	for _, mode := range failoverModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			runFailoverScenario(t, mode, seedFor(t), historyLength())
		})
	}
}

// clusterContexts returns count context names whose slots are owned by
// different nodes of c.
func clusterContexts(t *testing.T, c *redistest.Cluster, count int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultWait)
	defer cancel()
	var names []string
	owners := map[int]bool{}
	for i := 0; len(names) < count; i++ {
		if i > 1000 {
			t.Fatalf("no %d contexts on different nodes among 1000 names", count)
		}
		name := fmt.Sprintf("history-cluster-%d", i)
		owner, err := c.SlotOwner(ctx, redistest.KeySlot("{contextd:"+name+"}"))
		if err != nil {
			t.Fatal(err)
		}
		if !owners[owner] {
			owners[owner] = true
			names = append(names, name)
		}
	}
	return names
}

// clusterClient returns a cluster client as redis.New's doc asks for one.
func clusterClient(c *redistest.Cluster, name string) *goredis.ClusterClient {
	return goredis.NewClusterClient(&goredis.ClusterOptions{
		Addrs:                 c.Addrs(),
		ClientName:            name,
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
	})
}

// runClusterScenario runs one history per shard of a 3-master cluster,
// every instance (a cluster client of its own) serving all three contexts.
// It migrates the slot of the first context to another node a third of the
// way in, and the second's two thirds of the way in; or, with killNormal,
// kills the command connections of random instances on every node every
// 100–400 ms instead.
func runClusterScenario(t *testing.T, seed uint64, length time.Duration, killNormal bool) []checker.Report {
	rng := rand.New(rand.NewPCG(seed, 0))
	c := redistest.StartCluster(t, 3)
	names := clusterContexts(t, c, 3)
	n := 4 + rng.IntN(3)
	ropts := historyRedisOptions(redis.Options{})
	ps := make([]*process, n)
	for i := range ps {
		name := fmt.Sprintf("%s-i%d", clientName(t), i)
		ps[i] = newProcess(t, name, clusterClient(c, name), ropts)
	}
	hs := make([]*history, len(names))
	for j, name := range names {
		w := drawWorkload(rng, false)
		w.workers = 2
		hs[j] = newHistory(t, name, seed+uint64(j), w, ps)
	}
	for _, h := range hs {
		h.start()
		defer h.halt()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	begin := time.Now()
	if killNormal {
		killClusterClients(t, c, ps, rng, begin.Add(length))
	}
	for j, at := range []time.Duration{length / 3, length * 2 / 3} {
		if killNormal {
			break
		}
		sleepUntil(time.Until(begin.Add(at)), begin.Add(length))
		slot := redistest.KeySlot("{contextd:" + names[j] + "}")
		from, err := c.SlotOwner(ctx, slot)
		if err != nil {
			t.Fatal(err)
		}
		to := (from + 1 + rng.IntN(2)) % 3
		start := time.Now()
		if err := c.MigrateSlot(ctx, slot, to); err != nil {
			t.Fatalf("migrating the slot of %s: %v", names[j], err)
		}
		t.Logf("slot %d of %s moved from node %d to %d in %v", slot, names[j], from, to, time.Since(start).Round(time.Millisecond))
	}
	sleepUntil(time.Until(begin.Add(length)), begin.Add(length))
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.settle()
			h.halt()
		}()
	}
	wg.Wait()
	fresh := newProcess(t, clientName(t)+"-fresh", clusterClient(c, clientName(t)+"-fresh"), ropts)
	var reps []checker.Report
	for j, h := range hs {
		rep := h.checkHistory(fresh.b, checker.NoLoss)
		if j < 2 && !killNormal {
			losses := uint64(0)
			for _, cx := range h.cs {
				losses += cx.Stats().Losses
			}
			if losses == 0 {
				t.Errorf("%s: no instance reported a loss when its slot moved", h.name)
			}
		}
		reps = append(reps, rep)
	}
	return reps
}

// killClusterClients kills the command connections of random instances on
// every node, every 100–400 ms, until the deadline.
func killClusterClients(t *testing.T, c *redistest.Cluster, ps []*process, rng *rand.Rand, until time.Time) {
	kills := 0
	for sleepUntil(time.Duration(100+rng.IntN(300))*time.Millisecond, until) {
		for _, j := range rng.Perm(len(ps))[:1+rng.IntN(len(ps))] {
			for _, node := range c.Nodes() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				k, err := node.KillNamedClients(ctx, "normal", ps[j].name)
				cancel()
				if err != nil {
					// The fault is best effort: on a loaded machine the
					// injector's own command can time out. The scenario
					// fails below only if no connection was killed at all.
					t.Logf("CLIENT KILL on %s: %v", node.Addr(), err)
				}
				kills += k
			}
		}
	}
	if kills == 0 {
		t.Error("no command connection was killed: the fault did not happen")
	}
	t.Logf("%d command connections killed", kills)
}

// TestHistoryCluster runs the cluster scenarios: three contexts, one per
// shard, checked as in the single-server scenarios; in "migrate" two of
// them move to another shard while in use, in "kill-normal" the instances'
// command connections are killed on every node again and again.
func TestHistoryCluster(t *testing.T) {
	t.Parallel()
	for _, kill := range []bool{false, true} {
		name := "migrate"
		if kill {
			name = "kill-normal"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runClusterScenario(t, seedFor(t), historyLength(), kill)
		})
	}
}
