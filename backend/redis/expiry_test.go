package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/contextd"
	"github.com/contextd-go/contextd/internal/redistest"
)

// put and putTTL are the ops of the expiry tests.
func put(key, value string) backend.Op { return backend.Op{Key: key, Value: []byte(value)} }

func putTTL(key, value string, ttl time.Duration) backend.Op {
	return backend.Op{Key: key, Value: []byte(value), TTL: ttl}
}

// serverNow reads the redis-server's clock, the clock of the deadlines.
func serverNow(t *testing.T, srv *redistest.Server) time.Time {
	t.Helper()
	v, err := srv.Do(context.Background(), "TIME")
	if err != nil {
		t.Fatal(err)
	}
	parts := v.([]any)
	sec, _ := strconv.ParseInt(parts[0].(string), 10, 64)
	usec, _ := strconv.ParseInt(parts[1].(string), 10, 64)
	return time.Unix(sec, usec*1000)
}

// waitServerPast waits until the server's clock has passed deadline: time
// must pass, there is no event to wait for.
func waitServerPast(t *testing.T, srv *redistest.Server, deadline time.Time) {
	t.Helper()
	eventually(t, fmt.Sprintf("the server's clock passes %v", deadline), func() error {
		if now := serverNow(t, srv); !now.After(deadline) {
			time.Sleep(deadline.Sub(now) + time.Millisecond)
			return fmt.Errorf("server clock at %v", now)
		}
		return nil
	})
}

// mustCommitTo commits ops to context name.
func mustCommitTo(t *testing.T, b *redis.Backend, name string, ops ...backend.Op) backend.Head {
	t.Helper()
	h, err := b.Commit(context.Background(), name, backend.Batch{Ops: ops, Codec: "json"})
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return h
}

