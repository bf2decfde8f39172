package redistest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/contextd-go/contextd/internal/slot"
)

// Slots is the number of hash slots of a Redis Cluster.
const Slots = slot.Count

const clusterTimeout = 30 * time.Second

// Cluster is a Redis Cluster of masters without replicas, started by
// [StartCluster].
type Cluster struct {
	nodes []*Server
	ids   []string // cluster node ids, by index
}

// StartCluster starts a Redis Cluster of masters nodes (use 3) without
// replicas, each a redis-server in its own t.TempDir() with
// cluster-node-timeout 2000, the hash slots split evenly among them in index
// order. It returns once every node reports cluster_state:ok and knows all
// the others as connected masters (about 2 s: a master waits that long after
// starting before it declares the cluster ok). The nodes are killed in
// t.Cleanup.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 1 || masters > Slots {
		t.Fatalf("redistest: StartCluster(%d): need 1 to %d masters", masters, Slots)
		return nil
	}
	bin := Require(t)
	begin := time.Now()
	c := &Cluster{ids: make([]string, masters)}
	for range masters {
		dir := t.TempDir()
		s := launchNew(t, bin, dir, "", nil, 1, func(port int, extra []int) string {
			return serverConf(dir, port, Options{}, []string{
				"cluster-enabled yes",
				"cluster-config-file nodes.conf",
				"cluster-node-timeout 2000",
				"cluster-port " + strconv.Itoa(extra[0]),
			})
		})
		c.nodes = append(c.nodes, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if err := c.setup(ctx); err != nil {
		t.Fatalf("redistest: setting up cluster: %v%s", err, c.logs())
	}
	if err := poll(ctx, c.ready); err != nil {
		t.Fatalf("redistest: cluster not ok within %v: %v%s", clusterTimeout, err, c.logs())
	}
	t.Logf("redistest: cluster of %d masters ready in %v", masters, time.Since(begin).Round(time.Millisecond))
	return c
}

func (c *Cluster) setup(ctx context.Context) error {
	n := len(c.nodes)
	for i, s := range c.nodes {
		id, err := s.Do(ctx, "CLUSTER", "MYID")
		if err != nil {
			return fmt.Errorf("%s: CLUSTER MYID: %w", s.Addr(), err)
		}
		c.ids[i], _ = id.(string)
		// Distinct epochs up front spare the nodes resolving collisions.
		if _, err := s.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1)); err != nil {
			return fmt.Errorf("%s: CLUSTER SET-CONFIG-EPOCH: %w", s.Addr(), err)
		}
		lo, hi := i*Slots/n, (i+1)*Slots/n-1
		if _, err := s.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)); err != nil {
			return fmt.Errorf("%s: CLUSTER ADDSLOTSRANGE %d %d: %w", s.Addr(), lo, hi, err)
		}
	}
	first := c.nodes[0]
	for _, s := range c.nodes[1:] {
		if _, err := s.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(first.port), strconv.Itoa(first.extra[0])); err != nil {
			return fmt.Errorf("%s: CLUSTER MEET: %w", s.Addr(), err)
		}
	}
	return nil
}

// ready reports whether every node sees the cluster ok with all nodes as
// connected masters.
func (c *Cluster) ready(ctx context.Context) (bool, error) {
	for _, s := range c.nodes {
		v, err := s.Do(ctx, "CLUSTER", "INFO")
		if err != nil {
			return false, err
		}
		text, _ := v.(string)
		if st := parseInfo(text)["cluster_state"]; st != "ok" {
			return false, fmt.Errorf("%s: cluster_state:%s", s.Addr(), st)
		}
		v, err = s.Do(ctx, "CLUSTER", "NODES")
		if err != nil {
			return false, err
		}
		text, _ = v.(string)
		if err := c.checkNodes(text); err != nil {
			return false, fmt.Errorf("%s: %w", s.Addr(), err)
		}
	}
	return true, nil
}

// checkNodes checks that a CLUSTER NODES reply lists exactly our nodes, all
// connected masters in good health.
func (c *Cluster) checkNodes(text string) error {
	seen := 0
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(l)
		if len(f) < 8 {
			return fmt.Errorf("bad CLUSTER NODES line %q", l)
		}
		flags := "," + f[2] + ","
		if !strings.Contains(flags, ",master,") || f[7] != "connected" {
			return fmt.Errorf("node %s is %s, %s", f[1], f[2], f[7])
		}
		for _, bad := range []string{",fail,", ",fail?,", ",handshake,", ",noaddr,"} {
			if strings.Contains(flags, bad) {
				return fmt.Errorf("node %s is %s", f[1], f[2])
			}
		}
		seen++
	}
	if seen != len(c.nodes) {
		return fmt.Errorf("knows %d nodes, want %d", seen, len(c.nodes))
	}
	return nil
}

func (c *Cluster) logs() string {
	var b strings.Builder
	for _, s := range c.nodes {
		fmt.Fprintf(&b, "\n--- %s ---\n%s", s.Addr(), s.LogTail(15))
	}
	return b.String()
}

// Addrs returns the nodes' addresses, in index order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Nodes returns the nodes, in index order (the order of [Cluster.Addrs]).
func (c *Cluster) Nodes() []*Server {
	return append([]*Server(nil), c.nodes...)
}

