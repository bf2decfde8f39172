package redis_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/internal/redistest"
)

// TestHistoryClusterLostReplyAppliedOnce is the smallest history behind
// the doubled commits of TestHistoryCluster/kill-normal, made
// deterministic: a Modify on a cluster client (made with MaxRetries: -1,
// as redis.New asks) runs its commit, the connection breaks before the
// reply arrives, and another instance commits meanwhile. The increment
// must count at most once, and exactly once if Modify succeeds.
//
// Regression: go-redis's ClusterClient resends a command whose connection
// broke up to MaxRedirects times whatever MaxRetries says; the commit
// script used to recognise only an immediate resend of itself, so after the
// other commit the resend failed its condition, Modify took that for a
// conflict, and incremented again. Commits of clients that may resend now
// keep their heads under their ids.
func TestHistoryClusterLostReplyAppliedOnce(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	ctx := faultCtx(t)
	const name = "history-lost-reply"
	owner, err := c.SlotOwner(ctx, redistest.KeySlot("{contextd:"+name+"}"))
	if err != nil {
		t.Fatal(err)
	}
	node := c.Nodes()[owner]
	proxy := redistest.StartProxy(t, node.Addr())
	// Instance a reaches the context's node through the proxy.
	via := goredis.NewClusterClient(&goredis.ClusterOptions{
		Addrs: c.Addrs(), ClientName: clientName(t) + "-a", MaxRetries: -1, ContextTimeoutEnabled: true,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == node.Addr() {
				addr = proxy.Addr()
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	})
	a := openInstance[int](t, newProcess(t, clientName(t)+"-a", via, redis.Options{}).b, name, noResync)
	b := openInstance[int](t, newProcess(t, clientName(t)+"-b", clusterClient(c, clientName(t)+"-b"), redis.Options{}).b, name, noResync)
	inc := func(cur int, _ bool) (int, error) { return cur + 1, nil }
	if _, err := a.Modify(ctx, counterKey, inc); err != nil {
		t.Fatal(err)
	}
	revision := func() string {
		v, err := node.Do(ctx, "HGET", "{contextd:"+name+"}:meta", "rev")
		if err != nil {
			t.Fatal(err)
		}
		s, _ := v.(string)
		return s
	}

	proxy.StallReplies()
	res := make(chan error, 1)
	go func() {
		_, err := a.Modify(ctx, counterKey, inc)
		res <- err
	}()
	eventually(t, "a's commit has run in Redis", func() error {
		if r := revision(); r != "2" {
			return fmt.Errorf("revision %s", r)
		}
		return nil
	})
	if _, err := b.Modify(ctx, counterKey, inc); err != nil {
		t.Fatal(err)
	}
	proxy.Break() // a's reply is lost with the connection
	proxy.Resume()
	select {
	case err = <-res:
	case <-time.After(faultWait):
		t.Fatal("Modify did not return after its connection broke")
	}
	v, derr := node.Do(ctx, "HGET", "{contextd:"+name+"}:data", counterKey)
	if derr != nil {
		t.Fatal(derr)
	}
	got, _ := v.(string)
	switch {
	case err == nil && got != "3":
		t.Errorf("two acknowledged increments from 1, but the counter is %s: a's commit ran again after its reply was lost", got)
	case err != nil && got != "2" && got != "3":
		t.Errorf("a's Modify failed (%v) and b's succeeded, but the counter went from 1 to %s", err, got)
	default:
		t.Logf("a's Modify returned %v; counter %s", err, got)
	}
}