// TestExpiryWithNoInstanceRunning: a key whose deadline passed while no
// Context of its context ran is deleted by the next commit (a revision of
// its own, published and logged before the batch's), or by Expire; both
// publish exactly the bytes backend.EncodeEvent makes of the event.
func TestExpiryWithNoInstanceRunning(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	for _, by := range []string{"commit", "Expire"} {
		t.Run(by, func(t *testing.T) {
			b := newBackend(t, srv, nil)
			name := "expire-offline-" + by
			channel := backend.DefaultChannel(name)
			h1 := mustCommitTo(t, b, name, putTTL("k", "v", 200*time.Millisecond), put("j", "v"), putTTL("late", "v", time.Hour))
			e, err := b.Get(ctx, name, "k")
			if err != nil || e.Expires.IsZero() {
				t.Fatalf("Get k = %+v, %v; want a deadline", e, err)
			}
			waitServerPast(t, srv, e.Expires)
			sub, err := b.Subscribe(ctx, channel)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()

			var reaped backend.Event
			if by == "commit" {
				h, err := b.CommitAndPublish(ctx, name, backend.Batch{Ops: []backend.Op{put("x", "1")}, Codec: "json", EventValueLimit: 100}, channel)
				if err != nil {
					t.Fatal(err)
				}
				if h.Revision != h1.Revision+2 {
					t.Fatalf("the commit after k's deadline made revision %d; want %d (the expiry's, then its own)", h.Revision, h1.Revision+2)
				}
				evs, err := b.ChangesSince(ctx, name, h1.Epoch, h1.Revision)
				if err != nil || len(evs) != 2 {
					t.Fatalf("ChangesSince = %d events, %v; want the expiry and the commit", len(evs), err)
				}
				reaped = evs[0]
				if evs[1].Parent != reaped.Commit || evs[1].Commit != h.Commit {
					t.Errorf("the commit's event %+v does not follow the expiry's %+v", evs[1].Head, reaped.Head)
				}
				if reaped.Parent != h1.Commit || h.Parent != reaped.Commit {
					t.Errorf("history: %q <- expiry %q <- commit %q (parent %q); want an unbroken chain", h1.Commit, reaped.Commit+"/"+reaped.Parent, h.Commit, h.Parent)
				}
			} else {
				ev, next, now, err := b.Expire(ctx, name, channel)
				if err != nil {
					t.Fatal(err)
				}
				if next.Before(now.Add(30*time.Minute)) || now.Before(e.Expires) {
					t.Errorf("Expire: next %v, now %v; want late's deadline an hour ahead, now past k's %v", next, now, e.Expires)
				}
				if ev.Time != now {
					t.Errorf("Expire: event time %v, server clock %v", ev.Time, now)
				}
				reaped = ev
				if again, _, _, err := b.Expire(ctx, name, channel); err != nil || again.Revision != 0 {
					t.Errorf("a second Expire = %+v, %v; want nothing", again.Head, err)
				}
			}
			if reaped.Revision != h1.Revision+1 || reaped.Origin != "" || len(reaped.Changes) != 1 || reaped.Changes[0].Key != "k" || !reaped.Changes[0].Deleted {
				t.Fatalf("the expiry = %+v; want a delete of k at revision %d, no origin", reaped, h1.Revision+1)
			}
			msg, err := sub.Next(ctx)
			if err != nil || msg.Loss {
				t.Fatalf("Next = %+v, %v", msg, err)
			}
			reaped.Time = time.Time{} // not on the wire
			want, err := backend.EncodeEvent(reaped)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(msg.Payload, want) {
				t.Fatalf("published expiry\n%x\nwant (backend.EncodeEvent)\n%x", msg.Payload, want)
			}
			snap, err := b.Load(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, e := range snap.Entries {
				got[e.Key] = true
			}
			if got["k"] || !got["j"] || !got["late"] {
				t.Errorf("Load after the expiry: keys %v; want j and late, not k", got)
			}
		})
	}
}

// TestExpiryConditionSeesDueKeyGone: a conditional write meets a key whose
// deadline has passed as absent, and is refused with nothing of it written
// but the key's reap (the refusal saw the key gone: so must every later
// read); a create of the key then succeeds.
func TestExpiryConditionSeesDueKeyGone(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	b := newBackend(t, srv, nil)
	const name = "expire-condition"
	h1 := mustCommitTo(t, b, name, putTTL("k", "v", 100*time.Millisecond))
	e, err := b.Get(ctx, name, "k")
	if err != nil {
		t.Fatal(err)
	}
	waitServerPast(t, srv, e.Expires)
	_, err = b.Commit(ctx, name, backend.Batch{Ops: []backend.Op{put("k", "w")}, Conditions: []backend.Condition{{Key: "k", Revision: h1.Revision, Commit: h1.Commit}}})
	var ce *backend.ConflictError
	if !errors.As(err, &ce) || ce.Exists {
		t.Fatalf("a write conditional on the expired key's revision = %v; want a conflict saying it does not exist", err)
	}
	if got, err := b.Get(ctx, name, "k"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Get(k) after the refusal = %+v, %v; want ErrNotFound (reaped with the refusal)", got, err)
	}
	if head, err := b.Revision(ctx, name); err != nil || head.Revision != h1.Revision+1 {
		t.Errorf("head after the refusal = %+v, %v; want revision %d, the reap alone", head, err, h1.Revision+1)
	}
	h, err := b.Commit(ctx, name, backend.Batch{Ops: []backend.Op{put("k", "w")}, Conditions: []backend.Condition{{Key: "k", Revision: 0}}})
	if err != nil || h.Revision != h1.Revision+2 {
		t.Fatalf("a create of the expired key = %+v, %v; want revision %d (the expiry's first)", h, err, h1.Revision+2)
	}
	if got, err := b.Get(ctx, name, "k"); err != nil || string(got.Value) != "w" || !got.Expires.IsZero() {
		t.Errorf("k after the create = %+v, %v; want w, without deadline", got, err)
	}
}

// TestExpiryDeadlinesLiveInRedis: deadlines are kept by Redis, not by the
// process that wrote them: with the writer gone and the redis-server
// restarted (append-only file), a new instance reads the same deadline and
// expires the key by a revisioned delete, which its watcher sees.
func TestExpiryDeadlinesLiveInRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, &redistest.Options{AppendOnly: true})
	ctx := faultCtx(t)
	const name = "expire-restart"
	writer := newBackend(t, srv, nil)
	w, err := contextd.New[string](writer, name, noResync)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.UpdateContext(ctx, "session", "alice", contextd.WithTTL(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	written, err := writer.Get(ctx, name, "session")
	if err != nil || written.Expires.IsZero() {
		t.Fatalf("Get = %+v, %v; want a deadline", written, err)
	}
	rev := w.Revision()
	_ = w.Close()
	_ = writer.Close()

	srv.Restart(t)

	r := openInstance[string](t, newBackend(t, srv, nil), name, noResync)
	e, ok, err := r.GetEntry(ctx, "session")
	if err != nil || !ok || !e.Expires.Equal(written.Expires) {
		t.Fatalf("after the restart, session = %+v, %v, %v; want the deadline %v", e, ok, err, written.Expires)
	}
	watch := r.Watch(ctx)
	for {
		select {
		case ch := <-watch:
			if ch.Reset || ch.Initial || ch.UpToDate {
				continue
			}
			if ch.Key != "session" || !ch.Deleted || ch.Revision != rev+1 || ch.Origin != "" {
				t.Fatalf("watched %+v; want the expiry of session at revision %d", ch, rev+1)
			}
			if now := serverNow(t, srv); now.Before(written.Expires) {
				t.Fatalf("session expired at %v by the server's clock, before its deadline %v", now, written.Expires)
			}
			return
		case <-ctx.Done():
			t.Fatal("the new instance never expired session")
		}
	}
}

// TestExpiryReplicated: in the WAIT mode a deadline and an expiry reach
// the replica before the call returns, with the same deadline (by the
// master's clock at the commit, not the replica's), so after a failover
// the new master expires the key when the old one would have.
func TestExpiryReplicated(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t, nil)
	replica := redistest.Start(t, &redistest.Options{Args: []string{"--replicaof", "127.0.0.1", fmt.Sprint(master.Port())}})
	eventuallyWithin(t, time.Minute, "the replica is in sync", func() error {
		info, err := replica.Info(context.Background(), "replication")
		if err != nil || info["master_link_status"] != "up" {
			return fmt.Errorf("link %q (%v)", info["master_link_status"], err)
		}
		return nil
	})
	ctx := faultCtx(t)
	const name = "expire-replicated"
	tag := backend.HashTag(name)
	b := newBackend(t, master, &redis.Options{WaitReplicas: 1, WaitTimeout: 10 * time.Second})
	mustCommitTo(t, b, name, putTTL("short", "v", 300*time.Millisecond), putTTL("long", "v", time.Hour))
	want := map[string]time.Time{}
	for _, key := range []string{"short", "long"} {
		e, err := b.Get(ctx, name, key)
		if err != nil {
			t.Fatal(err)
		}
		want[key] = e.Expires
		score, err := replica.Do(ctx, "ZSCORE", tag+":expiry", key)
		if err != nil || score == nil {
			t.Fatalf("the replica's deadline of %s: %v, %v; want it there when the commit returned", key, score, err)
		}
		if ms, _ := strconv.ParseFloat(score.(string), 64); int64(ms) != e.Expires.UnixMilli() {
			t.Errorf("the replica's deadline of %s is %v ms, the master's %v", key, score, e.Expires.UnixMilli())
		}
	}
	waitServerPast(t, master, want["short"])
	ev, _, _, err := b.Expire(ctx, name, "")
	if err != nil || len(ev.Changes) != 1 || ev.Changes[0].Key != "short" {
		t.Fatalf("Expire = %+v, %v; want short deleted", ev, err)
	}
	if n, err := replica.Do(ctx, "HEXISTS", tag+":data", "short"); err != nil || n != int64(0) {
		t.Errorf("the replica still has short after the expiry returned (%v, %v)", n, err)
	}
	// Failover: the replica becomes the master.
	if _, err := replica.Do(ctx, "REPLICAOF", "NO", "ONE"); err != nil {
		t.Fatal(err)
	}
	promoted := newBackend(t, replica, nil)
	e, err := promoted.Get(ctx, name, "long")
	if err != nil || !e.Expires.Equal(want["long"]) {
		t.Fatalf("long on the promoted replica = %+v, %v; want the deadline %v", e, err, want["long"])
	}
	if _, err := promoted.Commit(ctx, name, backend.Batch{Ops: []backend.Op{putTTL("again", "v", 100*time.Millisecond)}}); err != nil {
		t.Fatal(err)
	}
	again, err := promoted.Get(ctx, name, "again")
	if err != nil {
		t.Fatal(err)
	}
	waitServerPast(t, replica, again.Expires)
	if ev, _, _, err := promoted.Expire(ctx, name, ""); err != nil || len(ev.Changes) != 1 || ev.Changes[0].Key != "again" {
		t.Fatalf("Expire on the promoted replica = %+v, %v; want again deleted", ev, err)
	}
}

