package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// aclServer starts a master with a replica (for the WAIT mode) and
// returns the master.
func aclServer(t *testing.T) *redistest.Server {
	t.Helper()
	master := redistest.Start(t, nil)
	replica := redistest.Start(t, &redistest.Options{Args: []string{"--replicaof", "127.0.0.1", fmt.Sprint(master.Port())}})
	eventuallyWithin(t, time.Minute, "the replica is in sync", func() error {
		info, err := replica.Info(context.Background(), "replication")
		if err != nil || info["master_link_status"] != "up" {
			return fmt.Errorf("link %q (%v)", info["master_link_status"], err)
		}
		return nil
	})
	return master
}

// setUser creates (or replaces) an ACL user with rules.
func setUser(t *testing.T, srv *redistest.Server, user string, rules []string) {
	t.Helper()
	args := append([]string{"ACL", "SETUSER", user, "reset", "on", ">pw"}, rules...)
	if _, err := srv.Do(context.Background(), args...); err != nil {
		t.Fatalf("ACL SETUSER %s: %v", user, err)
	}
}

// userInstance opens a Context as an ACL user, on a client of its own in
// the WAIT mode, or returns the error of Initialize.
func userInstance(t *testing.T, srv *redistest.Server, user, name string) (*contextd.Context[int], error) {
	t.Helper()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Username: user, Password: "pw", MaxRetries: -1, ContextTimeoutEnabled: true})
	b := backendOn(t, client, &redis.Options{WaitReplicas: 1, WaitTimeout: 5 * time.Second})
	c, err := contextd.New[int](b, name, &contextd.Options{ResyncInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), faultWait)
	defer cancel()
	if err := c.Initialize(ctx); err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, nil
}

// useEverything runs every kind of operation on context name as user, with
// two instances, and fails the test on any error.
func useEverything(t *testing.T, srv *redistest.Server, user, name string) {
	t.Helper()
	a, err := userInstance(t, srv, user, name)
	if err != nil {
		t.Fatalf("%s: Initialize %q: %v", user, name, err)
	}
	b, err := userInstance(t, srv, user, name)
	if err != nil {
		t.Fatalf("%s: Initialize %q: %v", user, name, err)
	}
	ctx := faultCtx(t)
	changes := b.Watch(ctx)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s on %q: %s: %v", user, name, what, err)
		}
	}
	must("UpdateContext", a.UpdateContext(ctx, "k", 1))
	if ch := <-changes; ch.Key != "k" || ch.Value != 1 {
		t.Fatalf("%s on %q: the other instance watched %+v, want k=1", user, name, ch)
	}
	must("TransactionalUpdate", a.TransactionalUpdate(ctx, map[string]int{"x": 1, "y": 2}))
	_, err = a.Modify(ctx, "k", func(cur int, _ bool) (int, error) { return cur + 1, nil })
	must("Modify", err)
	must("Delete", a.Delete(ctx, "y"))
	_, _, err = b.Get(ctx, "k", contextd.Fresh())
	must("Get with Fresh", err)
	must("Sync", b.Sync(ctx))
	l, err := a.AcquireLock(ctx, contextd.LockOptions{Key: "k", LockTimeout: time.Minute, AutoExtend: true})
	must("AcquireLock", err)
	waiting := make(chan error, 1)
	go func() { waiting <- b.UpdateContext(ctx, "k", 10) }() // waits in the lock queue
	must("UpdateContext WithLock", a.UpdateContext(ctx, "k", 5, contextd.WithLock(l)))
	must("Extend", l.Extend(ctx, time.Minute))
	must("Release", l.Release(ctx))
	must("the write that waited for the lock", <-waiting)
	// Expiry: a write with a TTL (the deadline index), its expiry by an
	// instance (Expire) or the next commit, and a bulk read of entries
	// with deadlines.
	must("UpdateContext WithTTL", a.UpdateContext(ctx, "t", 1, contextd.WithTTL(100*time.Millisecond)))
	eventuallyWithin(t, faultWait, "the key with a TTL expires", func() error {
		if _, ok, err := b.Get(ctx, "t", contextd.Fresh()); ok || err != nil {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	must("UpdateContext WithTTL", a.UpdateContext(ctx, "t", 2, contextd.WithTTL(time.Hour)))
	raw := backendOn(t, goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Username: user, Password: "pw", MaxRetries: -1}), nil)
	if es, err := raw.GetMany(ctx, name, []string{"t", "k"}); err != nil || len(es) != 2 || es[0].Expires.IsZero() {
		t.Fatalf("%s on %q: GetMany = %+v, %v; want t with its deadline, and k", user, name, es, err)
	}
	// A lost subscription: the instance catches up from the change log.
	if _, err := srv.Do(ctx, "CLIENT", "KILL", "USER", user, "SKIPME", "yes"); err != nil {
		t.Fatal(err)
	}
	// The first command after the kill may meet its dead connection;
	// contextd does not retry, and neither does this test more than once.
	if err := a.UpdateContext(ctx, "z", 1); err != nil {
		must("UpdateContext after the connections were killed", a.UpdateContext(ctx, "z", 1))
	}
	want, _, err := a.Get(ctx, "z", contextd.Fresh())
	must("Get with Fresh", err)
	eventuallyWithin(t, faultWait, "the other instance catches up", func() error {
		if v, _, _ := b.Get(ctx, "z"); v != want {
			return fmt.Errorf("z = %d, want %d", v, want)
		}
		return nil
	})
}