// SlotOwner returns the index of the node that owns slot, as the first node
// that answers sees it.
func (c *Cluster) SlotOwner(ctx context.Context, slot int) (int, error) {
	var errs []error
	for _, s := range c.nodes {
		i, err := c.ownerSeenBy(ctx, s, slot)
		if err == nil {
			return i, nil
		}
		errs = append(errs, err)
	}
	return -1, errors.Join(errs...)
}

// ownerSeenBy returns the index of the node that owns slot in s's view.
func (c *Cluster) ownerSeenBy(ctx context.Context, s *Server, slot int) (int, error) {
	v, err := s.Do(ctx, "CLUSTER", "SLOTS")
	if err != nil {
		return -1, err
	}
	ranges, _ := v.([]any)
	for _, r := range ranges {
		// [start, end, [ip, port, id, ...], replicas...]
		f, _ := r.([]any)
		if len(f) < 3 {
			continue
		}
		lo, _ := f[0].(int64)
		hi, _ := f[1].(int64)
		if int64(slot) < lo || int64(slot) > hi {
			continue
		}
		owner, _ := f[2].([]any)
		if len(owner) >= 2 {
			port, _ := owner[1].(int64)
			for i, n := range c.nodes {
				if int64(n.port) == port {
					return i, nil
				}
			}
		}
		return -1, fmt.Errorf("redistest: %s: slot %d is owned by unknown node %v", s.Addr(), slot, f[2])
	}
	return -1, fmt.Errorf("redistest: %s: slot %d is not assigned", s.Addr(), slot)
}

// MigrateSlot moves hash slot slot, with all its keys, from its owner to the
// node with index to, as redis-cli --cluster reshard does: CLUSTER SETSLOT
// IMPORTING/MIGRATING, MIGRATE of the keys in batches, then CLUSTER SETSLOT
// NODE on every node. It returns once every node sees to as the owner. While
// it runs, clients get ASK redirections for keys already moved; afterwards the
// old owner answers MOVED. Moving a slot to its owner does nothing.
func (c *Cluster) MigrateSlot(ctx context.Context, slot int, to int) error {
	if slot < 0 || slot >= Slots {
		return fmt.Errorf("redistest: MigrateSlot: slot %d out of range", slot)
	}
	if to < 0 || to >= len(c.nodes) {
		return fmt.Errorf("redistest: MigrateSlot: no node %d", to)
	}
	from, err := c.SlotOwner(ctx, slot)
	if err != nil {
		return err
	}
	if from == to {
		return nil
	}
	src, dst := c.nodes[from], c.nodes[to]
	sl := strconv.Itoa(slot)
	if _, err := dst.Do(ctx, "CLUSTER", "SETSLOT", sl, "IMPORTING", c.ids[from]); err != nil {
		return fmt.Errorf("redistest: %s: CLUSTER SETSLOT %d IMPORTING: %w", dst.Addr(), slot, err)
	}
	if _, err := src.Do(ctx, "CLUSTER", "SETSLOT", sl, "MIGRATING", c.ids[to]); err != nil {
		return fmt.Errorf("redistest: %s: CLUSTER SETSLOT %d MIGRATING: %w", src.Addr(), slot, err)
	}
	for {
		v, err := src.Do(ctx, "CLUSTER", "GETKEYSINSLOT", sl, "100")
		if err != nil {
			return fmt.Errorf("redistest: %s: CLUSTER GETKEYSINSLOT %d: %w", src.Addr(), slot, err)
		}
		keys, _ := v.([]any)
		if len(keys) == 0 {
			break
		}
		args := []string{"MIGRATE", "127.0.0.1", strconv.Itoa(dst.port), "", "0", "5000", "REPLACE"}
		if dst.password != "" {
			args = append(args, "AUTH", dst.password)
		}
		args = append(args, "KEYS")
		for _, k := range keys {
			ks, _ := k.(string)
			args = append(args, ks)
		}
		if _, err := src.Do(ctx, args...); err != nil {
			return fmt.Errorf("redistest: %s: MIGRATE to %s: %w", src.Addr(), dst.Addr(), err)
		}
	}
	// The new owner first: it bumps its config epoch, so its claim wins.
	order := []int{to, from}
	for i := range c.nodes {
		if i != to && i != from {
			order = append(order, i)
		}
	}
	for _, i := range order {
		if _, err := c.nodes[i].Do(ctx, "CLUSTER", "SETSLOT", sl, "NODE", c.ids[to]); err != nil {
			return fmt.Errorf("redistest: %s: CLUSTER SETSLOT %d NODE: %w", c.nodes[i].Addr(), slot, err)
		}
	}
	return poll(ctx, func(ctx context.Context) (bool, error) {
		for _, s := range c.nodes {
			i, err := c.ownerSeenBy(ctx, s, slot)
			if err != nil {
				return false, err
			}
			if i != to {
				return false, fmt.Errorf("redistest: %s still sees slot %d on %s", s.Addr(), slot, c.nodes[i].Addr())
			}
		}
		return true, nil
	})
}

// KeySlot returns the hash slot of key (see slot.Of).
func KeySlot(key string) int { return slot.Of(key) }