// TestExpiryIndexDamaged: a deadline index of the wrong type is damage
// like any other: every operation that reads it fails with an error
// matching ErrCorrupt that names the key, and a refused write or expiry
// writes nothing.
func TestExpiryIndexDamaged(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	b := newBackend(t, srv, nil)
	const name = "expire-damaged"
	tag := backend.HashTag(name)
	mustCommitTo(t, b, name, putTTL("k", "v", time.Hour), put("j", "v"))
	if _, err := srv.Do(ctx, "EVAL", "redis.call('DEL', KEYS[1]); return redis.call('SET', KEYS[1], 'x')", "1", tag+":expiry"); err != nil {
		t.Fatal(err)
	}
	before := dumpKeys(t, srv, tag)
	for what, err := range map[string]error{
		"Commit": func() error {
			_, err := b.Commit(ctx, name, backend.Batch{Ops: []backend.Op{put("j", "w")}})
			return err
		}(),
		"Commit with a TTL": func() error {
			_, err := b.Commit(ctx, name, backend.Batch{Ops: []backend.Op{putTTL("new", "w", time.Hour)}})
			return err
		}(),
		"Expire": func() error { _, _, _, err := b.Expire(ctx, name, ""); return err }(),
		"Load":   func() error { _, err := b.Load(ctx, name); return err }(),
		"Get":    func() error { _, err := b.Get(ctx, name, "j"); return err }(),
		"GetMany": func() error {
			_, err := b.GetMany(ctx, name, []string{"j", "k"})
			return err
		}(),
	} {
		if !errors.Is(err, backend.ErrCorrupt) || !strings.Contains(err.Error(), tag+":expiry") {
			t.Errorf("%s with the index not a sorted set = %v; want ErrCorrupt naming %s:expiry", what, err, tag)
		}
	}
	if after := dumpKeys(t, srv, tag); !maps.Equal(before, after) {
		t.Errorf("refused operations changed the context's keys")
	}
}

