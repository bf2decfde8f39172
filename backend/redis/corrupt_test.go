package redis_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// corruption is damage done to one context's Redis keys by another
// program: the command that does it, with {tag} standing for the
// context's hash tag.
type corruption struct {
	name string
	cmd  []string
	// mustFail lists the operations that must fail with ErrCorrupt; the
	// others may succeed (a plain write repairs a damaged key) or fail
	// with ErrCorrupt too.
	mustFail []string
}

var corruptions = []corruption{
	{"revision garbage", []string{"HSET", "{tag}:revs", "k", "garbage"}, []string{"fresh get", "modify", "cached get"}},
	{"value without revision", []string{"HDEL", "{tag}:revs", "k"}, []string{"fresh get", "modify", "cached get"}},
	{"revision without value", []string{"HDEL", "{tag}:data", "k"}, []string{"fresh get", "modify"}},
	{"meta rev garbage", []string{"HSET", "{tag}:meta", "rev", "garbage"}, []string{"initialize", "update", "update other", "modify", "delete", "sync"}},
	{"meta epoch too long", []string{"HSET", "{tag}:meta", "epoch", strings.Repeat("e", 300)}, []string{"update", "modify", "delete"}},
	{"meta commit with a space", []string{"HSET", "{tag}:meta", "commit", "a b"}, []string{"initialize", "update", "modify", "sync"}},
	{"meta fence garbage", []string{"HSET", "{tag}:meta", "fence", "x"}, []string{"acquire"}},
	{"meta not a hash", []string{"EVAL", "redis.call('DEL', KEYS[1]); return redis.call('SET', KEYS[1], 'x')", "1", "{tag}:meta"}, []string{"initialize", "update", "modify", "acquire", "sync"}},
	{"data not a hash", []string{"EVAL", "redis.call('DEL', KEYS[1]); return redis.call('SET', KEYS[1], 'x')", "1", "{tag}:data"}, []string{"initialize", "update", "fresh get", "modify", "sync"}},
	{"revs not a hash", []string{"EVAL", "redis.call('DEL', KEYS[1]); return redis.call('SET', KEYS[1], 'x')", "1", "{tag}:revs"}, []string{"initialize", "update", "fresh get", "modify", "sync"}},
	{"log not a hash", []string{"EVAL", "redis.call('DEL', KEYS[1]); return redis.call('SET', KEYS[1], 'x')", "1", "{tag}:ring"}, []string{"update", "modify"}},
	{"expiry index not a sorted set", []string{"EVAL", "redis.call('DEL', KEYS[1]); return redis.call('SET', KEYS[1], 'x')", "1", "{tag}:expiry"}, []string{"initialize", "fresh get", "sync"}},
	{"lock garbage", []string{"SET", "{tag}:lock:k", "garbage"}, []string{"update", "modify", "acquire"}},
	{"lock not a string", []string{"HSET", "{tag}:lock:k", "a", "b"}, []string{"update", "modify", "acquire"}},
}

// corruptOps are the operations tried on each damaged context; each gets
// a context of its own, damaged afresh.
var corruptOps = map[string]func(ctx context.Context, c *contextd.Context[int], fresh func() error) error{
	"initialize": func(ctx context.Context, _ *contextd.Context[int], fresh func() error) error { return fresh() },
	"update": func(ctx context.Context, c *contextd.Context[int], _ func() error) error {
		return c.UpdateContext(ctx, "k", 5)
	},
	"update other": func(ctx context.Context, c *contextd.Context[int], _ func() error) error {
		return c.UpdateContext(ctx, "z", 5)
	},
	"modify": func(ctx context.Context, c *contextd.Context[int], _ func() error) error {
		calls := 0
		_, err := c.Modify(ctx, "k", func(cur int, _ bool) (int, error) { calls++; return cur + 1, nil })
		if calls > 2 {
			return fmt.Errorf("Modify called its function %d times on a damaged key: %w", calls, err)
		}
		return err
	},
	"delete": func(ctx context.Context, c *contextd.Context[int], _ func() error) error { return c.Delete(ctx, "k") },
	"fresh get": func(ctx context.Context, c *contextd.Context[int], _ func() error) error {
		_, _, err := c.Get(ctx, "k", contextd.Fresh())
		return err
	},
	"cached get": func(ctx context.Context, c *contextd.Context[int], _ func() error) error {
		_ = c.Sync(ctx)
		_, _, err := c.Get(ctx, "k")
		return err
	},
	"acquire": func(ctx context.Context, c *contextd.Context[int], _ func() error) error {
		l, err := c.AcquireLock(ctx, contextd.LockOptions{Key: "k", MaxRetries: -1})
		if err == nil {
			err = l.Release(ctx)
		}
		return err
	},
	"sync": func(ctx context.Context, c *contextd.Context[int], _ func() error) error { return c.Sync(ctx) },
}