// noDenials fails the test if the ACL log shows a refusal for user: a
// refused release notification or log read would not fail an operation,
// only slow it down.
func noDenials(t *testing.T, srv *redistest.Server, user string) {
	t.Helper()
	v, err := srv.Do(context.Background(), "ACL", "LOG")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range v.([]any) {
		// An entry reads [count 1 reason command context lua object zrange username one ...].
		if s := fmt.Sprint(e); strings.Contains(s, "username "+user+" ") {
			t.Errorf("ACL LOG shows a refusal for %s: %v", user, e)
		}
	}
}

// TestLeastPrivilegeACL gives a user exactly redis.ACLRules of one
// context, and another redis.ACLRulesForPrefix of a family: each can do
// everything with its contexts, including the WAIT mode and catching up
// after a lost subscription, without a single refusal in the ACL log; on
// any other context it is refused with a clear error and leaves the
// context's keys as they were.
func TestLeastPrivilegeACL(t *testing.T) {
	t.Parallel()
	srv := aclServer(t)
	setUser(t, srv, "one", redis.ACLRules("svc.a"))
	setUser(t, srv, "family", redis.ACLRulesForPrefix("svc."))
	useEverything(t, srv, "one", "svc.a")
	useEverything(t, srv, "family", "svc.b")
	useEverything(t, srv, "family", "svc.c[1]*") // glob characters in a name
	noDenials(t, srv, "one")
	noDenials(t, srv, "family")

	// Outside their patterns: refused, clearly, and without effect.
	before := dumpKeys(t, srv, backend.HashTag("svc.b"))
	if _, err := userInstance(t, srv, "one", "svc.b"); err == nil || !strings.Contains(err.Error(), "NOPERM") || !strings.Contains(err.Error(), "svc.b") {
		t.Errorf("user one on context svc.b: Initialize = %v; want a NOPERM error naming the context", err)
	}
	if _, err := userInstance(t, srv, "one", "svc.ab"); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("user one on context svc.ab (svc.a is only its prefix): Initialize = %v; want NOPERM", err)
	}
	if _, err := userInstance(t, srv, "family", "other"); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("user family on context other: Initialize = %v; want NOPERM", err)
	}
	b := backendOn(t, goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Username: "one", Password: "pw"}), nil)
	ctx := faultCtx(t)
	for what, err := range map[string]error{
		"Load": func() error { _, err := b.Load(ctx, "svc.b"); return err }(),
		"Get":  func() error { _, err := b.Get(ctx, "svc.b", "k"); return err }(),
		"Commit": func() error {
			_, err := b.Commit(ctx, "svc.b", backend.Batch{Ops: []backend.Op{{Key: "k", Value: []byte("9")}}})
			return err
		}(),
		"TryAcquire": func() error {
			_, err := b.TryAcquire(ctx, "svc.b", "k", time.Minute)
			return err
		}(),
		"Publish":  b.Publish(ctx, backend.DefaultChannel("svc.b"), []byte("x")),
		"Revision": func() error { _, err := b.Revision(ctx, "svc.b"); return err }(),
	} {
		var rerr goredis.Error
		if !errors.As(err, &rerr) || !strings.HasPrefix(rerr.Error(), "NOPERM") {
			t.Errorf("user one: %s on svc.b = %v; want a NOPERM error", what, err)
		}
	}
	if after := dumpKeys(t, srv, backend.HashTag("svc.b")); len(after) != len(before) {
		t.Errorf("refused operations changed svc.b's keys: %d keys, were %d", len(after), len(before))
	}
}