// TestExpireManyKeys expires more keys than one command of the scripts
// takes (they go in chunks of a thousand), in one commit.
func TestExpireManyKeys(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	b := newBackend(t, srv, nil)
	const name, n = "expire-many", 2500
	ops := make([]backend.Op, n)
	for i := range ops {
		ops[i] = putTTL(fmt.Sprintf("k%04d", i), "v", 100*time.Millisecond)
	}
	h := mustCommitTo(t, b, name, append(ops, put("stays", "v"))...)
	e, err := b.Get(ctx, name, "k0000")
	if err != nil {
		t.Fatal(err)
	}
	waitServerPast(t, srv, e.Expires)
	ev, next, _, err := b.Expire(ctx, name, "")
	if err != nil || ev.Revision != h.Revision+1 || len(ev.Changes) != n || !next.IsZero() {
		t.Fatalf("Expire = revision %d, %d changes, next %v, %v; want %d deletes at revision %d, no next deadline", ev.Revision, len(ev.Changes), next, err, n, h.Revision+1)
	}
	snap, err := b.Load(ctx, name)
	if err != nil || len(snap.Entries) != 1 || snap.Entries[0].Key != "stays" {
		t.Fatalf("Load after the expiry = %d entries, %v; want only stays", len(snap.Entries), err)
	}
	if n, err := srv.Do(ctx, "EXISTS", backend.HashTag(name)+":expiry"); err != nil || n != int64(0) {
		t.Errorf("the emptied index still exists (%v, %v)", n, err)
	}
}

// TestExpiryWritesOneRoundTrip: writes with a TTL, and writes without one
// to a context with expiring keys, still send one command each.
func TestExpiryWritesOneRoundTrip(t *testing.T) {
	srv := redistest.Start(t, nil)
	ctx := faultCtx(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer client.Close()
	hook := &countingHook{}
	client.AddHook(hook)
	b, err := redis.New(client, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cx := openInstance[int](t, b, "expire-roundtrips", noResync)
	if err := cx.UpdateContext(ctx, "warm", 0, contextd.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	hook.take()
	const writes = 100
	for i := range writes {
		var err error
		if i%2 == 0 {
			err = cx.UpdateContext(ctx, "k", i, contextd.WithTTL(time.Hour))
		} else {
			err = cx.UpdateContext(ctx, "j", i)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if sent := hook.take(); len(sent) != writes || strings.Join(sent, ",") != strings.TrimSuffix(strings.Repeat("evalsha,", writes), ",") {
		t.Fatalf("%d writes sent %v; want one evalsha each", writes, sent)
	}
}