// TestCorruptionGivesTypedErrors damages each of contextd's own keys in
// turn and runs every operation on the damaged context: each succeeds or
// fails at once with an error matching ErrCorrupt that names the damaged
// Redis key or context key; none panics or spins; a refused operation
// changes nothing; and another context on the same server is untouched.
func TestCorruptionGivesTypedErrors(t *testing.T) {
	srv := redistest.Start(t, nil)
	b := newBackend(t, srv, nil)
	bystander := openInstance[int](t, b, "bystander", nil)
	if err := bystander.UpdateContext(t.Context(), "k", 42); err != nil {
		t.Fatal(err)
	}
	before := dumpKeys(t, srv, backend.HashTag("bystander"))
	n := 0
	for _, cr := range corruptions {
		for opName, op := range corruptOps {
			n++
			name := fmt.Sprintf("corrupt-%d", n)
			tag := backend.HashTag(name)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c := openInstance[int](t, b, name, &contextd.Options{MaxRetries: -1, ResyncInterval: -1})
			if err := c.TransactionalUpdate(ctx, map[string]int{"k": 1, "other": 2}); err != nil {
				t.Fatal(err)
			}
			args := make([]string, len(cr.cmd))
			for i, a := range cr.cmd {
				args[i] = strings.ReplaceAll(a, "{tag}", tag)
			}
			if _, err := srv.Do(ctx, args...); err != nil {
				t.Fatalf("%s: %v", cr.name, err)
			}
			damaged := dumpKeys(t, srv, tag)
			fresh := func() error {
				f, err := contextd.New[int](b, name, nil)
				if err != nil {
					return err
				}
				defer f.Close()
				return f.Initialize(ctx)
			}
			err := op(ctx, c, fresh)
			cancel()
			switch {
			case err == nil && mustFail(cr, opName):
				t.Errorf("%s, %s: succeeded; want an error matching ErrCorrupt", cr.name, opName)
			case err != nil && !errors.Is(err, contextd.ErrCorrupt):
				t.Errorf("%s, %s: %v; want nil or an error matching ErrCorrupt", cr.name, opName, err)
			case err != nil && !namesDamage(err.Error(), tag):
				t.Errorf("%s, %s: %q names neither the damaged Redis key nor the context key", cr.name, opName, err)
			}
			if err != nil && !maps.Equal(damaged, dumpKeys(t, srv, tag)) {
				t.Errorf("%s, %s: refused with %v, yet it changed the context's keys", cr.name, opName, err)
			}
		}
	}
	if after := dumpKeys(t, srv, backend.HashTag("bystander")); !maps.Equal(before, after) {
		t.Errorf("another context's keys changed: %v, was %v", after, before)
	}
	if v, _, err := bystander.Get(t.Context(), "k", contextd.Fresh()); v != 42 || err != nil {
		t.Errorf("bystander k = %d, %v; want 42", v, err)
	}
}

func mustFail(cr corruption, op string) bool {
	for _, o := range cr.mustFail {
		if o == op {
			return true
		}
	}
	return false
}

// namesDamage reports whether an error message names a Redis key of the
// context (its tag) or the context key "k".
func namesDamage(msg, tag string) bool {
	return strings.Contains(msg, tag) || strings.Contains(msg, `"k"`)
}

// dumpKeys returns every Redis key starting with prefix and its DUMP
// (without the TTL), so tests can tell whether anything was written.
func dumpKeys(t *testing.T, srv *redistest.Server, prefix string) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := srv.Do(ctx, "KEYS", "*")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys.([]any) {
		key := k.(string)
		if !strings.HasPrefix(key, prefix) || strings.Contains(key, ":commit:") {
			continue
		}
		d, err := srv.Do(ctx, "DUMP", key)
		if err != nil {
			t.Fatal(err)
		}
		out[key], _ = d.(string)
	}
	return out
}

// TestGetManyReportsDamage checks that a bulk read reports a damaged entry
// as backend.Entry with revision 0 (as the MultiGetter contract says)
// without failing the other keys, and a damaged hash as ErrCorrupt.
func TestGetManyReportsDamage(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := context.Background()
	b := newBackend(t, srv, nil)
	const name = "getmany-damage"
	tag := backend.HashTag(name)
	if _, err := b.Commit(ctx, name, backend.Batch{Ops: []backend.Op{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}, {Key: "c", Value: []byte("3")}}}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"HSET", tag + ":revs", "a", "garbage"}, {"HDEL", tag + ":data", "b"}} {
		if _, err := srv.Do(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	es, err := b.GetMany(ctx, name, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[0].Revision != 0 || es[1].Revision != 0 || es[2].Revision != 1 || string(es[2].Value) != "3" {
		t.Fatalf("GetMany = %+v; want a and b damaged (revision 0), c \"3\"@1", es)
	}
	if _, err := srv.Do(ctx, "EVAL", "redis.call('DEL', KEYS[1]); return redis.call('SET', KEYS[1], 'x')", "1", tag+":data"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetMany(ctx, name, []string{"c"}); !errors.Is(err, backend.ErrCorrupt) || !strings.Contains(err.Error(), tag) {
		t.Fatalf("GetMany with data not a hash = %v; want ErrCorrupt naming the key", err)
	}
}
